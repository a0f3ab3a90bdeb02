//! The tables every instance holds, created by the adapter when it opens the instance.
//!
//! Two tables hold the data of every port-level table (the port's table name is a column, so
//! a new table needs no DDL), plus a version row:
//!
//! - `sandtable_rows(tbl, k, v, version, fence)`, primary key `(tbl, k)`: one row per stored
//!   key; `v` is NULL for a placeholder.
//! - `sandtable_index(tbl, idx, ikey, k)`, primary key `(tbl, idx, ikey)` (so an index key
//!   maps to at most one row), secondary key `(tbl, k)` (a row's entries): the unique indexes.
//! - `sandtable_schema(version)`: the schema versions applied, one row each.
//!
//! Names, keys and values are stored as bytes (`VARBINARY`/`MEDIUMBLOB` on MariaDB, `BLOB` on
//! SQLite), so comparisons and `ORDER BY` are byte order, as the port promises. MariaDB stores
//! `version`/`fence` as `BIGINT UNSIGNED`; SQLite only has signed 64-bit integers, so it stores
//! `x XOR 2^63` ([`sqlite_u64`]), which keeps the order of all `u64` values.
//!
//! **Migrations.** Opening an instance runs every statement below (each idempotent: `CREATE
//! ... IF NOT EXISTS`, insert-if-absent of the version row), then reads the highest version in
//! `sandtable_schema`: a version above [`SCHEMA_VERSION`] was written by a newer adapter and
//! the instance is refused (`InvalidArgument`) rather than misread. A future schema change
//! appends a step for version 2 (its statements, then its version row) to the lists; steps run
//! in order, each only while its version row is missing, so any older instance catches up.

use engine::env::DbError;
use sqlx::{MySqlConnection, Row as _, SqliteConnection};

use super::errors::{call_error, Stage};

/// The schema version this adapter writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// SQLite's DDL (version 1). `WITHOUT ROWID`: the rows are stored in primary-key order.
pub(crate) const SQLITE_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sandtable_schema (version INTEGER NOT NULL PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS sandtable_rows (
        tbl BLOB NOT NULL, k BLOB NOT NULL, v BLOB, version INTEGER NOT NULL, fence INTEGER NOT NULL,
        PRIMARY KEY (tbl, k)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS sandtable_index (
        tbl BLOB NOT NULL, idx BLOB NOT NULL, ikey BLOB NOT NULL, k BLOB NOT NULL,
        PRIMARY KEY (tbl, idx, ikey)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS sandtable_index_by_row ON sandtable_index (tbl, k)",
    "INSERT OR IGNORE INTO sandtable_schema (version) VALUES (1)",
];

/// MariaDB's DDL (version 1). InnoDB: transactional, row locks, crash-safe.
pub(crate) const MARIADB_DDL: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sandtable_schema (version BIGINT UNSIGNED NOT NULL PRIMARY KEY) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS sandtable_rows (
        tbl VARBINARY(64) NOT NULL, k VARBINARY(255) NOT NULL, v MEDIUMBLOB NULL,
        version BIGINT UNSIGNED NOT NULL, fence BIGINT UNSIGNED NOT NULL,
        PRIMARY KEY (tbl, k)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS sandtable_index (
        tbl VARBINARY(64) NOT NULL, idx VARBINARY(64) NOT NULL, ikey VARBINARY(255) NOT NULL,
        k VARBINARY(255) NOT NULL,
        PRIMARY KEY (tbl, idx, ikey), KEY sandtable_index_by_row (tbl, k)) ENGINE=InnoDB",
    "INSERT IGNORE INTO sandtable_schema (version) VALUES (1)",
];

/// A `u64` as SQLite stores it: order-preserving in a signed 64-bit integer.
pub(crate) fn sqlite_u64(x: u64) -> i64 {
    (x ^ (1 << 63)) as i64
}

/// The `u64` a SQLite integer column stores (inverse of [`sqlite_u64`]).
pub(crate) fn from_sqlite_u64(x: i64) -> u64 {
    (x as u64) ^ (1 << 63)
}

fn check_version(db: &str, found: Option<u64>) -> Result<(), DbError> {
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(DbError::InvalidArgument(format!(
            "instance {db}: schema version {v} is newer than this adapter's ({SCHEMA_VERSION})"
        ))),
        Some(_) => Ok(()),
        None => {
            Err(DbError::InvalidArgument(format!("instance {db}: no schema version row after migration")))
        }
    }
}

/// Creates (or checks) the schema on a SQLite connection.
pub(crate) async fn ensure_sqlite(db: &str, conn: &mut SqliteConnection) -> Result<(), DbError> {
    let err = |e: sqlx::Error| call_error(db, &e, Stage::Open);
    for stmt in SQLITE_DDL {
        sqlx::query(stmt).execute(&mut *conn).await.map_err(err)?;
    }
    let row =
        sqlx::query("SELECT MAX(version) FROM sandtable_schema").fetch_one(&mut *conn).await.map_err(err)?;
    let found: Option<i64> = row.try_get(0).map_err(err)?;
    check_version(db, found.and_then(|v| u64::try_from(v).ok()))
}

/// Creates (or checks) the schema on a MariaDB connection.
pub(crate) async fn ensure_mariadb(db: &str, conn: &mut MySqlConnection) -> Result<(), DbError> {
    let err = |e: sqlx::Error| call_error(db, &e, Stage::Open);
    for stmt in MARIADB_DDL {
        sqlx::query(stmt).execute(&mut *conn).await.map_err(err)?;
    }
    let row =
        sqlx::query("SELECT MAX(version) FROM sandtable_schema").fetch_one(&mut *conn).await.map_err(err)?;
    let found: Option<u64> = row.try_get(0).map_err(err)?;
    check_version(db, found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sqlite_encoding_keeps_u64_order() {
        let xs = [0, 1, 2, 1 << 62, (1 << 63) - 1, 1 << 63, u64::MAX - 1, u64::MAX];
        for w in xs.windows(2) {
            assert!(sqlite_u64(w[0]) < sqlite_u64(w[1]), "{w:?}");
        }
        for x in xs {
            assert_eq!(from_sqlite_u64(sqlite_u64(x)), x);
        }
    }

    #[test]
    fn a_newer_schema_is_refused() {
        assert!(check_version("db", Some(SCHEMA_VERSION)).is_ok());
        assert!(matches!(check_version("db", Some(SCHEMA_VERSION + 1)), Err(DbError::InvalidArgument(_))));
        assert!(check_version("db", None).is_err());
    }
}
