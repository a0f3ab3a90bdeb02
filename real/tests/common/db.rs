//! The `Db` port's semantics, checked the same way on every real backend (SQLite, MariaDB).
//! Each check uses tables of its own, so the checks can share one instance. Expected answers
//! are the port's module doc (`engine::env::db`), written out by hand.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use engine::env::{Db, DbError, Expect, Row, RowState, TableName, WriteOp, WriteResult};

pub fn t(name: &str) -> TableName {
    TableName::new(name).unwrap()
}

pub fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

pub fn put(table: &TableName, key: &str, value: &str, expect: Expect, fence: u64) -> WriteOp {
    WriteOp::put(table, key, b(value), expect, fence)
}

fn guard(table: &TableName, key: &str, fence: u64) -> WriteOp {
    WriteOp::Guard { table: table.clone(), key: key.into(), fence }
}

fn restore(table: &TableName, key: &str, value: Option<&str>, version: u64, fence: u64) -> WriteOp {
    WriteOp::Restore { table: table.clone(), key: key.into(), value: value.map(b), version, fence }
}

fn row(key: &str, value: &str, version: u64, fence: u64) -> Row {
    Row { key: key.into(), value: b(value), version, fence }
}

fn state(key: &str, value: Option<&str>, version: u64, fence: u64) -> RowState {
    RowState { key: key.into(), value: value.map(b), version, fence }
}

/// Every stored key of `table` (rows and placeholders), via `export_prefix`.
pub async fn export_all(db: &dyn Db, table: &TableName) -> Vec<RowState> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = db.export_prefix(table, "", after.as_deref(), 3).await.unwrap();
        let Some(last) = page.last() else { return out };
        after = Some(last.key.clone());
        out.extend(page);
    }
}

/// Fences: an older fence is refused with the row's fence, an equal or newer one writes and
/// becomes the row's fence; the fence is checked before the version.
pub async fn fences(db: &dyn Db) {
    let u = t("fence_users");
    assert_eq!(
        db.transact(vec![put(&u, "u1", "a", Expect::Absent, 5)]).await,
        Ok(vec![WriteResult::Put { version: 1 }])
    );
    assert_eq!(
        db.transact(vec![put(&u, "u1", "stale", Expect::Any, 4)]).await,
        Err(DbError::Fenced { op_index: 0, row_fence: 5 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "u1", "stale", Expect::Version(9), 4)]).await,
        Err(DbError::Fenced { op_index: 0, row_fence: 5 }),
        "the fence is checked before the version"
    );
    assert_eq!(
        db.transact(vec![put(&u, "u1", "same", Expect::Version(1), 5)]).await,
        Ok(vec![WriteResult::Put { version: 2 }])
    );
    assert_eq!(
        db.transact(vec![put(&u, "u1", "new", Expect::Any, 9)]).await,
        Ok(vec![WriteResult::Put { version: 3 }])
    );
    assert_eq!(db.get(&u, "u1").await, Ok(Some(row("u1", "new", 3, 9))));
    // RaiseFence reads the row and keeps its version; a lower one is refused.
    assert_eq!(
        db.transact(vec![WriteOp::raise_fence(&u, "u1", 12)]).await,
        Ok(vec![WriteResult::RaiseFence { row: Some(row("u1", "new", 3, 12)), fence: 12 }])
    );
    assert_eq!(
        db.transact(vec![WriteOp::raise_fence(&u, "u1", 11)]).await,
        Err(DbError::Fenced { op_index: 0, row_fence: 12 })
    );
    // Fences above 2^63 order correctly too (SQLite stores them offset).
    let big = 1u64 << 63;
    db.transact(vec![put(&u, "big", "x", Expect::Any, big + 1)]).await.unwrap();
    assert_eq!(
        db.transact(vec![put(&u, "big", "y", Expect::Version(1), big)]).await,
        Err(DbError::Fenced { op_index: 0, row_fence: big + 1 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "big", "y", Expect::Version(1), u64::MAX)]).await,
        Ok(vec![WriteResult::Put { version: 2 }])
    );
}

