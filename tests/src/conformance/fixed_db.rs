//! Scripted SQL cases: each semantic corner of the `Db` port written out once, run (like the
//! generated cases) against the simulated SQL node and against SQLite and MariaDB. Their
//! answers are not asserted here: the transcripts of the three must be equal, and the
//! adapters' own tests (`real/tests/common/db.rs`) pin the expected values.

use bytes::Bytes;
use engine::env::{Expect, TableName, WriteOp};

use super::ops::{AnyOp, Case, DbOp, Service, Step};

fn t(name: &str) -> TableName {
    TableName::new(name).expect("valid")
}

fn put(table: &str, key: &str, value: &str, expect: Expect, fence: u64) -> WriteOp {
    WriteOp::put(&t(table), key, Bytes::copy_from_slice(value.as_bytes()), expect, fence)
}

fn tx(ops: Vec<WriteOp>) -> DbOp {
    DbOp::Transact(ops)
}

fn scan(table: &str, prefix: &str, after: Option<&str>, limit: usize) -> DbOp {
    DbOp::Scan { table: table.into(), prefix: prefix.into(), start_after: after.map(str::to_string), limit }
}

fn export(table: &str, prefix: &str, after: Option<&str>, limit: usize) -> DbOp {
    DbOp::Export { table: table.into(), prefix: prefix.into(), start_after: after.map(str::to_string), limit }
}

fn get(table: &str, key: &str) -> DbOp {
    DbOp::Get { table: table.into(), key: key.into() }
}

fn by_index(table: &str, index: &str, ikey: &str) -> DbOp {
    DbOp::GetByIndex { table: table.into(), index: index.into(), index_key: ikey.into() }
}

/// The scripts, each as a SQLite case and a MariaDB case.
pub fn cases() -> Vec<Case> {
    let scripts: Vec<(&str, Vec<DbOp>)> = vec![
        ("db-fences", fences()),
        ("db-placeholders", placeholders()),
        ("db-unique-index", unique_index()),
        ("db-all-or-nothing", all_or_nothing()),
        ("db-scan-order-and-paging", scans()),
        ("db-guard-restore-export", guard_restore_export()),
        ("db-invalid-arguments", invalid()),
    ];
    let mut out = Vec::new();
    for service in [Service::Sqlite, Service::Mariadb] {
        for (name, ops) in &scripts {
            let steps = ops.iter().map(|op| Step { client: 0, op: AnyOp::Db(op.clone()) }).collect();
            out.push(Case { name: name.to_string(), service, clients: vec![0], steps });
        }
    }
    out
}

fn fences() -> Vec<DbOp> {
    let big = 1u64 << 63;
    vec![
        tx(vec![put("a", "u1", "a", Expect::Absent, 5)]),
        tx(vec![put("a", "u1", "stale", Expect::Any, 4)]),
        tx(vec![put("a", "u1", "stale", Expect::Version(9), 4)]),
        tx(vec![put("a", "u1", "same", Expect::Version(1), 5)]),
        tx(vec![put("a", "u1", "new", Expect::Any, 9)]),
        tx(vec![WriteOp::raise_fence(&t("a"), "u1", 12)]),
        tx(vec![WriteOp::raise_fence(&t("a"), "u1", 11)]),
        tx(vec![put("a", "big", "x", Expect::Any, big + 1)]),
        tx(vec![put("a", "big", "y", Expect::Version(1), big)]),
        tx(vec![put("a", "big", "y", Expect::Version(1), u64::MAX)]),
        tx(vec![put("a", "big", "z", Expect::Version(2), u64::MAX)]),
        get("a", "u1"),
        get("a", "big"),
    ]
}

