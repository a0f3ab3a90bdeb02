//! What the RPC service records when `RpcConfig::metrics` is set.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | [`CLIENT_STARTED`] | counter | `method` |
//! | [`CLIENT_COMPLETED`] | counter | `method`, `result` (`ok` or an [`error_kind`], `cancelled` if the caller dropped the call) |
//! | [`CLIENT_DURATION`] | histogram | `method` |
//! | [`SERVER_HANDLED`] | counter | `method`, `status` (`ok`, `no_handler`, `handler_error`, `decode_error`, `out_of_order`, `overloaded`) |
//! | [`SERVER_DURATION`] | histogram | `method` (handler run time, queueing excluded) |
//! | [`SERVER_DUPLICATES`] | counter | — (retransmitted copies answered from the dedupe window or dropped) |
//!
//! `method` is the message type. On the server a type with no registered handler is counted
//! as [`UNREGISTERED_METHOD`], so a peer cannot grow the label set at will.

use std::time::Duration;

use super::error::RpcError;
use super::wire::ReplyStatus;
use crate::env::{Clock, MonoTime};
use crate::metrics::{Counter, CounterVec, HistogramVec, Metrics, LATENCY_BUCKETS};

pub const CLIENT_STARTED: &str = "sandtable_rpc_client_calls_started_total";
pub const CLIENT_COMPLETED: &str = "sandtable_rpc_client_calls_completed_total";
pub const CLIENT_DURATION: &str = "sandtable_rpc_client_call_duration_seconds";
pub const SERVER_HANDLED: &str = "sandtable_rpc_server_requests_total";
pub const SERVER_DURATION: &str = "sandtable_rpc_server_handler_duration_seconds";
pub const SERVER_DUPLICATES: &str = "sandtable_rpc_server_duplicates_total";
/// `method` label of requests for a type without a handler.
pub const UNREGISTERED_METHOD: &str = "_unregistered";

/// The `result` label of a failed call.
pub fn error_kind(e: &RpcError) -> &'static str {
    match e {
        RpcError::Timeout => "timeout",
        RpcError::Unreachable(_) => "unreachable",
        RpcError::UnknownPeer(_) => "unknown_peer",
        RpcError::NoHandler(_) => "no_handler",
        RpcError::Handler(_) => "handler_error",
        RpcError::Decode(_) => "decode_error",
        RpcError::OutOfOrder { .. } => "out_of_order",
        RpcError::Fenced => "fenced",
        RpcError::Overloaded(_) => "overloaded",
        RpcError::Shutdown => "shutdown",
        RpcError::Listen(_) => "listen",
    }
}

/// The `status` label of a handled request.
pub(super) fn status_kind(s: &ReplyStatus) -> &'static str {
    match s {
        ReplyStatus::Ok(_) => "ok",
        ReplyStatus::NoHandler => "no_handler",
        ReplyStatus::HandlerError(_) => "handler_error",
        ReplyStatus::DecodeError(_) => "decode_error",
        ReplyStatus::OutOfOrder { .. } => "out_of_order",
        ReplyStatus::Overloaded(_) => "overloaded",
    }
}

/// Handles of the RPC metrics; all no-ops without a registry.
#[derive(Clone, Default)]
pub(super) struct RpcMetrics {
    /// A registry is attached (otherwise every handle is a no-op).
    pub(super) enabled: bool,
    started: CounterVec,
    completed: CounterVec,
    duration: HistogramVec,
    pub(super) handled: CounterVec,
    pub(super) handler_duration: HistogramVec,
    pub(super) duplicates: Counter,
}

impl RpcMetrics {
    pub(super) fn new(m: Option<&Metrics>) -> Self {
        let Some(m) = m else { return RpcMetrics::default() };
        RpcMetrics {
            enabled: true,
            started: m.counter_vec(CLIENT_STARTED, "RPC calls made, by message type.", &["method"]),
            completed: m.counter_vec(
                CLIENT_COMPLETED,
                "RPC calls finished, by message type and result (ok or the error kind).",
                &["method", "result"],
            ),
            duration: m.histogram_vec(
                CLIENT_DURATION,
                "Latency of RPC calls as the caller sees it, by message type.",
                &["method"],
                LATENCY_BUCKETS,
            ),
            handled: m.counter_vec(
                SERVER_HANDLED,
                "RPC requests handled (or rejected) by this server, by message type and status.",
                &["method", "status"],
            ),
            handler_duration: m.histogram_vec(
                SERVER_DURATION,
                "Run time of RPC handlers on this server, by message type.",
                &["method"],
                LATENCY_BUCKETS,
            ),
            duplicates: m.counter(
                SERVER_DUPLICATES,
                "Retransmitted RPC requests not run again (answered from the dedupe window or dropped).",
            ),
        }
    }

    /// Starts the record of one call; finish it with [`CallRecord::finish`].
    pub(super) fn call<'a>(&'a self, clock: &'a dyn Clock, method: &'a str) -> CallRecord<'a> {
        self.started.with(&[method]).inc();
        CallRecord { m: self, clock, method, start: clock.now(), done: false }
    }
}

/// One call in flight; records `cancelled` if dropped before `finish`.
pub(super) struct CallRecord<'a> {
    m: &'a RpcMetrics,
    clock: &'a dyn Clock,
    method: &'a str,
    start: MonoTime,
    done: bool,
}

impl CallRecord<'_> {
    pub(super) fn finish<T>(mut self, r: &Result<T, RpcError>) {
        self.done = true;
        let d: Duration = self.clock.now().saturating_since(self.start);
        self.m.duration.with(&[self.method]).observe(d);
        let result = match r {
            Ok(_) => "ok",
            Err(e) => error_kind(e),
        };
        self.m.completed.with(&[self.method, result]).inc();
    }
}

impl Drop for CallRecord<'_> {
    /// A call dropped by its caller is counted, but its time is not a latency.
    fn drop(&mut self) {
        if !self.done {
            self.m.completed.with(&[self.method, "cancelled"]).inc();
        }
    }
}