/// Version conditions name the failing op and the row's actual version.
pub async fn versions(db: &dyn Db) {
    let u = t("version_users");
    db.transact(vec![put(&u, "a", "1", Expect::Any, 0), put(&u, "b", "1", Expect::Any, 0)]).await.unwrap();
    assert_eq!(
        db.transact(vec![put(&u, "a", "2", Expect::Version(1), 0), put(&u, "b", "2", Expect::Version(9), 0)])
            .await,
        Err(DbError::VersionMismatch { op_index: 1, actual: 1 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "a", "2", Expect::Absent, 0)]).await,
        Err(DbError::VersionMismatch { op_index: 0, actual: 1 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "c", "2", Expect::Version(1), 0)]).await,
        Err(DbError::NotFound { op_index: 0 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "c", "2", Expect::Present, 0)]).await,
        Err(DbError::NotFound { op_index: 0 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "a", "2", Expect::Present, 0)]).await,
        Ok(vec![WriteResult::Put { version: 2 }])
    );
    // Later ops see earlier ones.
    assert_eq!(
        db.transact(vec![
            put(&u, "n", "1", Expect::Absent, 1),
            put(&u, "n", "2", Expect::Version(1), 1),
            WriteOp::delete(&u, "n", Expect::Version(2), 1),
            put(&u, "n", "4", Expect::Absent, 1),
        ])
        .await,
        Ok(vec![
            WriteResult::Put { version: 1 },
            WriteResult::Put { version: 2 },
            WriteResult::Delete { version: 3, existed: true },
            WriteResult::Put { version: 4 },
        ])
    );
    // Empty values are values, not absence.
    db.transact(vec![put(&u, "empty", "", Expect::Absent, 0)]).await.unwrap();
    assert_eq!(db.get(&u, "empty").await, Ok(Some(row("empty", "", 1, 0))));
}

/// Placeholders: what deletes and fence raises on absent keys leave behind.
pub async fn placeholders(db: &dyn Db) {
    let u = t("ph_users");
    db.transact(vec![put(&u, "a", "1", Expect::Any, 4)]).await.unwrap();
    assert_eq!(
        db.transact(vec![WriteOp::delete(&u, "a", Expect::Present, 6)]).await,
        Ok(vec![WriteResult::Delete { version: 2, existed: true }])
    );
    assert_eq!(db.get(&u, "a").await, Ok(None));
    assert_eq!(db.get_many(&u, &["a".into()]).await, Ok(vec![None]));
    assert_eq!(db.scan_prefix(&u, "", None, 10).await, Ok(vec![]));
    assert_eq!(
        db.transact(vec![put(&u, "a", "late", Expect::Absent, 5)]).await,
        Err(DbError::Fenced { op_index: 0, row_fence: 6 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "a", "x", Expect::Version(2), 6)]).await,
        Err(DbError::NotFound { op_index: 0 })
    );
    assert_eq!(
        db.transact(vec![put(&u, "a", "again", Expect::Absent, 6)]).await,
        Ok(vec![WriteResult::Put { version: 3 }])
    );
    // A fence raised on a key never written shuts the deposed owner out for good.
    assert_eq!(
        db.transact(vec![WriteOp::raise_fence(&u, "z", 7)]).await,
        Ok(vec![WriteResult::RaiseFence { row: None, fence: 7 }])
    );
    assert_eq!(db.get(&u, "z").await, Ok(None));
    assert_eq!(
        db.transact(vec![put(&u, "z", "old", Expect::Absent, 6)]).await,
        Err(DbError::Fenced { op_index: 0, row_fence: 7 })
    );
    // An owner at the fence creates the row over its fence-only placeholder: version 1.
    assert_eq!(
        db.transact(vec![put(&u, "z", "new", Expect::Absent, 7)]).await,
        Ok(vec![WriteResult::Put { version: 1 }])
    );
    // Creates in one transaction: one over a deleted row (its version carries on), one of a
    // new key; then one refused over the live row, and nothing of its transaction kept.
    assert_eq!(
        db.transact(vec![WriteOp::delete(&u, "a", Expect::Present, 6)]).await,
        Ok(vec![WriteResult::Delete { version: 4, existed: true }])
    );
    assert_eq!(
        db.transact(vec![put(&u, "b", "b1", Expect::Absent, 6), put(&u, "a", "a5", Expect::Absent, 6)]).await,
        Ok(vec![WriteResult::Put { version: 1 }, WriteResult::Put { version: 5 }])
    );
    assert_eq!(
        db.transact(vec![put(&u, "c", "c1", Expect::Absent, 6), put(&u, "a", "a6", Expect::Absent, 6)]).await,
        Err(DbError::VersionMismatch { op_index: 1, actual: 5 })
    );
    assert_eq!(db.get(&u, "c").await, Ok(None));
    // Deleting an absent row is allowed and records the fence.
    assert_eq!(
        db.transact(vec![WriteOp::delete(&u, "q", Expect::Absent, 3)]).await,
        Ok(vec![WriteResult::Delete { version: 1, existed: false }])
    );
    assert_eq!(
        export_all(db, &u).await,
        vec![
            state("a", Some("a5"), 5, 6),
            state("b", Some("b1"), 1, 6),
            state("q", None, 1, 3),
            state("z", Some("new"), 1, 7)
        ]
    );
}

