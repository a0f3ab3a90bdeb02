//! The data of one simulated SQL instance and the `Db` port's semantics over it, as pure
//! functions of (state, command). No I/O, no clock: this is the reference model the other
//! backends are compared with.
//!
//! **Fault model.** An instance is one SQL server with a durable, serializable store: every
//! command is applied atomically, one at a time, in the order the server takes them, and a
//! committed `transact` survives a crash (the store lives outside the madsim node; see
//! [`super::SqlStore`]). Faults come from outside this module: the server node may be killed
//! (a `transact` not yet at its commit point is lost wholly, one past it is kept wholly; the
//! client may not learn which: `maybe_applied`), restarted, paused or partitioned like any
//! node, and the server may hold each transaction for a configured commit latency.
//! **Not modelled**: replication and failover (no replicas, so no stale reads and no lost
//! acknowledged commits), isolation anomalies (every read sees every earlier commit),
//! lock waits, deadlocks and their retries (transactions never conflict: they run one at a
//! time), a full disk, schema changes, per-statement timeouts on the server, and storage
//! limits beyond the port's named limits. Placeholders are never purged.
//!
//! The simulator (`sim::sql`) serves this state machine on a madsim node and validates each
//! call with the port's own `validate_*` functions first, as a real server refuses a bad
//! statement; [`FakeDb`](super::FakeDb) does the same in memory for unit tests. The
//! conformance suite holds both to SQLite and MariaDB.

use std::collections::BTreeMap;

use crate::env::{DbError, Expect, Row, RowState, TableName, WriteOp, WriteResult};
use bytes::Bytes;

/// What the instance stores for one key: a row, or a placeholder (`value: None`) that keeps
/// the key's fence and version after a delete or a fence raise on an absent key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub value: Option<Bytes>,
    pub version: u64,
    pub fence: u64,
    /// Index name -> this row's index key in it (empty for a placeholder).
    pub index: BTreeMap<String, String>,
}

impl Record {
    fn live(&self, key: &str) -> Option<Row> {
        self.value.as_ref().map(|value| Row {
            key: key.to_string(),
            value: value.clone(),
            version: self.version,
            fence: self.fence,
        })
    }
}

/// `(table, index name)`.
type IndexId = (TableName, String);

/// The whole dataset of one instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Instance {
    tables: BTreeMap<TableName, BTreeMap<String, Record>>,
    /// Unique indexes: index key -> row key.
    indexes: BTreeMap<IndexId, BTreeMap<String, String>>,
    /// Committed `transact` calls (for tests and reports).
    commits: u64,
    /// Planted bug `no-fence-check`: writes with a stale fence are accepted (and lower the
    /// row's fence), guards pass whatever the fence. For proving the checkers only.
    ignore_fences: bool,
}

/// Changes of a `transact` in progress. Reads fall through to the instance; nothing reaches it
/// unless every operation succeeded.
struct Txn<'a> {
    base: &'a Instance,
    records: BTreeMap<(TableName, String), Record>,
    /// `(table, index, index key)` -> the row now holding it (`None`: cleared).
    index: BTreeMap<(TableName, String, String), Option<String>>,
}