fn placeholders() -> Vec<DbOp> {
    vec![
        tx(vec![put("a", "k", "1", Expect::Any, 4)]),
        tx(vec![WriteOp::delete(&t("a"), "k", Expect::Present, 6)]),
        get("a", "k"),
        scan("a", "", None, 10),
        tx(vec![put("a", "k", "late", Expect::Absent, 5)]),
        tx(vec![put("a", "k", "x", Expect::Version(2), 6)]),
        tx(vec![put("a", "k", "x", Expect::Present, 6)]),
        tx(vec![put("a", "k", "again", Expect::Absent, 6)]),
        tx(vec![WriteOp::raise_fence(&t("a"), "z", 7)]),
        tx(vec![WriteOp::raise_fence(&t("a"), "y", 0)]),
        tx(vec![put("a", "z", "old", Expect::Absent, 6)]),
        tx(vec![WriteOp::delete(&t("a"), "q", Expect::Absent, 3)]),
        tx(vec![WriteOp::delete(&t("a"), "q", Expect::Present, 3)]),
        DbOp::GetMany { table: "a".into(), keys: vec!["z".into(), "k".into(), "q".into(), "k".into()] },
        export("a", "", None, 10),
    ]
}

fn unique_index() -> Vec<DbOp> {
    let ix = |op: WriteOp, k: Option<&str>| op.with_index("by_name", k.map(str::to_string));
    vec![
        tx(vec![ix(put("a", "u1", "ann's", Expect::Absent, 0), Some("n1"))]),
        tx(vec![ix(put("a", "u2", "x", Expect::Absent, 0), Some("n1"))]),
        tx(vec![ix(put("a", "u1", "ann's", Expect::Any, 0), Some("n1"))]),
        tx(vec![ix(put("a", "u1", "anna's", Expect::Any, 0), Some("n2"))]),
        by_index("a", "by_name", "n1"),
        tx(vec![ix(put("a", "u2", "x", Expect::Absent, 0), Some("n1"))]),
        tx(vec![put("a", "u1", "y", Expect::Any, 0)]),
        by_index("a", "by_name", "n2"),
        tx(vec![ix(put("a", "u1", "y", Expect::Any, 0), None)]),
        tx(vec![WriteOp::delete(&t("a"), "u2", Expect::Any, 0)]),
        tx(vec![
            ix(put("a", "u3", "c", Expect::Any, 0), Some("n3")).with_index("by_tag", Some("n1".into())),
            ix(put("a", "u3", "c", Expect::Any, 0), None),
            ix(put("a", "u4", "d", Expect::Any, 0), Some("n3")),
        ]),
        tx(vec![ix(put("b", "u4", "guild", Expect::Any, 0), Some("n3"))]),
        by_index("a", "by_name", "n3"),
        by_index("a", "by_tag", "n1"),
        by_index("b", "by_name", "n3"),
    ]
}

fn all_or_nothing() -> Vec<DbOp> {
    vec![
        tx(vec![put("a", "a", "1", Expect::Any, 1).with_index("by_name", Some("n1".into()))]),
        tx(vec![
            put("a", "a", "2", Expect::Any, 2).with_index("by_name", Some("n2".into())),
            WriteOp::raise_fence(&t("a"), "z", 8),
            put("a", "b", "1", Expect::Absent, 1).with_index("by_name", Some("n3".into())),
            WriteOp::delete(&t("a"), "a", Expect::Any, 2),
            WriteOp::Restore { table: t("a"), key: "r".into(), value: None, version: 5, fence: 1 },
            put("a", "a", "3", Expect::Version(1), 2),
        ]),
        tx(vec![put("a", "f1", "1", Expect::Any, 1), put("b", "f2", "1", Expect::Any, 1)]),
        tx(vec![put("a", "f1", "2", Expect::Version(1), 1), put("b", "f2", "2", Expect::Version(7), 1)]),
        tx(vec![put("a", "f1", "2", Expect::Version(1), 1), put("b", "f2", "2", Expect::Version(1), 0)]),
        tx(vec![put("a", "f1", "2", Expect::Version(1), 1), put("a", "f1", "3", Expect::Version(2), 1)]),
        export("a", "", None, 10),
        export("b", "", None, 10),
    ]
}

