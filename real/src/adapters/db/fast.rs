//! The fast path of `transact`: the common fenced update, in as few statements as the raw SQL
//! for it would take.
//!
//! A transaction qualifies when every op is a `Put` with `Expect::Version(v)` or
//! `Expect::Absent` and no index updates, a `Guard`, or a `Delete` with `Expect::Present` or
//! `Expect::Version(v)`, on distinct keys. A `Delete` writes the placeholder over the live row
//! (`v = NULL, version = version + 1`, the new fence; its fence, and its version if expected,
//! checked in the `WHERE`) and removes the row's index entries: its answer is the new version,
//! `existed: true`. On SQLite a read of the live row comes first and gives the version (the
//! statements are calls into the library, not round trips); on MariaDB the `UPDATE` alone does
//! it, leaving the new version in `LAST_INSERT_ID`, which the server's reply to the statement
//! carries (one round trip instead of a locking read and an update). A deleted key is absent,
//! so a miss (no live row, a higher fence, another version) goes to the general path, which
//! names the error. Each versioned `Put`
//! becomes one conditional `UPDATE` (`WHERE version = v AND fence <= f AND v IS NOT NULL`: the
//! fence check, the version check and the presence check at once), each creating `Put` one
//! upsert that inserts the row or writes over a placeholder its fence allows (continuing the
//! placeholder's version) and returns the new version, and each `Guard` one conditional read.
//! If every statement hit (one row updated; one row read), the answers are known without
//! reading anything else (`Put` -> `v + 1` or the version returned, `Guard` -> the version
//! read) and the transaction commits.
//! If any missed, the engine rolls back (nothing of it is kept) and runs the general path,
//! which reads the rows under its locks and names the exact error — or succeeds, if the
//! rows changed in between: both answers are linearizable at the general path's moment.
//!
//! A single-`Put` transaction (one `Update` step) needs no explicit transaction at all: its
//! `UPDATE` commits by itself (autocommit), so it costs one statement, like the raw SQL it
//! replaces.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use engine::env::{Expect, WriteOp, WriteResult};

use super::sql::{Dialect, Param, Stmt};

/// One statement of the fast path, for the op at `op_index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Must update exactly one row; the op's answer is `Put { version: new_version }`.
    Update { op_index: usize, stmt: Stmt, new_version: u64 },
    /// Must return one row (its `version`); the op's answer is `Guard { version }`.
    Probe { op_index: usize, stmt: Stmt },
    /// `probe` must return one row (its `version`), then `clear` must update exactly one row
    /// and `unindex` removes its index entries (any number); the op's answer is
    /// `Delete { version: version + 1, existed: true }`. SQLite's form of a `Delete`.
    Delete { op_index: usize, probe: Stmt, clear: Stmt, unindex: Stmt },
    /// `stmt` inserts the row or writes over a placeholder its fence allows, and tells which:
    /// the op's answer is `Put { version }` with the row's new version, which the statement
    /// returns (`RETURNING` on SQLite, `LAST_INSERT_ID` on MariaDB); a refusal (a live row, a
    /// higher fence) is a miss. A `Put` with `Expect::Absent`.
    Create { op_index: usize, stmt: Stmt },
    /// `clear` must update exactly one row, leaving its new version in `LAST_INSERT_ID` (the
    /// statement's reply carries it), then `unindex` removes its index entries; the op's answer
    /// is `Delete { version: LAST_INSERT_ID, existed: true }`. MariaDB's form of a `Delete`.
    Clear { op_index: usize, clear: Stmt, unindex: Stmt },
}

/// The largest version a fast-path `Delete` clears or a `Create` writes over: its next
/// version must fit.
const VERSION_BEFORE_MAX: u64 = u64::MAX - 1;

/// The MariaDB session variable a `Create` keeps its decision in while it assigns the columns.
const HIT: &str = "@sandtable_create_hit";