impl<'a> Txn<'a> {
    fn new(base: &'a Instance) -> Txn<'a> {
        Txn { base, records: BTreeMap::new(), index: BTreeMap::new() }
    }

    fn record(&self, table: &TableName, key: &str) -> Option<Record> {
        match self.records.get(&(table.clone(), key.to_string())) {
            Some(r) => Some(r.clone()),
            None => self.base.record(table, key).cloned(),
        }
    }

    fn holder(&self, table: &TableName, index: &str, index_key: &str) -> Option<String> {
        match self.index.get(&(table.clone(), index.to_string(), index_key.to_string())) {
            Some(h) => h.clone(),
            None => self
                .base
                .indexes
                .get(&(table.clone(), index.to_string()))
                .and_then(|m| m.get(index_key))
                .cloned(),
        }
    }

    fn set_holder(&mut self, table: &TableName, index: &str, index_key: &str, row: Option<&str>) {
        self.index.insert((table.clone(), index.to_string(), index_key.to_string()), row.map(str::to_string));
    }

    /// Applies one operation to the overlay.
    fn apply(&mut self, op_index: usize, op: &WriteOp, ignore_fences: bool) -> Result<WriteResult, DbError> {
        let (table, key, fence) = (op.table(), op.key(), op.fence());
        let current = self.record(table, key);
        let row_fence = current.as_ref().map_or(0, |r| r.fence);
        let version = current.as_ref().map_or(0, |r| r.version);
        let live_version = current.as_ref().filter(|r| r.value.is_some()).map(|r| r.version);
        let mut record =
            current.unwrap_or(Record { value: None, version: 0, fence: 0, index: BTreeMap::new() });
        if let WriteOp::Restore { value, version: restored, .. } = op {
            let applied = *restored > version;
            if applied {
                for (name, index_key) in std::mem::take(&mut record.index) {
                    self.set_holder(table, &name, &index_key, None);
                }
                record.value = value.clone();
                record.version = *restored;
            }
            record.fence = record.fence.max(fence);
            self.records.insert((table.clone(), key.to_string()), record);
            return Ok(WriteResult::Restore { applied });
        }
        if fence < row_fence && !ignore_fences {
            crate::probe!("sql: write refused by a newer fence on the row");
            return Err(DbError::Fenced { op_index, row_fence });
        }
        let result = match op {
            WriteOp::Put { value, expect, index, .. } => {
                check_expect(op_index, *expect, live_version)?;
                for (name, index_key) in index {
                    let old = record.index.get(name).cloned();
                    if let Some(k) = index_key {
                        if self.holder(table, name, k).is_some_and(|holder| holder != key) {
                            return Err(DbError::UniqueViolation { op_index, index: name.clone() });
                        }
                    }
                    if let Some(old) = &old {
                        self.set_holder(table, name, old, None);
                        record.index.remove(name);
                    }
                    if let Some(k) = index_key {
                        self.set_holder(table, name, k, Some(key));
                        record.index.insert(name.clone(), k.clone());
                    }
                }
                record.value = Some(value.clone());
                record.version = version + 1;
                record.fence = fence;
                WriteResult::Put { version: record.version }
            }
            WriteOp::Delete { expect, .. } => {
                check_expect(op_index, *expect, live_version)?;
                for (name, index_key) in std::mem::take(&mut record.index) {
                    self.set_holder(table, &name, &index_key, None);
                }
                record.value = None;
                record.version = version + 1;
                record.fence = fence;
                WriteResult::Delete { version: record.version, existed: live_version.is_some() }
            }
            WriteOp::RaiseFence { .. } => {
                record.fence = fence;
                WriteResult::RaiseFence { row: record.live(key), fence }
            }
            WriteOp::Guard { .. } => {
                return match live_version {
                    Some(version) => Ok(WriteResult::Guard { version }),
                    None => Err(DbError::NotFound { op_index }),
                };
            }
            WriteOp::Restore { .. } => unreachable!("handled above"),
        };
        self.records.insert((table.clone(), key.to_string()), record);
        Ok(result)
    }
}

/// Checks `expect` against the live row's version (`None`: absent or a placeholder).
fn check_expect(op_index: usize, expect: Expect, live: Option<u64>) -> Result<(), DbError> {
    match (expect, live) {
        (Expect::Any, _) | (Expect::Absent, None) | (Expect::Present, Some(_)) => Ok(()),
        (Expect::Absent, Some(actual)) => Err(DbError::VersionMismatch { op_index, actual }),
        (Expect::Present | Expect::Version(_), None) => Err(DbError::NotFound { op_index }),
        (Expect::Version(v), Some(actual)) if v == actual => Ok(()),
        (Expect::Version(_), Some(actual)) => Err(DbError::VersionMismatch { op_index, actual }),
    }
}

impl Instance {
    pub fn new() -> Instance {
        Instance::default()
    }

    /// Committed `transact` calls so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Plants (or removes) the `no-fence-check` bug: fences stop being enforced.
    pub fn set_ignore_fences(&mut self, ignore: bool) {
        self.ignore_fences = ignore;
    }

    /// The stored record of a key (a row or a placeholder), for tests and checkers.
    pub fn record(&self, table: &TableName, key: &str) -> Option<&Record> {
        self.tables.get(table)?.get(key)
    }

    /// Every live row of `table`, in key order (for tests and checkers).
    pub fn rows(&self, table: &TableName) -> Vec<Row> {
        self.tables.get(table).map_or_else(Vec::new, |t| t.iter().filter_map(|(k, r)| r.live(k)).collect())
    }