/// Unique indexes: one row per index key; renaming frees the old key; clear and delete free.
pub async fn unique_indexes(db: &dyn Db) {
    let u = t("ix_users");
    let ix = |op: WriteOp, k: Option<&str>| op.with_index("by_name", k.map(str::to_string));
    db.transact(vec![ix(put(&u, "u1", "ann's", Expect::Absent, 0), Some("ann"))]).await.unwrap();
    assert_eq!(db.get_by_index(&u, "by_name", "ann").await.unwrap().map(|r| r.key), Some("u1".into()));
    assert_eq!(
        db.transact(vec![ix(put(&u, "u2", "x", Expect::Absent, 0), Some("ann"))]).await,
        Err(DbError::UniqueViolation { op_index: 0, index: "by_name".into() })
    );
    assert_eq!(db.get(&u, "u2").await, Ok(None), "nothing of the refused transaction");
    db.transact(vec![ix(put(&u, "u1", "ann's", Expect::Any, 0), Some("ann"))]).await.unwrap();
    db.transact(vec![ix(put(&u, "u1", "anna's", Expect::Any, 0), Some("anna"))]).await.unwrap();
    assert_eq!(db.get_by_index(&u, "by_name", "ann").await, Ok(None));
    db.transact(vec![ix(put(&u, "u2", "x", Expect::Absent, 0), Some("ann"))]).await.unwrap();
    db.transact(vec![put(&u, "u1", "y", Expect::Any, 0)]).await.unwrap();
    assert_eq!(db.get_by_index(&u, "by_name", "anna").await.unwrap().map(|r| r.value), Some(b("y")));
    db.transact(vec![ix(put(&u, "u1", "y", Expect::Any, 0), None)]).await.unwrap();
    assert_eq!(db.get_by_index(&u, "by_name", "anna").await, Ok(None));
    db.transact(vec![WriteOp::delete(&u, "u2", Expect::Any, 0)]).await.unwrap();
    assert_eq!(db.get_by_index(&u, "by_name", "ann").await, Ok(None));
    // A key moves between rows inside one transaction; tables are separate namespaces.
    db.transact(vec![ix(put(&u, "u3", "c", Expect::Any, 0), Some("cat"))]).await.unwrap();
    db.transact(vec![
        ix(put(&u, "u3", "c", Expect::Any, 0), None),
        ix(put(&u, "u4", "d", Expect::Any, 0), Some("cat")),
    ])
    .await
    .unwrap();
    assert_eq!(db.get_by_index(&u, "by_name", "cat").await.unwrap().map(|r| r.key), Some("u4".into()));
    let g = t("ix_guilds");
    db.transact(vec![ix(put(&g, "u4", "guild", Expect::Any, 0), Some("cat"))]).await.unwrap();
    assert_eq!(db.get_by_index(&g, "by_name", "cat").await.unwrap().map(|r| r.value), Some(b("guild")));
    assert_eq!(db.get_by_index(&u, "by_name", "cat").await.unwrap().map(|r| r.value), Some(b("d")));
}

