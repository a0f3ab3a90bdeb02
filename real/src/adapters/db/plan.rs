//! The port's `transact` semantics over the stored state of the keys one transaction touches:
//! what a backend must read first ([`Needs`]), what the operations answer and what must be
//! written back ([`evaluate`]). Pure: no SQL, no I/O. The SQL backends load a [`Snapshot`]
//! under their transaction's locks, evaluate, and write the [`Outcome`]'s changes before
//! committing (or roll back on an error), so the checks and the writes see one state.
//!
//! This is the adapters' own reading of the `Db` module doc (the simulator's model is a
//! separate implementation; the conformance suite compares the two).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use engine::env::{DbError, Expect, Row, TableName, WriteOp, WriteResult};

/// `(table, row key)`.
pub(crate) type RowKey = (TableName, String);
/// `(table, index name, index key)`.
pub(crate) type IndexKey = (TableName, String, String);

/// What is stored under one key: a row (`value: Some`) or a placeholder (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub value: Option<Bytes>,
    pub version: u64,
    pub fence: u64,
}

impl Stored {
    /// A placeholder at version 0 and fence 0: reads, checks and writes exactly as a key with
    /// nothing stored.
    pub const NOTHING: Stored = Stored { value: None, version: 0, fence: 0 };
}

/// What a backend must load, under its locks, before [`evaluate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    /// Every key an operation names, sorted (the order to lock them in), each once.
    pub rows: Vec<RowKey>,
    /// The keys only [`WriteOp::Guard`]s name (a backend may lock them shared).
    pub guarded_only: BTreeSet<RowKey>,
    /// Whether the index entries of the touched rows must be loaded (some operation may
    /// clear or replace them: a `Put` with index updates, a `Delete`, a `Restore`).
    pub row_entries: bool,
    /// Index keys some `Put` claims: their holders must be loaded.
    pub claims: Vec<IndexKey>,
}

impl Needs {
    pub fn of(ops: &[WriteOp]) -> Needs {
        let mut rows = BTreeSet::new();
        let mut written = BTreeSet::new();
        let mut claims = BTreeSet::new();
        let mut row_entries = false;
        for op in ops {
            let rk = (op.table().clone(), op.key().to_string());
            rows.insert(rk.clone());
            match op {
                WriteOp::Guard { .. } => {}
                WriteOp::Put { table, index, .. } => {
                    written.insert(rk);
                    if !index.is_empty() {
                        row_entries = true;
                    }
                    for (name, ikey) in index {
                        if let Some(k) = ikey {
                            claims.insert((table.clone(), name.clone(), k.clone()));
                        }
                    }
                }
                WriteOp::Delete { .. } | WriteOp::Restore { .. } => {
                    written.insert(rk);
                    row_entries = true;
                }
                WriteOp::RaiseFence { .. } => {
                    written.insert(rk);
                }
            }
        }
        let guarded_only = rows.difference(&written).cloned().collect();
        Needs {
            rows: rows.into_iter().collect(),
            guarded_only,
            row_entries,
            claims: claims.into_iter().collect(),
        }
    }
}

/// The stored state a transaction starts from: the touched keys that exist, and the index
/// entries [`Needs`] asked for (of the touched rows, and the holders of claimed keys).
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub rows: BTreeMap<RowKey, Stored>,
    /// Index key -> the row key holding it.
    pub entries: BTreeMap<IndexKey, String>,
}

/// What a successful transaction answers and must write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub results: Vec<WriteResult>,
    /// Keys whose stored state changed (or that are stored for the first time), with it.
    pub rows: Vec<(RowKey, Stored)>,
    /// Index entries to remove.
    pub unindex: Vec<IndexKey>,
    /// Index entries to create or point at another row.
    pub index: Vec<(IndexKey, String)>,
}

impl Outcome {
    /// True if committing would change nothing (e.g. only guards, or unapplied restores).
    pub fn is_read_only(&self) -> bool {
        self.rows.is_empty() && self.unindex.is_empty() && self.index.is_empty()
    }
}

