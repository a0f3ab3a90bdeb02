//! The statements both engines run, as text plus parameters. Only the upsert clause and
//! the locking suffix differ between SQLite and MariaDB ([`Dialect`]); each engine binds the
//! [`Param`]s its way (SQLite stores `u64` as [`super::schema::sqlite_u64`]).

use std::fmt::Write as _;

use bytes::Bytes;
use engine::env::TableName;

use super::plan::{IndexKey, Outcome, RowKey};

/// One bound parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Param {
    Blob(Vec<u8>),
    /// A value column: NULL for a placeholder.
    Value(Option<Bytes>),
    /// A port-level `u64` column value (version, fence).
    U64(u64),
    /// A plain integer (a `LIMIT`).
    Int(i64),
}

impl Param {
    pub fn text(s: &str) -> Param {
        Param::Blob(s.as_bytes().to_vec())
    }
}

/// A statement and its parameters, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stmt {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Stmt {
    /// The statement with its parameters written in as MariaDB literals, for a script of
    /// several statements sent in one round trip (the text protocol, which has no
    /// parameters): bytes as hex literals `X'…'` (exact for the binary columns, and nothing
    /// in them needs escaping), integers in decimal, `NULL` for a placeholder's value. `None`
    /// if the text's `?` and the parameters do not pair up (no statement here has a `?` of
    /// its own, in a literal or a name).
    pub fn inline_mariadb(&self) -> Option<String> {
        let bytes: usize = self
            .params
            .iter()
            .map(|p| match p {
                Param::Blob(b) => 2 * b.len() + 3,
                Param::Value(v) => v.as_ref().map_or(4, |b| 2 * b.len() + 3),
                Param::U64(_) | Param::Int(_) => 20,
            })
            .sum();
        let mut out = String::with_capacity(self.sql.len() + bytes);
        let mut params = self.params.iter();
        for part in self.sql.split_inclusive('?') {
            let Some(text) = part.strip_suffix('?') else {
                out.push_str(part);
                continue;
            };
            out.push_str(text);
            match params.next()? {
                Param::Blob(b) => hex_literal(&mut out, b),
                Param::Value(Some(b)) => hex_literal(&mut out, b),
                Param::Value(None) => out.push_str("NULL"),
                Param::U64(x) => write!(out, "{x}").expect("writing to a String"),
                Param::Int(i) => write!(out, "{i}").expect("writing to a String"),
            }
        }
        params.next().is_none().then_some(out)
    }
}

fn hex_literal(out: &mut String, b: &[u8]) {
    out.push_str("X'");
    out.push_str(&hex::encode(b));
    out.push('\'');
}

/// What differs between the engines' SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    MariaDb,
}

/// How a read inside a transaction locks what it reads (MariaDB; SQLite's `BEGIN IMMEDIATE`
/// already holds the database's write lock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lock {
    None,
    Shared,
    Exclusive,
}

impl Lock {
    fn suffix(self, d: Dialect) -> &'static str {
        match (d, self) {
            (Dialect::Sqlite, _) | (_, Lock::None) => "",
            (Dialect::MariaDb, Lock::Shared) => " LOCK IN SHARE MODE",
            (Dialect::MariaDb, Lock::Exclusive) => " FOR UPDATE",
        }
    }
}

pub(crate) const ROW_COLUMNS: &str = "tbl, k, v, version, fence";
pub(crate) const ENTRY_COLUMNS: &str = "tbl, idx, ikey, k";

fn marks(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        s.push_str(if i == 0 { "?" } else { ",?" });
    }
    s
}

/// `(tbl = ? AND <col> IN (?,...)) OR ...` over `keys` (sorted by table), with its params.
fn by_table(keys: &[&RowKey], col: &str) -> (String, Vec<Param>) {
    let mut sql = String::new();
    let mut params = Vec::new();
    let mut i = 0;
    while i < keys.len() {
        let table = &keys[i].0;
        let n = keys[i..].iter().take_while(|(t, _)| t == table).count();
        if !sql.is_empty() {
            sql.push_str(" OR ");
        }
        if n == 1 {
            let _ = write!(sql, "(tbl = ? AND {col} = ?)");
        } else {
            let _ = write!(sql, "(tbl = ? AND {col} IN ({}))", marks(n));
        }
        params.push(Param::text(table.as_str()));
        params.extend(keys[i..i + n].iter().map(|(_, k)| Param::text(k)));
        i += n;
    }
    (sql, params)
}

/// The stored state of `keys` (sorted), locked as asked, in key order.
pub(crate) fn select_rows(d: Dialect, keys: &[&RowKey], lock: Lock) -> Stmt {
    let (cond, params) = by_table(keys, "k");
    Stmt {
        sql: format!(
            "SELECT {ROW_COLUMNS} FROM sandtable_rows WHERE {cond} ORDER BY tbl, k{}",
            lock.suffix(d)
        ),
        params,
    }
}

