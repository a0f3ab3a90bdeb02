//! `sqlx` errors to the port's [`DbError`] (the table is in the module doc of [`super`]).

use engine::env::DbError;
use tracing::warn;

/// MariaDB: the transaction was chosen as a deadlock victim and rolled back.
pub(crate) const ER_LOCK_DEADLOCK: u16 = 1213;
/// MariaDB: a lock wait outlasted `innodb_lock_wait_timeout` (the statement was rolled back).
pub(crate) const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// MariaDB: the server is shutting down / the connection was killed.
const ER_SERVER_SHUTDOWN: u16 = 1053;
const ER_CONNECTION_KILLED: u16 = 1927;
/// SQLite primary result codes (the low byte of the extended code).
const SQLITE_BUSY: u32 = 5;
const SQLITE_LOCKED: u32 = 6;

/// Where a call was when it failed: whether its transaction may have committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    /// Nothing that can commit was sent: a failure leaves the data as it was.
    Open,
    /// `COMMIT` (or a self-committing statement) was sent: it may have taken effect.
    Committing,
}

impl Stage {
    pub fn maybe_applied(self) -> bool {
        self == Stage::Committing
    }
}

/// A MariaDB error number, if `e` is one.
pub(crate) fn mysql_number(e: &sqlx::Error) -> Option<u16> {
    let db = e.as_database_error()?;
    db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(|m| m.number())
}

/// A SQLite primary result code, if `e` is one.
fn sqlite_code(e: &sqlx::Error) -> Option<u32> {
    let db = e.as_database_error()?;
    db.try_downcast_ref::<sqlx::sqlite::SqliteError>()?;
    db.code()?.parse::<u32>().ok().map(|c| c & 0xff)
}

/// True for a MariaDB deadlock or lock-wait timeout: the transaction (or its last statement)
/// was rolled back and may simply be run again.
pub(crate) fn is_lock_conflict(e: &sqlx::Error) -> bool {
    matches!(mysql_number(e), Some(ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT))
}

/// True if `e` says the connection itself is broken (so a fresh one may succeed).
pub(crate) fn is_connection_error(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed | sqlx::Error::Tls(_)
    ) || matches!(mysql_number(e), Some(ER_SERVER_SHUTDOWN | ER_CONNECTION_KILLED))
}

/// No connection could be had: nothing was sent.
pub(crate) fn acquire_error(db: &str, e: &sqlx::Error) -> DbError {
    warn!(db, error = %e, "sql instance unavailable");
    DbError::Unavailable
}

/// `e` happened during a call at `stage`.
pub(crate) fn call_error(db: &str, e: &sqlx::Error, stage: Stage) -> DbError {
    let maybe_applied = stage.maybe_applied();
    let mapped = match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => DbError::Unavailable,
        _ if is_connection_error(e) => DbError::ConnectionLoss { maybe_applied },
        // Lock conflicts left after the retries, and SQLite's busy timeout (another process
        // holds the write lock): no answer in time.
        _ if is_lock_conflict(e) || matches!(sqlite_code(e), Some(SQLITE_BUSY | SQLITE_LOCKED)) => {
            DbError::Timeout { maybe_applied }
        }
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
            DbError::InvalidArgument(format!("instance {db}: stored data this adapter cannot read: {e}"))
        }
        // Anything else the server refuses (a full disk, a read-only file, a dropped table):
        // the instance cannot serve the call. Before the commit nothing was applied.
        _ if maybe_applied => DbError::ConnectionLoss { maybe_applied },
        _ => DbError::Unavailable,
    };
    warn!(db, error = %e, ?mapped, "sql call failed");
    mapped
}

/// A stored row the adapter cannot make sense of (bad bytes in a key, say).
pub(crate) fn bad_data(db: &str, what: impl std::fmt::Display) -> DbError {
    DbError::InvalidArgument(format!("instance {db}: stored data this adapter cannot read: {what}"))
}

/// A failure inside a call: from `sqlx`, or an answer of the port (data or validation).
#[derive(Debug)]
pub(crate) enum Fail {
    Sql(sqlx::Error),
    Db(DbError),
}

impl From<sqlx::Error> for Fail {
    fn from(e: sqlx::Error) -> Self {
        Fail::Sql(e)
    }
}

impl From<DbError> for Fail {
    fn from(e: DbError) -> Self {
        Fail::Db(e)
    }
}

impl Fail {
    /// The port's error for this failure of a call at `stage`.
    pub fn into_db(self, db: &str, stage: Stage) -> DbError {
        match self {
            Fail::Db(e) => e,
            Fail::Sql(e) => call_error(db, &e, stage),
        }
    }
}