/// The working state of an evaluation.
struct Work {
    rows: BTreeMap<RowKey, Option<Stored>>,
    /// Row -> index name -> index key, for the touched rows.
    listed: BTreeMap<RowKey, BTreeMap<String, String>>,
    holders: BTreeMap<IndexKey, Option<String>>,
}

impl Work {
    fn holder(&self, table: &TableName, name: &str, ikey: &str) -> Option<&String> {
        self.holders.get(&(table.clone(), name.to_string(), ikey.to_string()))?.as_ref()
    }

    fn set_holder(&mut self, table: &TableName, name: &str, ikey: &str, row: Option<String>) {
        self.holders.insert((table.clone(), name.to_string(), ikey.to_string()), row);
    }

    /// Clears every index entry of `rk`.
    fn unlist_all(&mut self, rk: &RowKey) {
        for (name, ikey) in self.listed.remove(rk).unwrap_or_default() {
            self.set_holder(&rk.0, &name, &ikey, None);
        }
    }
}

fn expect_ok(op_index: usize, expect: Expect, live: Option<u64>) -> Result<(), DbError> {
    match expect {
        Expect::Any => Ok(()),
        Expect::Absent => match live {
            None => Ok(()),
            Some(actual) => Err(DbError::VersionMismatch { op_index, actual }),
        },
        Expect::Present => live.map(drop).ok_or(DbError::NotFound { op_index }),
        Expect::Version(v) => match live {
            None => Err(DbError::NotFound { op_index }),
            Some(actual) if actual == v => Ok(()),
            Some(actual) => Err(DbError::VersionMismatch { op_index, actual }),
        },
    }
}