/// Creates each of `keys` (sorted, absent when looked at) as a placeholder (`v` NULL,
/// version 0, fence 0: what the port reads as absent) unless it exists by now (MariaDB).
/// Inserting an absent key takes only an insert-intention lock on its gap and then the new
/// record's lock, so a following locking read of it locks that record, not the gap: two
/// transactions creating keys in one gap no longer both hold the gap while inserting into it.
pub(crate) fn create_placeholders(keys: &[&RowKey]) -> Stmt {
    let mut sql = format!("INSERT IGNORE INTO sandtable_rows ({ROW_COLUMNS}) VALUES ");
    let mut params = Vec::with_capacity(keys.len() * 5);
    for (i, (t, k)) in keys.iter().enumerate() {
        sql.push_str(if i == 0 { "(?,?,?,?,?)" } else { ",(?,?,?,?,?)" });
        params.extend([
            Param::text(t.as_str()),
            Param::text(k),
            Param::Value(None),
            Param::U64(0),
            Param::U64(0),
        ]);
    }
    Stmt { sql, params }
}

/// The index entries of the rows `keys` (sorted).
pub(crate) fn select_entries_of(d: Dialect, keys: &[&RowKey], lock: Lock) -> Stmt {
    let (cond, params) = by_table(keys, "k");
    Stmt {
        sql: format!(
            "SELECT {ENTRY_COLUMNS} FROM sandtable_index WHERE {cond} ORDER BY tbl, idx, ikey{}",
            lock.suffix(d)
        ),
        params,
    }
}

fn entry_cond(keys: &[IndexKey]) -> (String, Vec<Param>) {
    let mut sql = String::new();
    let mut params = Vec::with_capacity(keys.len() * 3);
    for (i, (t, idx, ikey)) in keys.iter().enumerate() {
        sql.push_str(if i == 0 {
            "(tbl = ? AND idx = ? AND ikey = ?)"
        } else {
            " OR (tbl = ? AND idx = ? AND ikey = ?)"
        });
        params.extend([Param::text(t.as_str()), Param::text(idx), Param::text(ikey)]);
    }
    (sql, params)
}

/// The holders of the index keys `claims`.
pub(crate) fn select_holders(d: Dialect, claims: &[IndexKey], lock: Lock) -> Stmt {
    let (cond, params) = entry_cond(claims);
    Stmt {
        sql: format!(
            "SELECT {ENTRY_COLUMNS} FROM sandtable_index WHERE {cond} ORDER BY tbl, idx, ikey{}",
            lock.suffix(d)
        ),
        params,
    }
}

/// The statements that write an outcome's changes: rows upserted, index entries removed,
/// index entries upserted (each statement only if there is something to do).
pub(crate) fn writes(d: Dialect, out: &Outcome) -> Vec<Stmt> {
    let mut stmts = Vec::new();
    if !out.rows.is_empty() {
        let mut sql = format!("INSERT INTO sandtable_rows ({ROW_COLUMNS}) VALUES ");
        let mut params = Vec::with_capacity(out.rows.len() * 5);
        for (i, ((t, k), s)) in out.rows.iter().enumerate() {
            sql.push_str(if i == 0 { "(?,?,?,?,?)" } else { ",(?,?,?,?,?)" });
            params.extend([
                Param::text(t.as_str()),
                Param::text(k),
                Param::Value(s.value.clone()),
                Param::U64(s.version),
                Param::U64(s.fence),
            ]);
        }
        sql.push_str(match d {
            Dialect::Sqlite => {
                " ON CONFLICT (tbl, k) DO UPDATE SET v = excluded.v, version = excluded.version, fence = excluded.fence"
            }
            Dialect::MariaDb => " ON DUPLICATE KEY UPDATE v = VALUES(v), version = VALUES(version), fence = VALUES(fence)",
        });
        stmts.push(Stmt { sql, params });
    }
    if !out.unindex.is_empty() {
        let (cond, params) = entry_cond(&out.unindex);
        stmts.push(Stmt { sql: format!("DELETE FROM sandtable_index WHERE {cond}"), params });
    }
    if !out.index.is_empty() {
        let mut sql = format!("INSERT INTO sandtable_index ({ENTRY_COLUMNS}) VALUES ");
        let mut params = Vec::with_capacity(out.index.len() * 4);
        for (i, ((t, idx, ikey), k)) in out.index.iter().enumerate() {
            sql.push_str(if i == 0 { "(?,?,?,?)" } else { ",(?,?,?,?)" });
            params.extend([Param::text(t.as_str()), Param::text(idx), Param::text(ikey), Param::text(k)]);
        }
        sql.push_str(match d {
            Dialect::Sqlite => " ON CONFLICT (tbl, idx, ikey) DO UPDATE SET k = excluded.k",
            Dialect::MariaDb => " ON DUPLICATE KEY UPDATE k = VALUES(k)",
        });
        stmts.push(Stmt { sql, params });
    }
    stmts
}

/// One key's live row (not a placeholder).
pub(crate) fn get(table: &TableName, key: &str) -> Stmt {
    Stmt {
        sql: format!("SELECT {ROW_COLUMNS} FROM sandtable_rows WHERE tbl = ? AND k = ? AND v IS NOT NULL"),
        params: vec![Param::text(table.as_str()), Param::text(key)],
    }
}