/// The fast path's statements for `ops`, in key order (the order to lock rows in), or `None`
/// if the transaction does not qualify.
pub(crate) fn plan(d: Dialect, ops: &[WriteOp]) -> Option<Vec<Step>> {
    let mut keys = BTreeSet::new();
    let mut steps = Vec::with_capacity(ops.len());
    for (op_index, op) in ops.iter().enumerate() {
        if !keys.insert((op.table().clone(), op.key().to_string())) {
            return None;
        }
        let (table, key) = (op.table().as_str(), op.key());
        match op {
            WriteOp::Put { value, expect: Expect::Version(v), fence, index, .. } if index.is_empty() => {
                let new_version = v.checked_add(1)?;
                let stmt = Stmt {
                    sql: "UPDATE sandtable_rows SET v = ?, version = ?, fence = ? \
                          WHERE tbl = ? AND k = ? AND version = ? AND fence <= ? AND v IS NOT NULL"
                        .to_string(),
                    params: vec![
                        Param::Value(Some(value.clone())),
                        Param::U64(new_version),
                        Param::U64(*fence),
                        Param::text(table),
                        Param::text(key),
                        Param::U64(*v),
                        Param::U64(*fence),
                    ],
                };
                steps.push((
                    (table.to_string(), key.to_string()),
                    Step::Update { op_index, stmt, new_version },
                ));
            }
            WriteOp::Put { value, expect: Expect::Absent, fence, index, .. } if index.is_empty() => {
                // A create: one upsert. It inserts the row (version 1) if the key has none,
                // writes over a placeholder the fence allows (a deleted row, or the fence an
                // owner raised before the object existed: its version carries on), and leaves
                // a live row or a higher fence alone (a miss: the general path names the
                // error). Unlike a locking read of the absent key, it holds no gap lock, so
                // concurrent creates of neighbouring keys never deadlock; unlike an `INSERT
                // IGNORE` then an `UPDATE`, it takes the existing row's exclusive lock at once,
                // so concurrent creators of one key never deadlock upgrading a shared lock.
                let sql = match d {
                    // `RETURNING` gives a row only if the row was inserted or updated.
                    Dialect::Sqlite => "INSERT INTO sandtable_rows (tbl, k, v, version, fence) \
                         VALUES (?, ?, ?, ?, ?) ON CONFLICT (tbl, k) DO UPDATE \
                         SET v = excluded.v, version = version + 1, fence = excluded.fence \
                         WHERE v IS NULL AND fence <= excluded.fence AND version <= ? \
                         RETURNING version"
                        .to_string(),
                    // The outcome is told by `LAST_INSERT_ID`, which the statement's reply
                    // carries: an insert sets it to 1; a write over the placeholder to the new
                    // version; a refusal to 0 (the version is kept: `+ version`). The
                    // assignments run left to right on the row as they go, so the decision is
                    // taken once, before any column changes, into a session variable.
                    Dialect::MariaDb => format!(
                        "INSERT INTO sandtable_rows (tbl, k, v, version, fence) \
                         VALUES (?, ?, ?, LAST_INSERT_ID(?), ?) ON DUPLICATE KEY UPDATE \
                         fence = IF(({HIT} := (v IS NULL AND fence <= VALUES(fence) AND version <= ?)), \
                                    VALUES(fence), fence), \
                         version = LAST_INSERT_ID(IF({HIT}, version + 1, 0)) + IF({HIT}, 0, version), \
                         v = IF({HIT}, VALUES(v), v)"
                    ),
                };
                let stmt = Stmt {
                    sql,
                    params: vec![
                        Param::text(table),
                        Param::text(key),
                        Param::Value(Some(value.clone())),
                        Param::U64(1),
                        Param::U64(*fence),
                        Param::U64(VERSION_BEFORE_MAX),
                    ],
                };
                steps.push(((table.to_string(), key.to_string()), Step::Create { op_index, stmt }));
            }
            WriteOp::Delete { expect, fence, .. } => {
                let version = match expect {
                    Expect::Present => None,
                    Expect::Version(v) => Some(*v),
                    Expect::Any | Expect::Absent => return None,
                };
                let mut params = vec![Param::text(table), Param::text(key), Param::U64(*fence)];
                let and_version = match version {
                    Some(v) => {
                        params.push(Param::U64(v));
                        " AND version = ?"
                    }
                    None => "",
                };
                let unindex = Stmt {
                    sql: "DELETE FROM sandtable_index WHERE tbl = ? AND k = ?".to_string(),
                    params: vec![Param::text(table), Param::text(key)],
                };
                let step = match d {
                    Dialect::Sqlite => Step::Delete {
                        op_index,
                        probe: Stmt {
                            sql: format!(
                                "SELECT version FROM sandtable_rows \
                                 WHERE tbl = ? AND k = ? AND fence <= ? AND v IS NOT NULL{and_version}"
                            ),
                            params,
                        },
                        clear: Stmt {
                            sql: "UPDATE sandtable_rows SET v = NULL, version = version + 1, fence = ? \
                                  WHERE tbl = ? AND k = ? AND v IS NOT NULL"
                                .to_string(),
                            params: vec![Param::U64(*fence), Param::text(table), Param::text(key)],
                        },
                        unindex,
                    },
                    Dialect::MariaDb => {
                        // Assignments run left to right on the row as read, so the new version
                        // is the old one + 1; the bound keeps `version + 1` in range (a row at
                        // the last version misses, and the general path refuses it).
                        params.insert(0, Param::U64(*fence));
                        params.push(Param::U64(VERSION_BEFORE_MAX));
                        Step::Clear {
                            op_index,
                            clear: Stmt {
                                sql: format!(
                                    "UPDATE sandtable_rows \
                                     SET v = NULL, fence = ?, version = LAST_INSERT_ID(version + 1) \
                                     WHERE tbl = ? AND k = ? AND fence <= ? AND v IS NOT NULL{and_version} \
                                     AND version <= ?"
                                ),
                                params,
                            },
                            unindex,
                        }
                    }
                };
                steps.push(((table.to_string(), key.to_string()), step));
            }
            WriteOp::Guard { fence, .. } => {
                let lock = match d {
                    Dialect::Sqlite => "",
                    Dialect::MariaDb => " LOCK IN SHARE MODE",
                };
                let stmt = Stmt {
                    sql: format!(
                        "SELECT version FROM sandtable_rows \
                         WHERE tbl = ? AND k = ? AND fence <= ? AND v IS NOT NULL{lock}"
                    ),
                    params: vec![Param::text(table), Param::text(key), Param::U64(*fence)],
                };
                steps.push(((table.to_string(), key.to_string()), Step::Probe { op_index, stmt }));
            }
            _ => return None,
        }
    }
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    Some(steps.into_iter().map(|(_, s)| s).collect())
}

