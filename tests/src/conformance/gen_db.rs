//! Generated SQL (`Db` port) cases: a seeded sequence of reads (get, get_many, scans and
//! exports with paging, index lookups) and transactions mixing `Put` (every `Expect` kind,
//! index updates), `Delete`, `RaiseFence`, `Guard` and `Restore` with fences, over a small key
//! space so that operations collide, refusals (fenced, version, not found, unique) are common
//! and placeholders appear. Keys include byte-order traps (upper case, a trailing space,
//! non-ASCII) and fences include values at and above 2^63.
//!
//! The same steps make a SQLite case and a MariaDB case (`Service::Sqlite` / `Mariadb`); the
//! name says which.

use std::collections::BTreeMap;

use bytes::Bytes;
use engine::env::{Expect, TableName, WriteOp};

use super::gen::Rng;
use super::ops::{AnyOp, Case, DbOp, Service, Step};

/// Relative table names (the run prefixes them).
pub const DB_TABLES: &[&str] = &["a", "b", "s"];
/// Index names and keys the generated `Put`s use.
pub const DB_INDEXES: &[&str] = &["by_name", "by_tag"];
pub const DB_INDEX_KEYS: &[&str] = &["n1", "n2", "n3"];

const KEYS: &[&str] =
    &["k1", "k1", "k2", "k2", "k3", "u", "u/1", "u/1", "u/2", "u/10", "u/a", "u/a ", "U/1", "u/é", "shard/7"];
const PREFIXES: &[&str] = &["", "", "u", "u/", "u/", "k", "U", "u/a", "z"];
const AFTERS: &[&str] = &["k1", "u/1", "u/10", "u/a", "a", "u/1 ", "zz"];
const VALUES: &[&str] = &["", "v", "w", "xyz", "é"];
const FENCES: &[u64] = &[0, 0, 1, 1, 2, 3, 3, 5, 8, 1 << 63, u64::MAX];
const VERSIONS: &[u64] = &[0, 1, 1, 2, 2, 3, 4, 6];

fn table(r: &mut Rng) -> String {
    match r.below(100) {
        0..=59 => "a",
        60..=84 => "b",
        _ => "s",
    }
    .to_string()
}

fn rel(name: &str) -> TableName {
    TableName::new(name).expect("generated table names are valid")
}

fn key(r: &mut Rng) -> String {
    if r.chance(2) {
        // Invalid: refused before sending on every backend.
        return String::new();
    }
    r.pick(KEYS).to_string()
}

fn value(r: &mut Rng) -> Bytes {
    Bytes::copy_from_slice(r.pick(VALUES).as_bytes())
}

fn expect(r: &mut Rng) -> Expect {
    match r.below(100) {
        0..=34 => Expect::Any,
        35..=54 => Expect::Absent,
        55..=69 => Expect::Present,
        _ => Expect::Version(r.pick(VERSIONS)),
    }
}

fn write_op(r: &mut Rng) -> WriteOp {
    let t = rel(&table(r));
    let k = key(r);
    let fence = r.pick(FENCES);
    match r.below(100) {
        0..=39 => {
            let mut index = BTreeMap::new();
            if r.chance(50) {
                for _ in 0..1 + r.below(2) {
                    // n1 most often, so that claims collide.
                    let ikey = (!r.chance(25)).then(|| r.pick(&["n1", "n1", "n2", "n3"]).to_string());
                    index.insert(r.pick(DB_INDEXES).to_string(), ikey);
                }
            }
            WriteOp::Put { table: t, key: k, value: value(r), expect: expect(r), fence, index }
        }
        40..=54 => WriteOp::delete(&t, k, expect(r), fence),
        55..=69 => WriteOp::raise_fence(&t, k, fence),
        // Half the guards on the shard guard row the prefill often creates.
        70..=84 if r.chance(50) => WriteOp::guard(&rel("s"), "shard/7", fence),
        70..=84 => WriteOp::guard(&t, k, fence),
        _ => {
            let value = (!r.chance(30)).then(|| value(r));
            WriteOp::Restore { table: t, key: k, value, version: r.pick(VERSIONS), fence }
        }
    }
}

fn scan_args(r: &mut Rng) -> (String, Option<String>, usize) {
    let prefix = r.pick(PREFIXES).to_string();
    let after = match r.below(100) {
        0..=49 => None,
        50..=97 => Some(r.pick(AFTERS).to_string()),
        // Invalid (an empty key): refused before sending.
        _ => Some(String::new()),
    };
    // 0 is invalid; 1..4 pages through the few keys.
    let limit = if r.chance(2) { 0 } else { 1 + r.below(4) };
    (prefix, after, limit)
}

fn db_op(r: &mut Rng) -> DbOp {
    match r.below(100) {
        0..=9 => DbOp::Get { table: table(r), key: key(r) },
        10..=16 => DbOp::GetMany { table: table(r), keys: (0..r.below(5)).map(|_| key(r)).collect() },
        17..=26 => {
            let (prefix, start_after, limit) = scan_args(r);
            DbOp::Scan { table: table(r), prefix, start_after, limit }
        }
        27..=33 => {
            let (prefix, start_after, limit) = scan_args(r);
            DbOp::Export { table: table(r), prefix, start_after, limit }
        }
        34..=40 => DbOp::GetByIndex {
            table: table(r),
            index: r.pick(DB_INDEXES).to_string(),
            index_key: r.pick(DB_INDEX_KEYS).to_string(),
        },
        _ => DbOp::Transact((0..1 + r.below(4)).map(|_| write_op(r)).collect()),
    }
}

/// Draws the SQL case of `seed` for `service` (`Sqlite` or `Mariadb`: the same steps).
pub fn generate_db(service: Service, seed: u64) -> Case {
    let mut r = Rng::new(seed);
    let mut steps = Vec::new();
    if r.chance(60) {
        // Start with some rows in place, so reads and conditions have something to see.
        let ops = (0..1 + r.below(5))
            .map(|_| {
                let k = r.pick(KEYS);
                let t = rel(&table(&mut r));
                WriteOp::put(&t, k, value(&mut r), Expect::Any, r.pick(&[0u64, 1, 2]))
            })
            .collect();
        steps.push(Step { client: 0, op: AnyOp::Db(DbOp::Transact(ops)) });
    }
    if r.chance(50) {
        let guard_row = WriteOp::put(&rel("s"), "shard/7", value(&mut r), Expect::Any, r.pick(&[0u64, 2, 5]));
        steps.push(Step { client: 0, op: AnyOp::Db(DbOp::Transact(vec![guard_row])) });
    }
    let n_steps = 1 + r.below(30);
    steps.extend((0..n_steps).map(|_| Step { client: 0, op: AnyOp::Db(db_op(&mut r)) }));
    Case { name: format!("gen-{seed:#018x}"), service, clients: vec![0], steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_engines_get_the_same_steps_and_every_op_kind_comes_up() {
        let a = generate_db(Service::Sqlite, 11);
        let b = generate_db(Service::Mariadb, 11);
        assert_eq!(a.steps, b.steps);
        let mut kinds = std::collections::HashSet::new();
        for seed in 0..200 {
            for s in generate_db(Service::Sqlite, seed).steps {
                if let AnyOp::Db(DbOp::Transact(ops)) = s.op {
                    for op in ops {
                        kinds.insert(std::mem::discriminant(&op));
                    }
                }
            }
        }
        assert_eq!(kinds.len(), 5);
    }
}
