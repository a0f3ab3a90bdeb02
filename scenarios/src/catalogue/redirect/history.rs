//! What a `redirect` run records: the clients' operations ([`RedirectOp`], [`RedirectRes`],
//! with the [`TokenKind`] of every presentation) and the servers' wall-clock reads
//! ([`WallLog`], through [`WatchedClock`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::env::{Clock, MonoTime, WallTime};
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evidence::{Evidence, EvidenceTap};
use crate::history::TimeSource;

/// How the token of an accept attempt came to be (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TokenKind {
    Genuine,
    Concurrent,
    Forged,
    Tampered,
    WrongServer,
    Expired,
    Late,
    Replay,
}

impl TokenKind {
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Genuine => "genuine",
            TokenKind::Concurrent => "concurrent",
            TokenKind::Forged => "forged",
            TokenKind::Tampered => "tampered",
            TokenKind::WrongServer => "wrong_server",
            TokenKind::Expired => "expired",
            TokenKind::Late => "late",
            TokenKind::Replay => "replay",
        }
    }

    /// Kinds that must never succeed, whatever the timing.
    pub fn must_fail(self) -> bool {
        matches!(self, TokenKind::Forged | TokenKind::Tampered | TokenKind::WrongServer)
    }

    /// Kinds whose success is the progress liveness asks for.
    pub fn genuine(self) -> bool {
        matches!(self, TokenKind::Genuine | TokenKind::Concurrent)
    }
}

/// An operation of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectOp {
    /// `cs_game_server_login`; `probe`: made while the account is held on a redirect target
    /// (must be refused while that server acts for it).
    Login { server: String, account: String, probe: bool },
    /// `cs_redirect` from `server` to `target`.
    Redirect { server: String, target: String, account: String, extra_data: Value },
    /// `_cs_redirect {token}` at `server`; `account` is whose token the client believes it is.
    Accept { kind: TokenKind, server: String, token: String, account: String },
    /// `cs_logout`.
    Logout { server: String, account: String },
}

/// What an operation answered. Definite refusals are `Ok(Refused | Rejected)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectRes {
    LoggedIn,
    /// A login or redirect refused, with the server's error message.
    Refused(String),
    /// `_sc_redirect` arrived; `to` is the server its host and port name.
    Issued {
        token: String,
        to: String,
    },
    /// `sc_redirected`.
    Accepted {
        account: String,
        extra_data: Value,
    },
    /// `_error redirect_rejected`, with the reason (see [`reject_reason`]).
    Rejected {
        reason: String,
    },
    LoggedOut,
}

/// The wall-clock offsets (wall ms × 10^6 − true ns) of every wall-clock read the servers
/// made, folded into their minimum and maximum. Shared by all servers of a run.
#[derive(Clone, Default)]
pub struct WallLog {
    inner: Arc<Mutex<Option<(i128, i128, u64)>>>,
}

impl WallLog {
    pub(super) fn record(&self, wall_ms: i64, true_ns: u64) {
        let off = i128::from(wall_ms) * 1_000_000 - i128::from(true_ns);
        let mut g = engine::env::lock(&self.inner);
        *g = Some(match *g {
            None => (off, off, 1),
            Some((lo, hi, n)) => (lo.min(off), hi.max(off), n + 1),
        });
    }

    /// Largest difference between the wall-clock offsets of any two reads (of one server or
    /// two), and the number of reads.
    pub fn spread(&self) -> (Duration, u64) {
        match *engine::env::lock(&self.inner) {
            None => (Duration::ZERO, 0),
            Some((lo, hi, n)) => (Duration::from_nanos(u64::try_from(hi - lo).unwrap_or(u64::MAX)), n),
        }
    }
}

/// A server's clock, unchanged, except that every wall-clock read is also reported to a
/// [`WallLog`] with the true time: the issue and the check of every token read it.
pub(super) struct WatchedClock {
    pub(super) inner: Arc<dyn Clock>,
    pub(super) now: TimeSource,
    pub(super) log: WallLog,
    pub(super) tap: Option<EvidenceTap>,
}

impl Clock for WatchedClock {
    fn now(&self) -> MonoTime {
        self.inner.now()
    }
    fn wall_now(&self) -> WallTime {
        let w = self.inner.wall_now();
        let t_ns = (self.now)();
        self.log.record(w.as_millis(), t_ns);
        if let Some(tap) = &self.tap {
            tap(&Evidence::WallRead { wall_ms: w.as_millis(), t_ns });
        }
        w
    }
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        self.inner.sleep(d)
    }
    fn sleep_until(&self, deadline: MonoTime) -> BoxFuture<'static, ()> {
        self.inner.sleep_until(deadline)
    }
}

/// A short name for the reason of an `_error redirect_rejected` message.
pub fn reject_reason(message: &str) -> &'static str {
    const REASONS: [(&str, &str); 8] = [
        ("bad signature", "bad_signature"),
        ("malformed", "malformed"),
        ("issued for another server", "wrong_server"),
        ("expired", "expired"),
        ("already used", "replayed"),
        ("already logged in", "already_logged_in"),
        ("lease not held", "coordination_lost"),
        ("coordination", "coordination"),
    ];
    REASONS.iter().find(|(needle, _)| message.contains(needle)).map(|(_, r)| *r).unwrap_or("other")
}