/// Applies `ops` in order over `snap`; every check and effect as the `Db` module doc states.
/// `snap` must hold what [`Needs::of`]`(ops)` asked for.
pub(crate) fn evaluate(ops: &[WriteOp], snap: &Snapshot) -> Result<Outcome, DbError> {
    let needs = Needs::of(ops);
    let touched: BTreeSet<&RowKey> = needs.rows.iter().collect();
    let mut w = Work {
        rows: needs.rows.iter().map(|rk| (rk.clone(), snap.rows.get(rk).cloned())).collect(),
        listed: BTreeMap::new(),
        holders: snap.entries.iter().map(|(ik, k)| (ik.clone(), Some(k.clone()))).collect(),
    };
    for ((table, name, ikey), key) in &snap.entries {
        let rk = (table.clone(), key.clone());
        if touched.contains(&rk) {
            w.listed.entry(rk).or_default().insert(name.clone(), ikey.clone());
        }
    }
    let initial_holders = w.holders.clone();
    let mut results = Vec::with_capacity(ops.len());
    for (op_index, op) in ops.iter().enumerate() {
        let rk = (op.table().clone(), op.key().to_string());
        let current = w.rows.get(&rk).cloned().flatten();
        let row_fence = current.as_ref().map_or(0, |s| s.fence);
        let version = current.as_ref().map_or(0, |s| s.version);
        let live = current.as_ref().filter(|s| s.value.is_some()).map(|s| s.version);
        if !matches!(op, WriteOp::Restore { .. }) && op.fence() < row_fence {
            return Err(DbError::Fenced { op_index, row_fence });
        }
        let result = match op {
            WriteOp::Put { value, expect, index, fence, .. } => {
                expect_ok(op_index, *expect, live)?;
                for (name, ikey) in index {
                    if let Some(k) = ikey {
                        if w.holder(&rk.0, name, k).is_some_and(|h| *h != rk.1) {
                            return Err(DbError::UniqueViolation { op_index, index: name.clone() });
                        }
                    }
                    let listed = w.listed.entry(rk.clone()).or_default();
                    let old = match ikey {
                        Some(k) => listed.insert(name.clone(), k.clone()),
                        None => listed.remove(name),
                    };
                    if let Some(old) = old {
                        w.set_holder(&rk.0, name, &old, None);
                    }
                    if let Some(k) = ikey {
                        w.set_holder(&rk.0, name, k, Some(rk.1.clone()));
                    }
                }
                let stored = Stored { value: Some(value.clone()), version: version + 1, fence: *fence };
                w.rows.insert(rk, Some(stored));
                WriteResult::Put { version: version + 1 }
            }
            WriteOp::Delete { expect, fence, .. } => {
                expect_ok(op_index, *expect, live)?;
                w.unlist_all(&rk);
                w.rows.insert(rk, Some(Stored { value: None, version: version + 1, fence: *fence }));
                WriteResult::Delete { version: version + 1, existed: live.is_some() }
            }
            WriteOp::RaiseFence { fence, .. } => {
                let value = current.and_then(|s| s.value);
                let row = value.clone().map(|value| Row { key: rk.1.clone(), value, version, fence: *fence });
                w.rows.insert(rk, Some(Stored { value, version, fence: *fence }));
                WriteResult::RaiseFence { row, fence: *fence }
            }
            WriteOp::Guard { .. } => match live {
                Some(version) => WriteResult::Guard { version },
                None => return Err(DbError::NotFound { op_index }),
            },
            WriteOp::Restore { value, version: restored, fence, .. } => {
                // A max-merge: the fence always (so even a version-0 placeholder, a fence
                // raised on a key never written, is copied), the rest only if newer.
                let applied = *restored > version;
                let fence = (*fence).max(row_fence);
                let stored = if applied {
                    w.unlist_all(&rk);
                    Stored { value: value.clone(), version: *restored, fence }
                } else {
                    Stored { value: current.and_then(|s| s.value), version, fence }
                };
                w.rows.insert(rk, Some(stored));
                WriteResult::Restore { applied }
            }
        };
        results.push(result);
    }
    let rows = w
        .rows
        .into_iter()
        .filter_map(|(rk, now)| {
            let now = now?;
            (snap.rows.get(&rk) != Some(&now)).then_some((rk, now))
        })
        .collect();
    let mut unindex = Vec::new();
    let mut index = Vec::new();
    for (ik, now) in w.holders {
        let before = initial_holders.get(&ik).cloned().flatten();
        match (before, now) {
            (Some(_), None) => unindex.push(ik),
            (before, Some(k)) if before.as_ref() != Some(&k) => index.push((ik, k)),
            _ => {}
        }
    }
    Ok(Outcome { results, rows, unindex, index })
}