/// A transaction refused at its last op changes nothing, whatever the earlier ops did.
pub async fn all_or_nothing(db: &dyn Db) {
    let u = t("aon_users");
    db.transact(vec![put(&u, "a", "1", Expect::Any, 1).with_index("by_name", Some("ann".into()))])
        .await
        .unwrap();
    let before = export_all(db, &u).await;
    let r = db
        .transact(vec![
            put(&u, "a", "2", Expect::Any, 2).with_index("by_name", Some("anna".into())),
            WriteOp::raise_fence(&u, "z", 8),
            put(&u, "b", "1", Expect::Absent, 1).with_index("by_name", Some("bob".into())),
            WriteOp::delete(&u, "a", Expect::Any, 2),
            restore(&u, "r", Some("restored"), 5, 1),
            put(&u, "a", "3", Expect::Version(1), 2),
        ])
        .await;
    assert_eq!(r, Err(DbError::NotFound { op_index: 5 }));
    assert_eq!(export_all(db, &u).await, before);
    assert_eq!(db.get_by_index(&u, "by_name", "ann").await.unwrap().map(|r| r.key), Some("a".into()));
    assert_eq!(db.get_by_index(&u, "by_name", "bob").await, Ok(None));
    // The same through the fast path: the second update misses, the first is rolled back.
    db.transact(vec![put(&u, "f1", "1", Expect::Any, 1), put(&u, "f2", "1", Expect::Any, 1)]).await.unwrap();
    assert_eq!(
        db.transact(vec![
            put(&u, "f1", "2", Expect::Version(1), 1),
            put(&u, "f2", "2", Expect::Version(7), 1)
        ])
        .await,
        Err(DbError::VersionMismatch { op_index: 1, actual: 1 })
    );
    assert_eq!(db.get(&u, "f1").await.unwrap().map(|r| r.version), Some(1));
}

/// Scans: live rows of the prefix only, in byte order, paged with `start_after`.
pub async fn scans(db: &dyn Db) {
    let u = t("scan_users");
    let keys = ["u/3", "u/1", "v/1", "u/2", "t/9", "u/4", "u/B", "u/a", "u/a ", "u/é", "u/~", "u/10", "u"];
    let ops = keys.iter().map(|k| put(&u, k, k, Expect::Any, 0)).collect();
    db.transact(ops).await.unwrap();
    db.transact(vec![WriteOp::delete(&u, "u/2", Expect::Any, 0)]).await.unwrap();
    let names = |rows: Vec<Row>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
    let expected = ["u/1", "u/10", "u/3", "u/4", "u/B", "u/a", "u/a ", "u/~", "u/é"];
    assert_eq!(names(db.scan_prefix(&u, "u/", None, 100).await.unwrap()), expected);
    let mut paged = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = names(db.scan_prefix(&u, "u/", after.as_deref(), 2).await.unwrap());
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        paged.extend(page);
    }
    assert_eq!(paged, expected);
    assert_eq!(names(db.scan_prefix(&u, "u/", Some("a"), 1).await.unwrap()), ["u/1"]);
    assert_eq!(names(db.scan_prefix(&u, "u/", Some("z"), 5).await.unwrap()), Vec::<String>::new());
    assert_eq!(names(db.scan_prefix(&u, "", None, 3).await.unwrap()), ["t/9", "u", "u/1"]);
    assert_eq!(db.scan_prefix(&t("scan_nothing"), "", None, 10).await, Ok(vec![]));
    let got = db
        .get_many(&u, &["u/4".into(), "nope".into(), "u/2".into(), "u/1".into(), "u/4".into()])
        .await
        .unwrap();
    let got: Vec<Option<String>> = got.into_iter().map(|r| r.map(|r| r.key)).collect();
    let s = |k: &str| Some(k.to_string());
    assert_eq!(got, vec![s("u/4"), None, None, s("u/1"), s("u/4")]);
    assert_eq!(db.get_many(&u, &[]).await, Ok(vec![]));
}