fn scans() -> Vec<DbOp> {
    let keys = ["u/3", "u/1", "v/1", "u/2", "t/9", "u/4", "u/B", "u/a", "u/a ", "u/é", "u/~", "u/10", "u"];
    let mut ops = vec![tx(keys.iter().map(|k| put("a", k, k, Expect::Any, 0)).collect())];
    ops.push(tx(vec![WriteOp::delete(&t("a"), "u/2", Expect::Any, 0)]));
    ops.push(scan("a", "u/", None, 100));
    let mut after = None;
    for page in ["u/10", "u/4", "u/a", "u/~", "u/é"] {
        ops.push(scan("a", "u/", after, 2));
        ops.push(export("a", "u/", after, 2));
        after = Some(page);
    }
    ops.extend([
        scan("a", "u/", Some("a"), 1),
        scan("a", "u/", Some("z"), 5),
        scan("a", "", None, 3),
        scan("a", "u/a", None, 5),
        scan("a", "U", None, 5),
        scan("b", "", None, 10),
    ]);
    ops
}

fn guard_restore_export() -> Vec<DbOp> {
    let guard = |k: &str, f| WriteOp::guard(&t("s"), k, f);
    let restore = |k: &str, v: Option<&str>, version, fence| WriteOp::Restore {
        table: t("a"),
        key: k.into(),
        value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
        version,
        fence,
    };
    vec![
        tx(vec![put("s", "shard/7", "owned", Expect::Absent, 3)]),
        tx(vec![guard("shard/7", 3), put("a", "k", "v", Expect::Absent, 1)]),
        tx(vec![put("a", "k", "w", Expect::Any, 1), guard("shard/7", 2)]),
        tx(vec![guard("shard/8", 9)]),
        tx(vec![WriteOp::raise_fence(&t("s"), "shard/9", 4)]),
        tx(vec![guard("shard/9", 4)]),
        tx(vec![guard("shard/9", 3)]),
        tx(vec![put("a", "k", "w", Expect::Version(1), 1), guard("shard/7", 5)]),
        tx(vec![put("a", "k", "x", Expect::Version(2), 1), guard("shard/7", 1)]),
        tx(vec![guard("shard/7", 3), guard("shard/7", 4)]),
        tx(vec![put("a", "r", "mine", Expect::Any, 9).with_index("by_name", Some("n1".into()))]),
        tx(vec![restore("r", Some("older"), 1, 5)]),
        tx(vec![restore("r", Some("older"), 1, 50)]),
        by_index("a", "by_name", "n1"),
        tx(vec![restore("r", Some("moved"), 4, 2)]),
        by_index("a", "by_name", "n1"),
        tx(vec![restore("gone", None, 3, 5), restore("new", Some("n"), 2, 1)]),
        tx(vec![restore("never", Some("n"), 0, 1)]),
        tx(vec![restore("gone", None, 4, 1)]),
        tx(vec![restore("new", Some("n2"), 3, 0), put("a", "new", "n3", Expect::Version(3), 1)]),
        export("a", "", None, 100),
        export("a", "r", Some("r"), 5),
        export("s", "", None, 100),
    ]
}

fn invalid() -> Vec<DbOp> {
    vec![
        get("a", ""),
        get("a", "a\0b"),
        tx(vec![]),
        scan("a", "", None, 0),
        scan("a", "", Some(""), 1),
        export("a", "", None, engine::env::DB_SCAN_LIMIT_MAX + 1),
        by_index("a", "Bad", "x"),
        tx(vec![put("a", &"k".repeat(engine::env::DB_KEY_BYTES_MAX + 1), "v", Expect::Any, 0)]),
        tx(vec![put("a", &"k".repeat(engine::env::DB_KEY_BYTES_MAX), "v", Expect::Any, 0)]),
        DbOp::GetMany { table: "a".into(), keys: vec![] },
        export("a", "", None, 10),
    ]
}