/// The exclusive upper bound of the keys starting with `prefix` in byte order: the prefix
/// with its last byte below 0xFF incremented (and what follows it dropped); `None` if every
/// key is at least the prefix (an empty prefix, or only 0xFF bytes).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TableName {
        TableName::new(s).unwrap()
    }

    fn stored(v: Option<&str>, version: u64, fence: u64) -> Stored {
        Stored { value: v.map(|v| Bytes::copy_from_slice(v.as_bytes())), version, fence }
    }

    #[test]
    fn needs_lists_touched_rows_sorted_once_and_guard_only_keys() {
        let u = t("u");
        let ops = vec![
            WriteOp::put(&u, "b", Bytes::new(), Expect::Any, 1).with_index("by", Some("n".into())),
            WriteOp::Guard { table: t("s"), key: "g".into(), fence: 1 },
            WriteOp::raise_fence(&u, "a", 1),
            WriteOp::put(&u, "b", Bytes::new(), Expect::Any, 1),
        ];
        let n = Needs::of(&ops);
        let keys: Vec<_> = n.rows.iter().map(|(t, k)| format!("{t}/{k}")).collect();
        assert_eq!(keys, ["s/g", "u/a", "u/b"]);
        assert_eq!(n.guarded_only.len(), 1);
        assert!(n.row_entries);
        assert_eq!(n.claims, vec![(u, "by".to_string(), "n".to_string())]);
        assert!(!Needs::of(&[WriteOp::raise_fence(&t("u"), "a", 1)]).row_entries);
    }

    #[test]
    fn only_changed_state_is_written() {
        let u = t("u");
        let mut snap = Snapshot::default();
        snap.rows.insert((u.clone(), "a".into()), stored(Some("x"), 3, 5));
        // Raising to the same fence changes nothing; an absent key gets a placeholder.
        let out =
            evaluate(&[WriteOp::raise_fence(&u, "a", 5), WriteOp::raise_fence(&u, "b", 0)], &snap).unwrap();
        assert_eq!(out.rows, vec![((u.clone(), "b".to_string()), stored(None, 0, 0))]);
        let guard = WriteOp::Guard { table: u.clone(), key: "a".into(), fence: 6 };
        let out = evaluate(&[guard], &snap).unwrap();
        assert_eq!(out.results, vec![WriteResult::Guard { version: 3 }]);
        assert!(out.is_read_only());
    }

    #[test]
    fn a_restore_never_fails_merges_the_fence_and_applies_only_newer_versions() {
        let u = t("u");
        let mut snap = Snapshot::default();
        snap.rows.insert((u.clone(), "a".into()), stored(Some("x"), 3, 9));
        snap.entries.insert((u.clone(), "by".into(), "n".into()), "a".into());
        let restore = |version, fence| WriteOp::Restore {
            table: u.clone(),
            key: "a".into(),
            value: None,
            version,
            fence,
        };
        let out = evaluate(&[restore(3, 1)], &snap).unwrap();
        assert_eq!(out.results, vec![WriteResult::Restore { applied: false }]);
        assert!(out.is_read_only());
        let out = evaluate(&[restore(3, 12)], &snap).unwrap();
        assert_eq!(out.results, vec![WriteResult::Restore { applied: false }]);
        assert_eq!(
            out.rows,
            vec![((u.clone(), "a".to_string()), stored(Some("x"), 3, 12))],
            "only the fence rose"
        );
        assert!(out.unindex.is_empty());
        let out = evaluate(&[restore(4, 1)], &snap).unwrap();
        assert_eq!(out.results, vec![WriteResult::Restore { applied: true }]);
        assert_eq!(out.rows, vec![((u.clone(), "a".to_string()), stored(None, 4, 9))]);
        assert_eq!(out.unindex, vec![(u.clone(), "by".to_string(), "n".to_string())]);
        // A fence-only placeholder (version 0) is copied by its fence.
        let fresh = WriteOp::Restore { table: u.clone(), key: "b".into(), value: None, version: 0, fence: 7 };
        let out = evaluate(&[fresh], &snap).unwrap();
        assert_eq!(out.results, vec![WriteResult::Restore { applied: false }]);
        assert_eq!(out.rows, vec![((u, "b".to_string()), stored(None, 0, 7))]);
    }

    #[test]
    fn index_changes_are_net_of_the_whole_transaction() {
        let u = t("u");
        let mut snap = Snapshot::default();
        snap.rows.insert((u.clone(), "a".into()), stored(Some("x"), 1, 0));
        snap.entries.insert((u.clone(), "by".into(), "n".into()), "a".into());
        let ops = vec![
            WriteOp::put(&u, "a", Bytes::new(), Expect::Any, 0).with_index("by", None),
            WriteOp::put(&u, "b", Bytes::new(), Expect::Any, 0).with_index("by", Some("n".into())),
        ];
        let out = evaluate(&ops, &snap).unwrap();
        assert!(out.unindex.is_empty());
        assert_eq!(out.index, vec![((u.clone(), "by".to_string(), "n".to_string()), "b".to_string())]);
        let clash = WriteOp::put(&u, "c", Bytes::new(), Expect::Any, 0).with_index("by", Some("n".into()));
        assert_eq!(
            evaluate(&[clash], &snap),
            Err(DbError::UniqueViolation { op_index: 0, index: "by".into() })
        );
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