/// Guard, Restore and export_prefix (the port additions for shard moves).
pub async fn guards_restores_exports(db: &dyn Db) {
    let s = t("gr_shards");
    let u = t("gr_users");
    db.transact(vec![put(&s, "shard/7", "owned", Expect::Absent, 3)]).await.unwrap();
    // A guard checks the fence, then presence, and changes nothing.
    assert_eq!(
        db.transact(vec![guard(&s, "shard/7", 3), put(&u, "k", "v", Expect::Absent, 1)]).await,
        Ok(vec![WriteResult::Guard { version: 1 }, WriteResult::Put { version: 1 }])
    );
    assert_eq!(db.get(&s, "shard/7").await, Ok(Some(row("shard/7", "owned", 1, 3))));
    assert_eq!(
        db.transact(vec![put(&u, "k", "w", Expect::Any, 1), guard(&s, "shard/7", 2)]).await,
        Err(DbError::Fenced { op_index: 1, row_fence: 3 })
    );
    assert_eq!(db.transact(vec![guard(&s, "shard/8", 9)]).await, Err(DbError::NotFound { op_index: 0 }));
    db.transact(vec![WriteOp::raise_fence(&s, "shard/9", 4)]).await.unwrap();
    assert_eq!(
        db.transact(vec![guard(&s, "shard/9", 4)]).await,
        Err(DbError::NotFound { op_index: 0 }),
        "placeholder"
    );
    assert_eq!(
        db.transact(vec![guard(&s, "shard/9", 3)]).await,
        Err(DbError::Fenced { op_index: 0, row_fence: 4 })
    );
    // The fast path with a guard: versioned put + guard, hit and miss.
    assert_eq!(
        db.transact(vec![put(&u, "k", "w", Expect::Version(1), 1), guard(&s, "shard/7", 5)]).await,
        Ok(vec![WriteResult::Put { version: 2 }, WriteResult::Guard { version: 1 }])
    );
    assert_eq!(
        db.transact(vec![put(&u, "k", "x", Expect::Version(2), 1), guard(&s, "shard/7", 1)]).await,
        Err(DbError::Fenced { op_index: 1, row_fence: 3 })
    );
    assert_eq!(db.get(&u, "k").await.unwrap().map(|r| r.version), Some(2));

    // Restore: a max-merge by version, never an error, clears index entries when applied.
    db.transact(vec![put(&u, "r", "mine", Expect::Any, 9).with_index("by_name", Some("rick".into()))])
        .await
        .unwrap();
    assert_eq!(
        db.transact(vec![restore(&u, "r", Some("older"), 1, 5)]).await,
        Ok(vec![WriteResult::Restore { applied: false }])
    );
    assert_eq!(db.get(&u, "r").await, Ok(Some(row("r", "mine", 1, 9))), "not newer, lower fence: nothing");
    assert_eq!(
        db.transact(vec![restore(&u, "r", Some("older"), 1, 50)]).await,
        Ok(vec![WriteResult::Restore { applied: false }])
    );
    assert_eq!(db.get(&u, "r").await, Ok(Some(row("r", "mine", 1, 50))), "not newer: only the fence rose");
    assert_eq!(db.get_by_index(&u, "by_name", "rick").await.unwrap().map(|r| r.key), Some("r".into()));
    assert_eq!(
        db.transact(vec![restore(&u, "r", Some("moved"), 4, 2)]).await,
        Ok(vec![WriteResult::Restore { applied: true }])
    );
    assert_eq!(db.get(&u, "r").await, Ok(Some(row("r", "moved", 4, 50))), "the fence never goes down");
    assert_eq!(db.get_by_index(&u, "by_name", "rick").await, Ok(None), "index entries cleared");
    db.transact(vec![put(&u, "r2", "x", Expect::Any, 0).with_index("by_name", Some("rick".into()))])
        .await
        .unwrap();
    assert_eq!(
        db.transact(vec![restore(&u, "gone", None, 3, 5), restore(&u, "new", Some("n"), 2, 1)]).await,
        Ok(vec![WriteResult::Restore { applied: true }, WriteResult::Restore { applied: true }])
    );
    assert_eq!(
        db.transact(vec![restore(&u, "never", Some("n"), 0, 1)]).await,
        Ok(vec![WriteResult::Restore { applied: false }]),
        "version 0 is not newer than an absent key, but its fence is kept (a fence-only placeholder)"
    );
    // Restoring a placeholder over a placeholder with a lower version.
    assert_eq!(
        db.transact(vec![restore(&u, "gone", None, 4, 1)]).await,
        Ok(vec![WriteResult::Restore { applied: true }])
    );
    // Exports: placeholders too, same order and paging as scans.
    let all = db.export_prefix(&u, "", None, 100).await.unwrap();
    assert_eq!(
        all,
        vec![
            state("gone", None, 4, 5),
            state("k", Some("w"), 2, 1),
            state("never", None, 0, 1),
            state("new", Some("n"), 2, 1),
            state("r", Some("moved"), 4, 50),
            state("r2", Some("x"), 1, 0),
        ]
    );
    assert_eq!(db.export_prefix(&u, "r", Some("r"), 5).await.unwrap(), vec![state("r2", Some("x"), 1, 0)]);
    assert_eq!(export_all(db, &u).await, all);
}