/// How `transact` attempts went (a retried call counts each attempt): how many the fast path answered (`hits`), how many it tried and
/// handed to the general path (`misses`: a step missed), and how many did not qualify for it
/// (`general`). Counted since the adapter opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPathCounts {
    pub hits: u64,
    pub misses: u64,
    pub general: u64,
    /// Time the hits took in all, from the first statement to the commit's answer, in µs.
    pub hit_us: u64,
}

impl FastPathCounts {
    /// What was counted after `before` (an earlier reading of the same counters).
    pub fn since(&self, before: &FastPathCounts) -> FastPathCounts {
        FastPathCounts {
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            general: self.general - before.general,
            hit_us: self.hit_us - before.hit_us,
        }
    }
}

/// The counters behind [`FastPathCounts`].
#[derive(Debug, Default)]
pub(crate) struct FastPathCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    general: AtomicU64,
    hit_us: AtomicU64,
}

impl FastPathCounters {
    /// Counts one attempt: `planned` if it qualified, `hit` if the fast path answered it (in
    /// `took`).
    pub fn count(&self, planned: bool, hit: bool, took: std::time::Duration) {
        if planned && hit {
            let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
            self.hit_us.fetch_add(us, Ordering::Relaxed);
        }
        let counter = match (planned, hit) {
            (true, true) => &self.hits,
            (true, false) => &self.misses,
            (false, _) => &self.general,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> FastPathCounts {
        FastPathCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            general: self.general.load(Ordering::Relaxed),
            hit_us: self.hit_us.load(Ordering::Relaxed),
        }
    }
}

/// Collects the answers of a fast path whose every step hit, in op order.
#[derive(Debug)]
pub(crate) struct Answers(Vec<Option<WriteResult>>);

impl Answers {
    pub fn new(ops: usize) -> Answers {
        Answers(vec![None; ops])
    }

