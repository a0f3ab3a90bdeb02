//! What a `sql_register` run records: every call of the clients on the SQL instances as an
//! operation of a [`History`] of [`DbOp`]s and [`DbRes`]ults (the row model's types,
//! [`crate::checker::rows`]), and the conversions between those and the `Db` port's types.
//!
//! Outcomes: an answer of the instance is `ok`, refusals included (`Fenced`,
//! `VersionMismatch`, `NotFound` say exactly what the row was); an error that may hide an
//! applied call (`maybe_applied`) is `info`; every other error (unreachable, nothing sent) is
//! `fail`.
//!
//! A process records its calls through a [`CallLog`]: in a live run (a server process, where
//! [`ServerCtx::tap`](crate::ServerCtx::tap) is set) each invocation and completion also goes
//! to the tap as [`Evidence::SqlInvoked`] / [`Evidence::SqlCompleted`] with the time recorded,
//! and the runner's run rebuilds the history from them (`ScenarioRun::absorb`).

use bytes::Bytes;
use engine::env::{DbError, Row, TableName, WriteOp, WriteResult};

use crate::checker::{DbCall, DbOp, DbRes, Refusal, RowSeen, RowWrite, WriteSeen};
use crate::evidence::{Evidence, EvidenceTap};
use crate::history::{OpHandle, Outcome, ProcessId, Recorder, TimeSource};

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

/// One process's calls on their way to the history: recorded in the run's recorder and, in a
/// live run, also reported through the tap with the same times, so the runner's run rebuilds
/// the same history. The invocation is reported before the call is sent (a server killed
/// after sending it leaves it open: unknown, as it may have been applied) and the completion
/// before the process goes on.
pub struct CallLog {
    rec: SqlRecorder,
    now: TimeSource,
    process: ProcessId,
    tap: Option<EvidenceTap>,
    /// Numbers this process's calls in its reports, so a completion names its invocation.
    next_call: u64,
}

/// One call in flight: its place in the history and its number in the reports.
#[must_use = "an invoked call must be completed"]
pub struct Call {
    handle: OpHandle,
    number: u64,
}

impl CallLog {
    /// The calls of `process`, recorded in `rec` at the times `now` reads (the recorder's
    /// clock: true time), and reported to `tap` if there is one.
    pub fn new(rec: SqlRecorder, now: TimeSource, process: ProcessId, tap: Option<EvidenceTap>) -> CallLog {
        CallLog { rec, now, process, tap, next_call: 0 }
    }

    /// Records (and reports) `call` on `instance`, before it is sent.
    pub fn invoke(&mut self, instance: &str, call: DbCall) -> Call {
        let op = DbOp { instance: instance.to_string(), call };
        let t_ns = (self.now)();
        let number = self.next_call;
        self.next_call += 1;
        if let Some(tap) = &self.tap {
            tap(&Evidence::SqlInvoked { process: self.process, call: number, op: op.clone(), t_ns });
        }
        Call { handle: self.rec.invoke_at(self.process, op, t_ns), number }
    }

    /// Records (and reports) the outcome of a `get`.
    pub fn complete_get(&self, call: Call, r: &Result<Option<Row>, DbError>) {
        let outcome = match r {
            Ok(row) => Outcome::Ok(DbRes::Row(row.as_ref().map(row_seen))),
            Err(e) => fail_or_info(e),
        };
        self.complete(call, outcome);
    }

    /// Records (and reports) the outcome of a `transact`.
    pub fn complete_transact(&self, call: Call, r: &Result<Vec<WriteResult>, DbError>) {
        let outcome = match r {
            Ok(results) => Outcome::Ok(DbRes::Written(results.iter().map(write_seen).collect())),
            Err(e) => match refusal(e) {
                Some(refused) => Outcome::Ok(DbRes::Refused(refused)),
                None => fail_or_info(e),
            },
        };
        self.complete(call, outcome);
    }

    fn complete(&self, call: Call, outcome: Outcome<DbRes>) {
        let t_ns = (self.now)();
        if let Some(tap) = &self.tap {
            tap(&Evidence::SqlCompleted {
                process: self.process,
                call: call.number,
                outcome: outcome.clone(),
                t_ns,
            });
        }
        self.rec.complete_at(call.handle, outcome, t_ns);
    }
}

fn fail_or_info(e: &DbError) -> Outcome<DbRes> {
    if e.maybe_applied() {
        Outcome::Info
    } else {
        // Unreachable, or refused before anything was sent, or refused for a reason this
        // workload never provokes (a unique index): certainly not applied.
        if !e.is_transient() {
            tracing::warn!(error = %e, "sql_register: unexpected refusal");
        }
        Outcome::Fail
    }
}
