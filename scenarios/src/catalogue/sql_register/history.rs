//! What a `sql_register` run records: every call of the clients on the SQL instances as an
//! operation of a [`History`] of [`DbOp`]s and [`DbRes`]ults (the row model's types,
//! [`crate::checker::rows`]), and the conversions between those and the `Db` port's types.
//!
//! Outcomes: an answer of the instance is `ok`, refusals included (`Fenced`,
//! `VersionMismatch`, `NotFound` say exactly what the row was); an error that may hide an
//! applied call (`maybe_applied`) is `info`; every other error (unreachable, nothing sent) is
//! `fail`.

use bytes::Bytes;
use engine::env::{DbError, Row, TableName, WriteOp, WriteResult};

use crate::checker::{DbCall, DbOp, DbRes, Refusal, RowSeen, RowWrite, WriteSeen};
use crate::history::{OpHandle, ProcessId, Recorder};

/// The run's history recorder.
pub type SqlRecorder = Recorder<DbOp, DbRes>;

/// The port's operation for a recorded one, on `table`.
pub fn write_op(table: &TableName, w: &RowWrite) -> WriteOp {
    match w {
        RowWrite::Put { key, value, expect, fence } => {
            WriteOp::put(table, key.clone(), Bytes::from(value.clone()), *expect, *fence)
        }
        RowWrite::Delete { key, expect, fence } => WriteOp::delete(table, key.clone(), *expect, *fence),
        RowWrite::RaiseFence { key, fence } => WriteOp::raise_fence(table, key.clone(), *fence),
        RowWrite::Guard { key, fence } => {
            WriteOp::Guard { table: table.clone(), key: key.clone(), fence: *fence }
        }
    }
}

/// A row as the history keeps it (values are UTF-8 strings written by the workload).
pub fn row_seen(r: &Row) -> RowSeen {
    RowSeen { value: String::from_utf8_lossy(&r.value).into_owned(), version: r.version, fence: r.fence }
}

/// The recorded answer of one committed operation.
///
/// # Panics
/// On a `Restore` result, which answers no operation this workload sends (the instance
/// answered another call's result: a bug of the service, a crash verdict, not a fault).
pub fn write_seen(r: &WriteResult) -> WriteSeen {
    match r {
        WriteResult::Put { version } => WriteSeen::Put { version: *version },
        WriteResult::Delete { version, existed } => {
            WriteSeen::Delete { version: *version, existed: *existed }
        }
        WriteResult::RaiseFence { row, fence } => {
            WriteSeen::RaiseFence { row: row.as_ref().map(row_seen), fence: *fence }
        }
        WriteResult::Guard { version } => WriteSeen::Guard { version: *version },
        other => panic!("sql_register sent no operation that answers {other:?}"),
    }
}

/// The refusal in a `Db` error, if the error is one (an answer about the data).
pub fn refusal(e: &DbError) -> Option<Refusal> {
    match *e {
        DbError::Fenced { op_index, row_fence } => Some(Refusal::Fenced { op_index, row_fence }),
        DbError::VersionMismatch { op_index, actual } => Some(Refusal::VersionMismatch { op_index, actual }),
        DbError::NotFound { op_index } => Some(Refusal::NotFound { op_index }),
        _ => None,
    }
}

/// Records the invocation of `call` on `instance` by `process`.
pub fn invoke(rec: &SqlRecorder, process: ProcessId, instance: &str, call: DbCall) -> OpHandle {
    rec.invoke(process, DbOp { instance: instance.to_string(), call })
}

/// Records the outcome of a `get`.
pub fn complete_get(rec: &SqlRecorder, h: OpHandle, r: &Result<Option<Row>, DbError>) {
    match r {
        Ok(row) => rec.ok(h, DbRes::Row(row.as_ref().map(row_seen))),
        Err(e) => fail_or_info(rec, h, e),
    }
}

/// Records the outcome of a `transact`.
pub fn complete_transact(rec: &SqlRecorder, h: OpHandle, r: &Result<Vec<WriteResult>, DbError>) {
    match r {
        Ok(results) => rec.ok(h, DbRes::Written(results.iter().map(write_seen).collect())),
        Err(e) => match refusal(e) {
            Some(refused) => rec.ok(h, DbRes::Refused(refused)),
            None => fail_or_info(rec, h, e),
        },
    }
}

fn fail_or_info(rec: &SqlRecorder, h: OpHandle, e: &DbError) {
    if e.maybe_applied() {
        rec.info(h);
    } else {
        // Unreachable, or refused before anything was sent, or refused for a reason this
        // workload never provokes (a unique index): certainly not applied.
        if !e.is_transient() {
            tracing::warn!(error = %e, "sql_register: unexpected refusal");
        }
        rec.fail(h);
    }
}