/// Limits and naming rules are refused before anything is sent.
pub async fn invalid_arguments(db: &dyn Db) {
    let u = t("inv_users");
    let invalid = |r: Result<_, DbError>| matches!(r, Err(DbError::InvalidArgument(_)));
    assert!(invalid(db.get(&u, "").await.map(drop)));
    assert!(invalid(db.get(&u, "a\0b").await.map(drop)));
    assert!(invalid(db.transact(vec![]).await.map(drop)));
    assert!(invalid(db.scan_prefix(&u, "", None, 0).await.map(drop)));
    assert!(invalid(db.export_prefix(&u, "", Some(""), 1).await.map(drop)));
    assert!(invalid(db.get_by_index(&u, "Bad", "x").await.map(drop)));
    let too_big =
        WriteOp::put(&u, "k", Bytes::from(vec![0; engine::env::DB_VALUE_BYTES_MAX + 1]), Expect::Any, 0);
    assert!(invalid(db.transact(vec![too_big]).await.map(drop)));
    assert_eq!(export_all(db, &u).await, vec![]);
    // The largest value and the longest key do fit.
    let key = "k".repeat(engine::env::DB_KEY_BYTES_MAX);
    let big = Bytes::from(vec![0xAB; engine::env::DB_VALUE_BYTES_MAX]);
    db.transact(vec![WriteOp::put(&u, key.clone(), big.clone(), Expect::Absent, 0)]).await.unwrap();
    assert_eq!(db.get(&u, &key).await.unwrap().map(|r| r.value), Some(big));
}

/// Every semantic check above, in turn, on one instance.
pub async fn semantics(db: &dyn Db) {
    fences(db).await;
    versions(db).await;
    placeholders(db).await;
    unique_indexes(db).await;
    all_or_nothing(db).await;
    scans(db).await;
    guards_restores_exports(db).await;
    invalid_arguments(db).await;
}

