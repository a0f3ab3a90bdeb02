//! Runs a SQL case through the `Db` port, whatever instance is behind it, and writes its
//! transcript: each step with its answer (`Debug` of the result: every field compared, error
//! texts included — both sides validate with the port's own functions), then the final state
//! of every table the case can touch: every stored key with its value, version and fence
//! (placeholders included, through `export_prefix`) and every index key's holder.
//!
//! Nothing needs normalising: versions and fences are the port's own numbers, keys are
//! relative (only table names carry the run's prefix, and answers never name tables).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use engine::env::{Db, DbError, TableName, WriteOp, DB_SCAN_LIMIT_MAX};

use super::gen_db::{DB_INDEXES, DB_INDEX_KEYS, DB_TABLES};
use super::ops::{AnyOp, Case, DbOp, Step};
use super::transcript::Transcript;

/// How long one call may take before the run records it as hung.
const OP_LIMIT: Duration = Duration::from_secs(20);

/// A SQL backend, as the executor needs it.
#[async_trait]
pub trait DbWorld: Send + Sync {
    fn db(&self) -> Arc<dyn Db>;
    async fn sleep(&self, d: Duration);
}

async fn limited<T>(world: &dyn DbWorld, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let fut = std::pin::pin!(fut);
    let sleep = std::pin::pin!(world.sleep(OP_LIMIT));
    match futures::future::select(fut, sleep).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

/// `name` under the run's prefix (`c17_` + `a`).
fn table(prefix: &str, name: &str) -> TableName {
    TableName::new(format!("{prefix}{name}")).expect("prefix and relative names are valid")
}

/// `op` with its table under the run's prefix.
pub fn prefixed(op: &WriteOp, prefix: &str) -> WriteOp {
    let p = |t: &TableName| table(prefix, t.as_str());
    match op.clone() {
        WriteOp::Put { table, key, value, expect, fence, index } => {
            WriteOp::Put { table: p(&table), key, value, expect, fence, index }
        }
        WriteOp::Delete { table, key, expect, fence } => {
            WriteOp::Delete { table: p(&table), key, expect, fence }
        }
        WriteOp::RaiseFence { table, key, fence } => WriteOp::RaiseFence { table: p(&table), key, fence },
        WriteOp::Guard { table, key, fence } => WriteOp::Guard { table: p(&table), key, fence },
        WriteOp::Restore { table, key, value, version, fence } => {
            WriteOp::Restore { table: p(&table), key, value, version, fence }
        }
    }
}

fn show<T: std::fmt::Debug>(r: Option<Result<T, DbError>>) -> String {
    match r {
        None => "HUNG".to_string(),
        Some(Ok(v)) => format!("ok {v:?}"),
        Some(Err(e)) => format!("err {e:?}"),
    }
}

async fn step(world: &dyn DbWorld, db: &dyn Db, op: &DbOp, prefix: &str) -> String {
    let t = |name: &str| table(prefix, name);
    match op {
        DbOp::Get { table, key } => show(limited(world, db.get(&t(table), key)).await),
        DbOp::GetMany { table, keys } => show(limited(world, db.get_many(&t(table), keys)).await),
        DbOp::Scan { table, prefix: p, start_after, limit } => {
            show(limited(world, db.scan_prefix(&t(table), p, start_after.as_deref(), *limit)).await)
        }
        DbOp::Export { table, prefix: p, start_after, limit } => {
            show(limited(world, db.export_prefix(&t(table), p, start_after.as_deref(), *limit)).await)
        }
        DbOp::GetByIndex { table, index, index_key } => {
            show(limited(world, db.get_by_index(&t(table), index, index_key)).await)
        }
        DbOp::Transact(ops) => {
            let ops = ops.iter().map(|op| prefixed(op, prefix)).collect();
            show(limited(world, db.transact(ops)).await)
        }
    }
}

/// Runs a SQL case with its tables under `prefix` (`cN_`; no table of it exists yet).
pub async fn run_db(world: &dyn DbWorld, case: &Case, prefix: &str) -> Transcript {
    let mut t = Transcript::new(prefix);
    let db = world.db();
    for (n, s) in case.steps.iter().enumerate() {
        let Step { op: AnyOp::Db(op), .. } = s else {
            t.push(format!("{n} not a db step: {s}"));
            continue;
        };
        let r = step(world, &*db, op, prefix).await;
        t.push(format!("{n} {s} -> {r}"));
    }
    for name in DB_TABLES {
        let tbl = table(prefix, name);
        let mut after: Option<String> = None;
        loop {
            match limited(world, db.export_prefix(&tbl, "", after.as_deref(), DB_SCAN_LIMIT_MAX)).await {
                Some(Ok(page)) => {
                    for s in &page {
                        t.push(format!(
                            "final {name}/{:?} = {:?} v{} f{}",
                            s.key, s.value, s.version, s.fence
                        ));
                    }
                    match page.last() {
                        Some(last) if page.len() == DB_SCAN_LIMIT_MAX => after = Some(last.key.clone()),
                        _ => break,
                    }
                }
                other => {
                    t.push(format!("final {name} export -> {}", show(other)));
                    break;
                }
            }
        }
        for index in DB_INDEXES {
            for ikey in DB_INDEX_KEYS {
                let r = limited(world, db.get_by_index(&tbl, index, ikey)).await;
                if !matches!(r, Some(Ok(None))) {
                    t.push(format!(
                        "final {name}.{index}={ikey:?} -> {}",
                        show(r.map(|r| r.map(|r| r.map(|r| r.key))))
                    ));
                }
            }
        }
    }
    t
}