    /// The live row of `key`.
    pub fn get(&self, table: &TableName, key: &str) -> Option<Row> {
        self.record(table, key).and_then(|r| r.live(key))
    }

    /// The live rows of `keys`, in the order given.
    pub fn get_many(&self, table: &TableName, keys: &[String]) -> Vec<Option<Row>> {
        keys.iter().map(|k| self.get(table, k)).collect()
    }

    /// Up to `limit` live rows with keys starting with `prefix` (and after `start_after`), in
    /// key order.
    pub fn scan_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<Row> {
        self.prefix_range(table, prefix, start_after).filter_map(|(k, r)| r.live(k)).take(limit).collect()
    }

    /// Every stored key of `table` starting with `prefix` (after `start_after`), in key order.
    fn prefix_range<'a>(
        &'a self,
        table: &TableName,
        prefix: &'a str,
        start_after: Option<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a Record)> + 'a {
        let start = match start_after {
            Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_string()),
            _ => std::ops::Bound::Included(prefix.to_string()),
        };
        self.tables
            .get(table)
            .into_iter()
            .flat_map(move |t| t.range((start.clone(), std::ops::Bound::Unbounded)))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// Like [`Instance::scan_prefix`], placeholders included.
    pub fn export_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<RowState> {
        self.prefix_range(table, prefix, start_after)
            .take(limit)
            .map(|(k, r)| RowState {
                key: k.clone(),
                value: r.value.clone(),
                version: r.version,
                fence: r.fence,
            })
            .collect()
    }

    /// The live row holding `index_key` in `index` of `table`.
    pub fn get_by_index(&self, table: &TableName, index: &str, index_key: &str) -> Option<Row> {
        let key = self.indexes.get(&(table.clone(), index.to_string()))?.get(index_key)?;
        let row = self.get(table, key);
        assert!(row.is_some(), "index {table}.{index} entry {index_key:?} points at absent row {key:?}");
        row
    }

    /// All-or-nothing: applies `ops` in order on an overlay and commits it only if every op
    /// succeeded. A refused transaction leaves the instance exactly as it was.
    pub fn transact(&mut self, ops: &[WriteOp]) -> Result<Vec<WriteResult>, DbError> {
        let mut txn = Txn::new(self);
        let ignore_fences = self.ignore_fences;
        let results = ops
            .iter()
            .enumerate()
            .map(|(i, op)| txn.apply(i, op, ignore_fences))
            .collect::<Result<Vec<_>, _>>()?;
        let Txn { records, index, .. } = txn;
        for ((table, key), record) in records {
            self.tables.entry(table).or_default().insert(key, record);
        }
        for ((table, name, index_key), holder) in index {
            let entries = self.indexes.entry((table, name)).or_default();
            match holder {
                Some(row) => entries.insert(index_key, row),
                None => entries.remove(&index_key),
            };
        }
        self.indexes.retain(|_, entries| !entries.is_empty());
        self.commits += 1;
        Ok(results)
    }

    /// Panics unless the indexes and the records agree: every index entry names a live row
    /// that lists it, every listed entry is in its index, placeholders hold no entries.
    pub fn assert_consistent(&self) {
        for ((table, name), entries) in &self.indexes {
            assert!(!entries.is_empty(), "empty index {table}.{name} kept");
            for (index_key, key) in entries {
                let r = self.record(table, key).unwrap_or_else(|| panic!("{table}.{name}: dangling {key:?}"));
                assert!(r.value.is_some(), "{table}.{name}: entry on placeholder {key:?}");
                assert_eq!(r.index.get(name), Some(index_key), "{table}.{name}: {key:?} does not list it");
            }
        }
        for (table, rows) in &self.tables {
            for (key, r) in rows {
                if r.value.is_some() {
                    assert!(r.version >= 1, "{table}/{key}: live row at version 0");
                } else {
                    assert!(r.index.is_empty(), "{table}/{key}: placeholder with index entries");
                }
                for (name, index_key) in &r.index {
                    let holder =
                        self.indexes.get(&(table.clone(), name.clone())).and_then(|m| m.get(index_key));
                    assert_eq!(holder, Some(key), "{table}/{key}: entry {name}={index_key:?} missing");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(name: &str) -> TableName {
        TableName::new(name).unwrap()
    }

    fn v(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn put(key: &str, value: &str, expect: Expect, fence: u64) -> WriteOp {
        WriteOp::put(&t("users"), key, v(value), expect, fence)
    }

    #[test]
    fn a_new_row_starts_at_version_one_with_the_writers_fence() {
        let mut db = Instance::new();
        assert_eq!(
            db.transact(&[put("u1", "a", Expect::Absent, 3)]),
            Ok(vec![WriteResult::Put { version: 1 }])
        );
        let row = db.get(&t("users"), "u1").unwrap();
        assert_eq!((row.value, row.version, row.fence), (v("a"), 1, 3));
        assert_eq!(db.commits(), 1);
    }

    #[test]
    fn a_write_with_an_older_fence_is_refused_and_a_newer_one_raises_the_fence() {
        let mut db = Instance::new();
        db.transact(&[put("u1", "a", Expect::Any, 5)]).unwrap();
        assert_eq!(
            db.transact(&[put("u1", "stale", Expect::Any, 4)]),
            Err(DbError::Fenced { op_index: 0, row_fence: 5 })
        );
        assert_eq!(
            db.transact(&[put("u1", "same", Expect::Any, 5)]),
            Ok(vec![WriteResult::Put { version: 2 }])
        );
        db.transact(&[put("u1", "new", Expect::Version(2), 9)]).unwrap();
        let row = db.get(&t("users"), "u1").unwrap();
        assert_eq!((row.value, row.version, row.fence), (v("new"), 3, 9));
    }

    #[test]
    fn the_fence_is_checked_before_the_version() {
        let mut db = Instance::new();
        db.transact(&[put("u1", "a", Expect::Any, 5)]).unwrap();
        assert_eq!(
            db.transact(&[put("u1", "b", Expect::Version(7), 1)]),
            Err(DbError::Fenced { op_index: 0, row_fence: 5 })
        );
    }

    #[test]
    fn version_conditions_name_the_failing_op_and_the_actual_version() {
        let mut db = Instance::new();
        db.transact(&[put("a", "1", Expect::Any, 0), put("b", "1", Expect::Any, 0)]).unwrap();
        assert_eq!(
            db.transact(&[put("a", "2", Expect::Version(1), 0), put("b", "2", Expect::Version(9), 0)]),
            Err(DbError::VersionMismatch { op_index: 1, actual: 1 })
        );
        assert_eq!(
            db.transact(&[put("a", "2", Expect::Absent, 0)]),
            Err(DbError::VersionMismatch { op_index: 0, actual: 1 })
        );
        assert_eq!(
            db.transact(&[put("c", "2", Expect::Version(1), 0)]),
            Err(DbError::NotFound { op_index: 0 })
        );
        assert_eq!(db.transact(&[put("c", "2", Expect::Present, 0)]), Err(DbError::NotFound { op_index: 0 }));
        assert_eq!(
            db.transact(&[put("a", "2", Expect::Present, 0)]),
            Ok(vec![WriteResult::Put { version: 2 }])
        );
    }

    #[test]
    fn a_refused_transaction_changes_nothing() {
        let mut db = Instance::new();
        db.transact(&[put("a", "1", Expect::Any, 1).with_index("by_name", Some("ann".into()))]).unwrap();
        let before = db.clone();
        let r = db.transact(&[
            put("a", "2", Expect::Any, 2).with_index("by_name", Some("anna".into())),
            WriteOp::raise_fence(&t("users"), "z", 8),
            put("b", "1", Expect::Absent, 1).with_index("by_name", Some("bob".into())),
            put("a", "3", Expect::Version(1), 2),
        ]);
        assert_eq!(r, Err(DbError::VersionMismatch { op_index: 3, actual: 2 }));
        assert_eq!(db, before);
    }

    #[test]
    fn later_ops_of_a_transaction_see_the_earlier_ones() {
        let mut db = Instance::new();
        let r = db.transact(&[
            put("a", "1", Expect::Absent, 1),
            put("a", "2", Expect::Version(1), 1),
            WriteOp::delete(&t("users"), "a", Expect::Version(2), 1),
            put("a", "4", Expect::Absent, 1),
        ]);
        assert_eq!(
            r,
            Ok(vec![
                WriteResult::Put { version: 1 },
                WriteResult::Put { version: 2 },
                WriteResult::Delete { version: 3, existed: true },
                WriteResult::Put { version: 4 },
            ])
        );
        assert_eq!(db.get(&t("users"), "a").unwrap().version, 4);
    }

    #[test]
    fn a_deleted_row_leaves_a_placeholder_that_keeps_its_fence_and_version() {
        let mut db = Instance::new();
        db.transact(&[put("a", "1", Expect::Any, 4)]).unwrap();
        assert_eq!(
            db.transact(&[WriteOp::delete(&t("users"), "a", Expect::Present, 6)]),
            Ok(vec![WriteResult::Delete { version: 2, existed: true }])
        );
        assert_eq!(db.get(&t("users"), "a"), None);
        assert_eq!(db.scan_prefix(&t("users"), "", None, 10), vec![]);
        assert_eq!(
            db.transact(&[put("a", "late", Expect::Absent, 5)]),
            Err(DbError::Fenced { op_index: 0, row_fence: 6 })
        );
        assert_eq!(
            db.transact(&[put("a", "again", Expect::Absent, 6)]),
            Ok(vec![WriteResult::Put { version: 3 }])
        );
    }

    #[test]
    fn raising_the_fence_of_an_absent_row_shuts_out_the_deposed_owner_for_good() {
        let mut db = Instance::new();
        assert_eq!(
            db.transact(&[WriteOp::raise_fence(&t("users"), "u9", 7)]),
            Ok(vec![WriteResult::RaiseFence { row: None, fence: 7 }])
        );
        assert_eq!(db.get(&t("users"), "u9"), None, "a placeholder reads as absent");
        assert_eq!(
            db.transact(&[put("u9", "old owner", Expect::Absent, 6)]),
            Err(DbError::Fenced { op_index: 0, row_fence: 7 })
        );
        assert_eq!(
            db.transact(&[put("u9", "new owner", Expect::Absent, 7)]),
            Ok(vec![WriteResult::Put { version: 1 }])
        );
    }

    #[test]
    fn raising_the_fence_reads_the_row_and_keeps_its_version() {
        let mut db = Instance::new();
        db.transact(&[put("a", "1", Expect::Any, 1)]).unwrap();
        let r = db.transact(&[WriteOp::raise_fence(&t("users"), "a", 3)]).unwrap();
        let row = Row { key: "a".into(), value: v("1"), version: 1, fence: 3 };
        assert_eq!(r, vec![WriteResult::RaiseFence { row: Some(row), fence: 3 }]);
        assert_eq!(
            db.transact(&[WriteOp::raise_fence(&t("users"), "a", 2)]),
            Err(DbError::Fenced { op_index: 0, row_fence: 3 })
        );
        assert_eq!(
            db.transact(&[put("a", "2", Expect::Version(1), 3)]),
            Ok(vec![WriteResult::Put { version: 2 }])
        );
    }

    #[test]
    fn a_unique_index_maps_a_name_to_one_row() {
        let mut db = Instance::new();
        let users = t("users");
        db.transact(&[put("u1", "ann's", Expect::Absent, 0).with_index("by_name", Some("ann".into()))])
            .unwrap();
        assert_eq!(db.get_by_index(&users, "by_name", "ann").map(|r| r.key), Some("u1".into()));
        assert_eq!(
            db.transact(&[put("u2", "x", Expect::Absent, 0).with_index("by_name", Some("ann".into()))]),
            Err(DbError::UniqueViolation { op_index: 0, index: "by_name".into() })
        );
        // The holder may re-set its own entry, and renaming frees the old name.
        db.transact(&[put("u1", "ann's", Expect::Any, 0).with_index("by_name", Some("ann".into()))]).unwrap();
        db.transact(&[put("u1", "anna's", Expect::Any, 0).with_index("by_name", Some("anna".into()))])
            .unwrap();
        assert_eq!(db.get_by_index(&users, "by_name", "ann"), None);
        db.transact(&[put("u2", "x", Expect::Absent, 0).with_index("by_name", Some("ann".into()))]).unwrap();
        // A put without index updates keeps the entry; clearing and deleting free it.
        db.transact(&[put("u1", "y", Expect::Any, 0)]).unwrap();
        assert_eq!(db.get_by_index(&users, "by_name", "anna").map(|r| r.value), Some(v("y")));
        db.transact(&[put("u1", "y", Expect::Any, 0).with_index("by_name", None)]).unwrap();
        assert_eq!(db.get_by_index(&users, "by_name", "anna"), None);
        db.transact(&[WriteOp::delete(&users, "u2", Expect::Any, 0)]).unwrap();
        assert_eq!(db.get_by_index(&users, "by_name", "ann"), None);
        db.assert_consistent();
    }

    #[test]
    fn an_index_key_can_move_between_rows_inside_one_transaction() {
        let mut db = Instance::new();
        db.transact(&[put("u1", "a", Expect::Any, 0).with_index("by_name", Some("ann".into()))]).unwrap();
        db.transact(&[
            put("u1", "a", Expect::Any, 0).with_index("by_name", None),
            put("u2", "b", Expect::Any, 0).with_index("by_name", Some("ann".into())),
        ])
        .unwrap();
        assert_eq!(db.get_by_index(&t("users"), "by_name", "ann").map(|r| r.key), Some("u2".into()));
        db.assert_consistent();
    }

    #[test]
    fn indexes_and_tables_are_separate_namespaces() {
        let mut db = Instance::new();
        db.transact(&[
            put("u1", "a", Expect::Any, 0).with_index("by_name", Some("ann".into())),
            WriteOp::put(&t("guilds"), "u1", v("g"), Expect::Any, 0)
                .with_index("by_name", Some("ann".into())),
        ])
        .unwrap();
        assert_eq!(db.get(&t("guilds"), "u1").map(|r| r.value), Some(v("g")));
        assert_eq!(db.get_by_index(&t("guilds"), "by_name", "ann").map(|r| r.value), Some(v("g")));
        assert_eq!(db.get_by_index(&t("users"), "by_name", "ann").map(|r| r.value), Some(v("a")));
    }

    #[test]
    fn a_scan_returns_live_rows_of_the_prefix_in_key_order_and_pages() {
        let mut db = Instance::new();
        let ops: Vec<_> =
            ["u/3", "u/1", "v/1", "u/2", "t/9", "u/4"].iter().map(|k| put(k, k, Expect::Any, 0)).collect();
        db.transact(&ops).unwrap();
        db.transact(&[WriteOp::delete(&t("users"), "u/2", Expect::Any, 0)]).unwrap();
        let keys = |rows: Vec<Row>| rows.into_iter().map(|r| r.key).collect::<Vec<_>>();
        let users = t("users");
        assert_eq!(keys(db.scan_prefix(&users, "u/", None, 10)), ["u/1", "u/3", "u/4"]);
        assert_eq!(keys(db.scan_prefix(&users, "u/", None, 2)), ["u/1", "u/3"]);
        assert_eq!(keys(db.scan_prefix(&users, "u/", Some("u/3"), 2)), ["u/4"]);
        assert_eq!(keys(db.scan_prefix(&users, "u/", Some("a"), 1)), ["u/1"]);
        assert_eq!(keys(db.scan_prefix(&users, "u/", Some("z"), 5)), Vec::<String>::new());
        assert_eq!(keys(db.scan_prefix(&users, "", None, 10)), ["t/9", "u/1", "u/3", "u/4", "v/1"]);
        assert_eq!(db.scan_prefix(&t("nothing"), "", None, 10), vec![]);
    }

    #[test]
    fn get_many_answers_in_the_order_asked() {
        let mut db = Instance::new();
        db.transact(&[put("a", "1", Expect::Any, 0), put("b", "2", Expect::Any, 0)]).unwrap();
        let got = db.get_many(&t("users"), &["b".into(), "x".into(), "a".into()]);
        let values: Vec<_> = got.into_iter().map(|r| r.map(|r| r.value)).collect();
        assert_eq!(values, vec![Some(v("2")), None, Some(v("1"))]);
    }

    #[test]
    fn a_guard_passes_on_a_live_row_with_no_newer_fence_and_changes_nothing() {
        let mut db = Instance::new();
        let shards = t("sandtable_shards");
        db.transact(&[WriteOp::put(&shards, "shard/7", v("db-0"), Expect::Absent, 4)]).unwrap();
        let before = db.get(&shards, "shard/7");
        assert_eq!(
            db.transact(&[WriteOp::guard(&shards, "shard/7", 4), put("u1", "a", Expect::Any, 0)]),
            Ok(vec![WriteResult::Guard { version: 1 }, WriteResult::Put { version: 1 }])
        );
        assert_eq!(
            db.transact(&[WriteOp::guard(&shards, "shard/7", 9)]),
            Ok(vec![WriteResult::Guard { version: 1 }])
        );
        assert_eq!(db.get(&shards, "shard/7"), before, "a guard changes neither version nor fence");
    }

    #[test]
    fn a_guard_is_refused_by_a_newer_fence_first_and_by_an_absent_row() {
        let mut db = Instance::new();
        let shards = t("sandtable_shards");
        db.transact(&[WriteOp::put(&shards, "shard/7", v("db-0"), Expect::Absent, 4)]).unwrap();
        db.transact(&[WriteOp::delete(&shards, "shard/7", Expect::Present, 5)]).unwrap();
        let before = db.clone();
        assert_eq!(
            db.transact(&[put("u1", "a", Expect::Any, 0), WriteOp::guard(&shards, "shard/7", 4)]),
            Err(DbError::Fenced { op_index: 1, row_fence: 5 })
        );
        assert_eq!(
            db.transact(&[WriteOp::guard(&shards, "shard/7", 5)]),
            Err(DbError::NotFound { op_index: 0 })
        );
        assert_eq!(
            db.transact(&[WriteOp::guard(&shards, "shard/8", 5)]),
            Err(DbError::NotFound { op_index: 0 })
        );
        assert_eq!(db, before);
    }

    #[test]
    fn a_restore_installs_only_newer_states_and_never_lowers_the_fence() {
        let mut db = Instance::new();
        db.transact(&[put("u1", "a", Expect::Any, 2).with_index("by_name", Some("ann".into()))]).unwrap();
        db.transact(&[put("u1", "b", Expect::Any, 2)]).unwrap();
        let state = |value: Option<&str>, version, fence| RowState {
            key: "u1".into(),
            value: value.map(v),
            version,
            fence,
        };
        let older = WriteOp::restore(&t("users"), state(Some("old"), 1, 7));
        assert_eq!(db.transact(&[older]), Ok(vec![WriteResult::Restore { applied: false }]));
        let row = db.get(&t("users"), "u1").unwrap();
        assert_eq!((row.value, row.version, row.fence), (v("b"), 2, 7), "not newer: only the fence rose");
        let newer = WriteOp::restore(&t("users"), state(Some("new"), 5, 3));
        assert_eq!(db.transact(&[newer]), Ok(vec![WriteResult::Restore { applied: true }]));
        let row = db.get(&t("users"), "u1").unwrap();
        assert_eq!((row.value, row.version, row.fence), (v("new"), 5, 7), "the fence never goes down");
        assert_eq!(
            db.get_by_index(&t("users"), "by_name", "ann"),
            None,
            "restored rows have no index entries"
        );
        let gone = WriteOp::restore(&t("users"), state(None, 6, 8));
        db.transact(&[gone]).unwrap();
        assert_eq!(db.get(&t("users"), "u1"), None);
        assert_eq!(db.record(&t("users"), "u1").map(|r| (r.version, r.fence)), Some((6, 8)));
        db.assert_consistent();
    }

    #[test]
    fn an_export_restored_elsewhere_reproduces_rows_placeholders_and_fences() {
        let mut from = Instance::new();
        from.transact(&[put("u1", "a", Expect::Any, 1), put("u2", "b", Expect::Any, 1)]).unwrap();
        from.transact(&[WriteOp::delete(&t("users"), "u2", Expect::Present, 3)]).unwrap();
        from.transact(&[WriteOp::raise_fence(&t("users"), "u3", 9)]).unwrap();
        from.transact(&[put("v1", "other prefix", Expect::Any, 1)]).unwrap();
        let states = from.export_prefix(&t("users"), "u", None, 10);
        let keys: Vec<_> =
            states.iter().map(|s| (s.key.as_str(), s.value.is_some(), s.version, s.fence)).collect();
        assert_eq!(keys, vec![("u1", true, 1, 1), ("u2", false, 2, 3), ("u3", false, 0, 9)]);
        assert_eq!(from.export_prefix(&t("users"), "u", Some("u1"), 1).len(), 1);
        let mut to = Instance::new();
        let ops: Vec<_> = states.into_iter().map(|s| WriteOp::restore(&t("users"), s)).collect();
        to.transact(&ops).unwrap();
        to.transact(&ops).unwrap();
        assert_eq!(
            to.export_prefix(&t("users"), "u", None, 10),
            from.export_prefix(&t("users"), "u", None, 10)
        );
        assert_eq!(
            to.transact(&[put("u3", "late", Expect::Any, 8)]),
            Err(DbError::Fenced { op_index: 0, row_fence: 9 }),
            "a copied placeholder keeps the deposed owner out"
        );
    }

    #[test]
    fn the_planted_no_fence_check_bug_accepts_stale_fences() {
        let mut db = Instance::new();
        db.transact(&[put("u1", "a", Expect::Any, 5)]).unwrap();
        db.set_ignore_fences(true);
        assert_eq!(
            db.transact(&[put("u1", "stale", Expect::Any, 1)]),
            Ok(vec![WriteResult::Put { version: 2 }])
        );
    }

    /// One generated operation over a small key space, so that ops collide often.
    fn arb_op() -> impl Strategy<Value = WriteOp> {
        let table = prop_oneof![Just(t("a")), Just(t("b"))];
        let key = prop_oneof![Just("k1"), Just("k2"), Just("k3")].prop_map(str::to_string);
        let expect = prop_oneof![
            Just(Expect::Any),
            Just(Expect::Absent),
            Just(Expect::Present),
            (0u64..4).prop_map(Expect::Version),
        ];
        let index_key = proptest::option::of(prop_oneof![Just("n1"), Just("n2")].prop_map(str::to_string));
        let fence = 0u64..6;
        prop_oneof![
            (
                table.clone(),
                key.clone(),
                0u8..3,
                expect.clone(),
                fence.clone(),
                proptest::option::of(index_key)
            )
                .prop_map(|(table, key, value, expect, fence, index)| {
                    let op = WriteOp::put(&table, key, Bytes::from(vec![value]), expect, fence);
                    match index {
                        Some(k) => op.with_index("by_name", k),
                        None => op,
                    }
                }),
            (table.clone(), key.clone(), expect, fence.clone())
                .prop_map(|(table, key, expect, fence)| WriteOp::delete(&table, key, expect, fence)),
            (table.clone(), key.clone(), fence.clone())
                .prop_map(|(table, key, fence)| WriteOp::raise_fence(&table, key, fence)),
            (table.clone(), key.clone(), fence.clone())
                .prop_map(|(table, key, fence)| WriteOp::guard(&table, key, fence)),
            (table, key, proptest::option::of(0u8..3), 0u64..6, fence).prop_map(
                |(table, key, value, version, fence)| {
                    let value = value.map(|b| Bytes::from(vec![b]));
                    WriteOp::restore(&table, RowState { key, value, version, fence })
                }
            ),
        ]
    }

    /// `(version, fence)` of every stored key.
    fn marks(db: &Instance) -> BTreeMap<(TableName, String), (u64, u64)> {
        db.tables
            .iter()
            .flat_map(|(t, rows)| {
                rows.iter().map(move |(k, r)| ((t.clone(), k.clone()), (r.version, r.fence)))
            })
            .collect()
    }

    proptest! {
        #[test]
        fn random_transactions_keep_the_invariants(
            txns in proptest::collection::vec(proptest::collection::vec(arb_op(), 1..5), 1..40)
        ) {
            let mut db = Instance::new();
            for ops in &txns {
                let before = db.clone();
                let before_marks = marks(&db);
                match db.transact(ops) {
                    Err(e) => {
                        prop_assert_eq!(&db, &before, "refused with {:?} but changed the instance", e);
                    }
                    Ok(results) => {
                        prop_assert_eq!(results.len(), ops.len());
                        prop_assert_eq!(db.commits(), before.commits() + 1);
                        for op in ops {
                            let r = db.record(op.table(), op.key()).expect("a written key is stored");
                            // The op succeeded, so its fence was at least the row's then; the
                            // row's fence now is that of the last op on the key.
                            prop_assert!(r.fence >= before.record(op.table(), op.key()).map_or(0, |r| r.fence));
                        }
                    }
                }
                for (key, (version, fence)) in before_marks {
                    let (v2, f2) = marks(&db)[&key];
                    prop_assert!(v2 >= version, "version of {:?} went down", key);
                    prop_assert!(f2 >= fence, "fence of {:?} went down", key);
                }
                db.assert_consistent();
            }
        }
    }
}