/// `tasks` tasks each add 1 to one counter row `per_task` times by read-modify-write with
/// `Expect::Version`, retrying on a version mismatch: no update may be lost. Returns the
/// version mismatches seen (the contention the check exercised).
pub async fn concurrent_increments(db: Arc<dyn Db>, tasks: usize, per_task: usize) -> u64 {
    let c = t("counters");
    db.transact(vec![put(&c, "n", "0", Expect::Absent, 1)]).await.unwrap();
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (db, c) = (db.clone(), c.clone());
            tokio::spawn(async move {
                let mut conflicts = 0u64;
                for _ in 0..per_task {
                    loop {
                        let row = db.get(&c, "n").await.unwrap().expect("the counter exists");
                        let n: u64 = std::str::from_utf8(&row.value).unwrap().parse().unwrap();
                        let next = put(&c, "n", &(n + 1).to_string(), Expect::Version(row.version), 1);
                        // Half the tasks also write a row of their own in the same transaction
                        // (the general path's locking, not only the fast path's).
                        let mut ops = vec![next];
                        if task % 2 == 1 {
                            ops.push(put(&c, &format!("task/{task}"), &n.to_string(), Expect::Any, 1));
                        }
                        match db.transact(ops).await {
                            Ok(_) => break,
                            Err(DbError::VersionMismatch { op_index: 0, .. }) => conflicts += 1,
                            Err(e) => panic!("task {task}: {e:?}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for h in handles {
        conflicts += h.await.unwrap();
    }
    let row = db.get(&c, "n").await.unwrap().unwrap();
    let total = (tasks * per_task) as u64;
    assert_eq!(row.value, b(&total.to_string()), "lost updates");
    assert_eq!(row.version, total + 1);
    conflicts
}

/// Writes `n` rows with index entries (for durability checks); [`check_durable`] reads them.
pub async fn write_durable(db: &dyn Db, n: usize) {
    let d = t("durable");
    for i in 0..n {
        let op = put(&d, &format!("k{i:03}"), &format!("v{i}"), Expect::Absent, i as u64)
            .with_index("by_name", Some(format!("name{i}")));
        db.transact(vec![op]).await.unwrap();
    }
    db.transact(vec![WriteOp::delete(&d, "k000", Expect::Any, 99)]).await.unwrap();
}

pub async fn check_durable(db: &dyn Db, n: usize) {
    let d = t("durable");
    let rows = export_all(db, &d).await;
    assert_eq!(rows.len(), n);
    let by_key: BTreeMap<String, RowState> = rows.into_iter().map(|r| (r.key.clone(), r)).collect();
    assert_eq!(by_key["k000"], state("k000", None, 2, 99));
    for i in 1..n {
        let k = format!("k{i:03}");
        assert_eq!(by_key[&k], state(&k, Some(&format!("v{i}")), 1, i as u64));
        let by_name = db.get_by_index(&d, "by_name", &format!("name{i}")).await.unwrap();
        assert_eq!(by_name.map(|r| r.key), Some(k));
    }
    assert_eq!(db.get_by_index(&d, "by_name", "name0").await, Ok(None));
}

/// `tasks` tasks create the same absent row at once (`Expect::Absent`), each also creating a
/// row of its own in the same transaction: exactly one wins, every other one is refused with
/// `VersionMismatch` — never an error about locks (on MariaDB concurrent creators of one key
/// deadlock on InnoDB's gap locks; the adapter runs the loser again).
pub async fn concurrent_creators(db: Arc<dyn Db>, tasks: usize) {
    let c = t("creators");
    let handles: Vec<_> = (0..tasks)
        .map(|task| {
            let (db, c) = (db.clone(), c.clone());
            tokio::spawn(async move {
                let ops = vec![
                    put(&c, &format!("own/{task}"), "mine", Expect::Absent, 1),
                    put(&c, "contested", &task.to_string(), Expect::Absent, 1),
                ];
                db.transact(ops).await
            })
        })
        .collect();
    let mut winners = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(_) => winners += 1,
            Err(DbError::VersionMismatch { op_index: 1, actual: 1 }) => {}
            Err(e) => panic!("a creator failed with {e:?}"),
        }
    }
    assert_eq!(winners, 1);
    let rows = export_all(&*db, &c).await;
    assert_eq!(rows.len(), 2, "the contested row and the winner's own row only: {rows:?}");
}

/// Creates over placeholders, alone and in a transaction with other ops, then one refused
/// create: `counts` (the adapter's fast-path counters: hits, misses) must show every create
/// answered by the fast path and the refusal handed to the general path.
pub async fn creates_over_placeholders_take_the_fast_path(db: &dyn Db, counts: impl Fn() -> (u64, u64)) {
    let u = t("fast_creates");
    let del = |k: &str, f| WriteOp::delete(&u, k, Expect::Present, f);
    let (hits, misses) = counts();
    assert_eq!(
        db.transact(vec![put(&u, "a", "1", Expect::Absent, 1)]).await,
        Ok(vec![WriteResult::Put { version: 1 }])
    );
    assert_eq!(
        db.transact(vec![del("a", 2)]).await,
        Ok(vec![WriteResult::Delete { version: 2, existed: true }])
    );
    assert_eq!(
        db.transact(vec![put(&u, "a", "2", Expect::Absent, 2)]).await,
        Ok(vec![WriteResult::Put { version: 3 }])
    );
    assert_eq!(
        db.transact(vec![del("a", 3)]).await,
        Ok(vec![WriteResult::Delete { version: 4, existed: true }])
    );
    assert_eq!(
        db.transact(vec![WriteOp::raise_fence(&u, "b", 3)]).await,
        Ok(vec![WriteResult::RaiseFence { row: None, fence: 3 }])
    );
    let (hits_before, misses_before) = counts();
    assert_eq!(
        db.transact(vec![put(&u, "a", "3", Expect::Absent, 3), put(&u, "b", "1", Expect::Absent, 3)]).await,
        Ok(vec![WriteResult::Put { version: 5 }, WriteResult::Put { version: 1 }])
    );
    assert_eq!(counts(), (hits_before + 1, misses_before), "the pair of creates over placeholders hit");
    assert_eq!(counts().1, misses, "no create over a placeholder the fence allows missed");
    assert!(counts().0 >= hits + 5, "{:?} after {hits}", counts());
    assert_eq!(
        db.transact(vec![put(&u, "b", "2", Expect::Absent, 3)]).await,
        Err(DbError::VersionMismatch { op_index: 0, actual: 1 })
    );
    assert_eq!(counts().1, misses + 1, "a create over a live row misses; the general path names the error");
    assert_eq!(db.get(&u, "b").await.map(|r| r.map(|r| (r.value, r.version))), Ok(Some(("1".into(), 1))));
}
