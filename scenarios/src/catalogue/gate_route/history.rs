//! What `gate_route` records: the clients' operations with what they were answered, each
//! connection's transcript (what arrived on it, in order), and every gated frame the backends
//! report they are about to handle ([`engine::gate::HostObserver`], the evidence of who acted
//! for a player when).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use engine::env::lock;
use engine::gate::HostObserver;
use serde::{Deserialize, Serialize};

use crate::evidence::{Evidence, EvidenceTap};
use crate::history::{History, ProcessId, Recorder, TimeSource};

/// A bad session key a client shows a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BadKey {
    /// Random hex of a real key's length.
    Forged,
    /// A real key with one hex digit changed.
    Altered,
    /// Signed with the right secret, expired.
    Expired,
    /// A real key issued for another user.
    OtherUser,
}

/// One recorded client operation. `conn` numbers connections (unique in the run).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateOp {
    /// `cs_gate_login` on gate `gate` (a server index) with a valid key.
    Login { player: String, gate: usize, conn: u64 },
    /// `cs_gate_login` with a bad key.
    BadKeyLogin { player: String, gate: usize, kind: BadKey },
    /// `cs_counter_add {n, seq}`.
    Add { player: String, conn: u64, seq: u64, n: i64 },
    /// `cs_move {backend}`.
    Move { player: String, conn: u64, to: String },
}

/// What a completed operation answered. Timeouts, closed connections and `try again` /
/// `outcome unknown` refusals of an add are `Info` (it may have been applied); a refused
/// login or move is `Ok(Refused)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GateRes {
    LoggedIn {
        backend: String,
    },
    Refused {
        message: String,
    },
    /// `_error {code: "session_key_rejected"}`.
    KeyRejected,
    /// `sc_counter {error: false}`.
    Counter {
        value: i64,
        backend: String,
        duplicate: bool,
    },
    /// `sc_counter {error: true, error_message: "gap", expected}`.
    Gap {
        expected: u64,
    },
    /// `sc_move {error: false}`.
    MoveStarted,
}

pub type GateHistory = History<GateOp, GateRes>;
pub type Rec = Recorder<GateOp, GateRes>;

/// What arrived on one connection, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Arrival {
    /// The gate bound the player to `backend` (`sc_gate_login`).
    LoggedIn { backend: String },
    /// An add of `seq` was sent.
    Sent { seq: u64 },
    /// `sc_counter` for `seq` (answered by `backend`), or a gap refusal (`backend` empty).
    Answer { seq: u64, backend: String },
    /// `sc_moved {backend, recovered}`.
    Moved { backend: String, recovered: bool },
}

/// One connection's transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    pub process: ProcessId,
    pub player: String,
    /// `(t_ns, what)`, in arrival order.
    pub events: Vec<(u64, Arrival)>,
}

/// Every connection's transcript, by connection number. Shared by the clients of a run.
#[derive(Clone, Default)]
pub struct Transcripts(Arc<Mutex<BTreeMap<u64, Transcript>>>);

impl Transcripts {
    pub fn open(&self, conn: u64, process: ProcessId, player: &str) {
        lock(&self.0).insert(conn, Transcript { process, player: player.to_string(), events: Vec::new() });
    }

    pub fn push(&self, conn: u64, t_ns: u64, what: Arrival) {
        if let Some(t) = lock(&self.0).get_mut(&conn) {
            t.events.push((t_ns, what));
        }
    }

    pub fn snapshot(&self) -> BTreeMap<u64, Transcript> {
        lock(&self.0).clone()
    }
}

/// One gated frame a backend was about to handle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handling {
    pub player: String,
    /// The binding it was handled under (`gate/epoch`).
    pub binding: String,
    pub server: ProcessId,
    pub t_ns: u64,
}

/// Every handling of a run, in report order.
#[derive(Clone, Default)]
pub struct Handlings(Arc<Mutex<Vec<Handling>>>);

impl Handlings {
    pub fn snapshot(&self) -> Vec<Handling> {
        lock(&self.0).clone()
    }

    /// The server incarnation that reported the latest handling.
    pub fn latest_server(&self) -> Option<ProcessId> {
        lock(&self.0).last().map(|h| h.server)
    }

    /// The observer server incarnation `server` reports through (also to `tap`).
    pub fn observer(
        &self,
        server: ProcessId,
        now: TimeSource,
        tap: Option<EvidenceTap>,
    ) -> Arc<dyn HostObserver> {
        Arc::new(HandlingObserver { log: self.clone(), server, now, tap })
    }

    /// Takes a handling another process reported; false for other evidence.
    pub fn absorb(&self, evidence: &Evidence) -> bool {
        let Evidence::GateHandling { player, binding, server, t_ns } = evidence else { return false };
        lock(&self.0).push(Handling {
            player: player.clone(),
            binding: binding.clone(),
            server: *server,
            t_ns: *t_ns,
        });
        true
    }
}

struct HandlingObserver {
    log: Handlings,
    server: ProcessId,
    now: TimeSource,
    tap: Option<EvidenceTap>,
}

impl HostObserver for HandlingObserver {
    fn handling(&self, player: &str, binding: &str) {
        let t_ns = (self.now)();
        let ev = Evidence::GateHandling {
            player: player.into(),
            binding: binding.into(),
            server: self.server,
            t_ns,
        };
        if let Some(tap) = &self.tap {
            tap(&ev);
        }
        self.log.absorb(&ev);
    }
}