    pub fn set(&mut self, op_index: usize, r: WriteResult) {
        self.0[op_index] = Some(r);
    }

    /// Sets the answer of the `Delete` at `op_index` of a live row read at `version`; false
    /// (a miss: the general path decides) if `version + 1` overflows.
    pub fn deleted(&mut self, op_index: usize, version: u64) -> bool {
        let Some(next) = version.checked_add(1) else { return false };
        self.set(op_index, WriteResult::Delete { version: next, existed: true });
        true
    }

    /// Sets the answer of the `Clear` at `op_index` whose row's new version is `version`;
    /// false (a miss: the general path decides) for 0, which no cleared row has.
    pub fn cleared(&mut self, op_index: usize, version: u64) -> bool {
        if version == 0 {
            return false;
        }
        self.set(op_index, WriteResult::Delete { version, existed: true });
        true
    }

    /// Sets the answer of the `Create` at `op_index` whose row's new version is `version`;
    /// false (a miss: the general path decides) for 0, a refusal.
    pub fn created(&mut self, op_index: usize, version: u64) -> bool {
        if version == 0 {
            return false;
        }
        self.set(op_index, WriteResult::Put { version });
        true
    }

    /// Every op's answer (every op has exactly one step, so all are set once all hit).
    pub fn finish(self) -> Option<Vec<WriteResult>> {
        self.0.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use engine::env::TableName;

    #[test]
    fn only_versioned_puts_and_guards_on_distinct_keys_qualify() {
        let t = TableName::new("t").unwrap();
        let put = |k: &str, e| WriteOp::put(&t, k, Bytes::new(), e, 1);
        let guard = WriteOp::Guard { table: TableName::new("s").unwrap(), key: "g".into(), fence: 1 };
        let steps = plan(
            Dialect::MariaDb,
            &[put("b", Expect::Version(1)), guard.clone(), put("a", Expect::Version(2))],
        )
        .unwrap();
        let order: Vec<usize> = steps
            .iter()
            .map(|s| match s {
                Step::Update { op_index, .. }
                | Step::Probe { op_index, .. }
                | Step::Delete { op_index, .. }
                | Step::Create { op_index, .. }
                | Step::Clear { op_index, .. } => *op_index,
            })
            .collect();
        assert_eq!(order, [1, 2, 0], "locked in key order");
        assert!(plan(Dialect::Sqlite, &[put("a", Expect::Any)]).is_none());
        let create = plan(Dialect::MariaDb, &[put("a", Expect::Absent)]).unwrap();
        let [Step::Create { op_index: 0, stmt }] = &create[..] else { panic!("{create:?}") };
        assert!(stmt.sql.contains("ON DUPLICATE KEY UPDATE"), "one upsert: {}", stmt.sql);
        assert!(
            stmt.sql.contains("(v IS NULL AND fence <= VALUES(fence) AND version <= ?)"),
            "only a placeholder the fence allows is written over: {}",
            stmt.sql
        );
        assert_eq!(stmt.params.len(), stmt.sql.matches('?').count());
        let sqlite = plan(Dialect::Sqlite, &[put("a", Expect::Absent)]).unwrap();
        let [Step::Create { stmt, .. }] = &sqlite[..] else { panic!("{sqlite:?}") };
        assert!(
            stmt.sql
                .contains("WHERE v IS NULL AND fence <= excluded.fence AND version <= ? RETURNING version"),
            "{}",
            stmt.sql
        );
        assert_eq!(stmt.params.len(), stmt.sql.matches('?').count());
        assert!(
            plan(Dialect::Sqlite, &[put("a", Expect::Version(1)), put("a", Expect::Version(2))]).is_none()
        );
        assert!(plan(Dialect::Sqlite, &[put("a", Expect::Version(u64::MAX))]).is_none());
        let indexed = put("a", Expect::Version(1)).with_index("i", None);
        assert!(plan(Dialect::Sqlite, &[indexed]).is_none());
        assert!(matches!(plan(Dialect::Sqlite, &[guard]).unwrap()[..], [Step::Probe { op_index: 0, .. }]));
    }

    #[test]
    fn a_delete_of_a_present_or_versioned_row_qualifies_and_others_do_not() {
        let t = TableName::new("t").unwrap();
        let del = |k: &str, e| WriteOp::delete(&t, k, e, 3);
        let steps =
            plan(Dialect::MariaDb, &[del("p", Expect::Present), del("v", Expect::Version(7))]).unwrap();
        let [Step::Clear { op_index: 0, clear: p, unindex }, Step::Clear { op_index: 1, clear: v, .. }] =
            &steps[..]
        else {
            panic!("{steps:?}")
        };
        assert!(
            p.sql.contains("SET v = NULL, fence = ?, version = LAST_INSERT_ID(version + 1)"),
            "one update leaves the new version in LAST_INSERT_ID: {}",
            p.sql
        );
        assert!(p.sql.contains("fence <= ? AND v IS NOT NULL AND version <= ?"), "{}", p.sql);
        assert_eq!(
            p.params,
            [Param::U64(3), Param::text("t"), Param::text("p"), Param::U64(3), Param::U64(u64::MAX - 1)],
            "placeholders in the statement's order"
        );
        assert!(
            v.sql.contains("AND version = ? AND version <= ?"),
            "the expected version is checked: {}",
            v.sql
        );
        assert_eq!(v.params[4], Param::U64(7));
        assert!(unindex.sql.starts_with("DELETE FROM sandtable_index"), "{}", unindex.sql);
        let sqlite =
            plan(Dialect::Sqlite, &[del("p", Expect::Present), del("v", Expect::Version(7))]).unwrap();
        let [Step::Delete { probe, clear, .. }, Step::Delete { probe: vp, .. }] = &sqlite[..] else {
            panic!("{sqlite:?}")
        };
        assert!(probe.sql.ends_with("fence <= ? AND v IS NOT NULL"), "a read of the live row: {}", probe.sql);
        assert!(vp.sql.ends_with("AND version = ?"), "{}", vp.sql);
        assert!(clear.sql.contains("SET v = NULL, version = version + 1, fence = ?"), "{}", clear.sql);
        assert!(plan(Dialect::Sqlite, &[del("a", Expect::Any)]).is_none(), "may not exist: the general path");
        assert!(plan(Dialect::MariaDb, &[del("a", Expect::Absent)]).is_none());
    }

    #[test]
    fn a_delete_answers_the_version_read_plus_one_unless_it_would_overflow() {
        let mut answers = Answers::new(2);
        assert!(answers.deleted(0, 6));
        assert!(!answers.deleted(1, u64::MAX), "no version after u64::MAX: the general path decides");
        assert_eq!(answers.finish(), None, "op 1 has no answer");
        let mut answers = Answers::new(1);
        assert!(answers.deleted(0, 6));
        assert_eq!(answers.finish(), Some(vec![WriteResult::Delete { version: 7, existed: true }]));
    }

    #[test]
    fn a_clear_answers_the_version_the_update_left_and_misses_on_none() {
        let mut answers = Answers::new(2);
        assert!(answers.cleared(0, 7));
        assert!(!answers.cleared(1, 0), "no cleared row has version 0: LAST_INSERT_ID was not set");
        assert_eq!(answers.finish(), None, "op 1 has no answer");
        let mut answers = Answers::new(1);
        assert!(answers.cleared(0, 7));
        assert_eq!(answers.finish(), Some(vec![WriteResult::Delete { version: 7, existed: true }]));
    }
}