/// The live rows among `keys` of `table` (any order; duplicates allowed in `keys`).
pub(crate) fn get_many(table: &TableName, keys: &[String]) -> Stmt {
    let mut params = vec![Param::text(table.as_str())];
    params.extend(keys.iter().map(|k| Param::text(k)));
    Stmt {
        sql: format!(
            "SELECT {ROW_COLUMNS} FROM sandtable_rows WHERE tbl = ? AND k IN ({}) AND v IS NOT NULL",
            marks(keys.len())
        ),
        params,
    }
}

/// Up to `limit` keys of `table` starting with `prefix`, after `start_after`, in byte
/// order; placeholders too unless `live_only`.
pub(crate) fn scan(
    table: &TableName,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
    live_only: bool,
) -> Stmt {
    let mut sql = format!("SELECT {ROW_COLUMNS} FROM sandtable_rows WHERE tbl = ? AND k >= ?");
    let mut params = vec![Param::text(table.as_str()), Param::text(prefix)];
    if let Some(after) = start_after {
        sql.push_str(" AND k > ?");
        params.push(Param::text(after));
    }
    if let Some(end) = super::plan::prefix_end(prefix.as_bytes()) {
        sql.push_str(" AND k < ?");
        params.push(Param::Blob(end));
    }
    if live_only {
        sql.push_str(" AND v IS NOT NULL");
    }
    sql.push_str(" ORDER BY k LIMIT ?");
    params.push(Param::Int(i64::try_from(limit).unwrap_or(i64::MAX)));
    Stmt { sql, params }
}

/// The live row holding `ikey` in `index` of `table`.
pub(crate) fn get_by_index(table: &TableName, index: &str, ikey: &str) -> Stmt {
    Stmt {
        sql: "SELECT r.tbl, r.k, r.v, r.version, r.fence FROM sandtable_index i \
              JOIN sandtable_rows r ON r.tbl = i.tbl AND r.k = i.k \
              WHERE i.tbl = ? AND i.idx = ? AND i.ikey = ? AND r.v IS NOT NULL"
            .to_string(),
        params: vec![Param::text(table.as_str()), Param::text(index), Param::text(ikey)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inlined_parameters_become_hex_decimal_and_null_literals_in_order() {
        let s = Stmt {
            sql: "UPDATE t SET v = ?, n = ? WHERE k = ? AND f <= ? AND x = ? LIMIT ?".into(),
            params: vec![
                Param::Value(Some(Bytes::from_static(b"'; DROP TABLE t; --"))),
                Param::Value(None),
                Param::text(""),
                Param::U64(u64::MAX),
                Param::Blob(vec![0, 0xff]),
                Param::Int(-3),
            ],
        };
        assert_eq!(
            s.inline_mariadb().as_deref(),
            Some(
                "UPDATE t SET v = X'273b2044524f50205441424c4520743b202d2d', n = NULL WHERE k = X'' \
                 AND f <= 18446744073709551615 AND x = X'00ff' LIMIT -3"
            ),
            "a quote in a value is only hex digits here"
        );
        let short = Stmt { sql: "SELECT ? + ?".into(), params: vec![Param::Int(1)] };
        assert_eq!(short.inline_mariadb(), None, "a placeholder without a parameter");
        let long = Stmt { sql: "SELECT ?".into(), params: vec![Param::Int(1), Param::Int(2)] };
        assert_eq!(long.inline_mariadb(), None, "a parameter without a placeholder");
        let none = Stmt { sql: "COMMIT".into(), params: vec![] };
        assert_eq!(none.inline_mariadb().as_deref(), Some("COMMIT"));
    }

    #[test]
    fn keys_are_grouped_by_table() {
        let (a, b) = (TableName::new("a").unwrap(), TableName::new("b").unwrap());
        let keys = [(a.clone(), "1".to_string()), (a, "2".to_string()), (b, "3".to_string())];
        let refs: Vec<&RowKey> = keys.iter().collect();
        let s = select_rows(Dialect::MariaDb, &refs, Lock::Exclusive);
        assert_eq!(
            s.sql,
            "SELECT tbl, k, v, version, fence FROM sandtable_rows WHERE (tbl = ? AND k IN (?,?)) OR \
             (tbl = ? AND k = ?) ORDER BY tbl, k FOR UPDATE"
        );
        assert_eq!(s.params.len(), 5);
        assert!(!select_rows(Dialect::Sqlite, &refs, Lock::Exclusive).sql.contains("FOR UPDATE"));
    }

    #[test]
    fn a_scan_bounds_the_prefix_and_pages() {
        let t = TableName::new("t").unwrap();
        let s = scan(&t, "u/", Some("u/3"), 10, true);
        assert!(
            s.sql.contains("k >= ? AND k > ? AND k < ? AND v IS NOT NULL ORDER BY k LIMIT ?"),
            "{}",
            s.sql
        );
        assert_eq!(s.params[3], Param::Blob(b"u0".to_vec()));
        let s = scan(&t, "", None, 1, false);
        assert!(!s.sql.contains("k < ?") && !s.sql.contains("v IS NOT NULL"), "{}", s.sql);
    }
}
