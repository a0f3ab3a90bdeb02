//! What `deferred_commands` records: the clients' operations (logins, state reads, packs,
//! purchases) with what the servers answered, and every pack execution the servers report
//! through [`engine::commands::CommandsObserver`] (the evidence that one user's packs never
//! run at once on a server).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use engine::commands::{CommandsObserver, Outcome};
use engine::env::lock;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::evidence::{Evidence, EvidenceTap};
use crate::history::{History, ProcessId, Recorder, TimeSource};

/// One recorded client operation. `conn` numbers a client's connections (unique in the run):
/// a server handles one connection's requests one at a time in the order sent, so a request
/// sent after another on one connection sees what the other's answer promised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmdOp {
    /// `cs_game_server_login` as `user` on `server`.
    Login { user: String, server: usize },
    /// `cs_state` of `user`, sent on connection `conn`.
    State { user: String, conn: u64 },
    /// `cs_commands` of `user` on connection `conn`; `resend`: the same pack was sent before.
    Pack { user: String, conn: u64, pack_id: u64, basis: u64, commands: Vec<Value>, resend: bool },
    /// `cs_buy_now` of `user`; `retry`: the same purchase was sent before.
    BuyNow { user: String, purchase_id: String, gold: i64, retry: bool },
}

impl CmdOp {
    pub fn user(&self) -> &str {
        match self {
            CmdOp::Login { user, .. }
            | CmdOp::State { user, .. }
            | CmdOp::Pack { user, .. }
            | CmdOp::BuyNow { user, .. } => user,
        }
    }
}

/// The farm as an `sc_state` showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateSeen {
    pub gold: i64,
    pub buildings: BTreeMap<String, u32>,
    pub epoch: u64,
    pub next_pack: u64,
}

/// What a completed operation answered.
///
/// How answers map to outcomes: every definite answer is `Ok` (an ack, a reload, a refusal
/// that stored nothing: `malformed`, `gap`, `future_basis`, `full`, `invalid`, `id_reused`);
/// `Not logged in` and `cs_state`'s `try again` are `Fail`; a `server` refusal (the object
/// store failed: it may have stored or applied), a timeout, a closed connection or an `_error`
/// frame are `Info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmdRes {
    LoggedIn,
    /// `sc_state`.
    State(StateSeen),
    /// `sc_retry_after`.
    RetryAfter {
        ms: u64,
    },
    /// `sc_commands_ack`.
    Acked {
        resent: bool,
    },
    /// `sc_reload`: not stored; the state is at `epoch`.
    Reload {
        epoch: u64,
    },
    /// A definite refusal (nothing stored or applied); `expected` for a `gap`.
    Refused {
        code: String,
        expected: Option<u64>,
    },
    /// `sc_buy_now {error: false}`.
    Bought {
        gold: i64,
        epoch: u64,
        duplicate: bool,
    },
}

pub type CmdHistory = History<CmdOp, CmdRes>;
pub type Rec = Recorder<CmdOp, CmdRes>;

/// One pack execution a server reported: `executing` at `start_ns`, `executed` at `end_ns`
/// (`None`: never reported, e.g. the server was killed), committed or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Execution {
    /// The server incarnation.
    pub server: ProcessId,
    pub user: String,
    pub pack_id: u64,
    pub start_ns: u64,
    pub end_ns: Option<u64>,
    /// `Some((outcome, epoch))` if its commit succeeded.
    pub committed: Option<(Outcome, u64)>,
}

/// Every pack execution of a run, in start order. Shared by every server of a run.
#[derive(Clone, Default)]
pub struct Executions(Arc<Mutex<Vec<Execution>>>);

impl Executions {
    pub fn snapshot(&self) -> Vec<Execution> {
        lock(&self.0).clone()
    }

    /// The server incarnation of the latest execution still running, if any.
    pub fn executing(&self) -> Option<ProcessId> {
        lock(&self.0).iter().rev().find(|e| e.end_ns.is_none()).map(|e| e.server)
    }

    /// The observer server incarnation `server` reports through (also to `tap`, when the
    /// server runs in its own process).
    pub fn observer(
        &self,
        server: ProcessId,
        now: TimeSource,
        tap: Option<EvidenceTap>,
    ) -> Arc<dyn CommandsObserver> {
        Arc::new(ExecObserver { log: self.clone(), server, now, tap })
    }

    fn start(&self, server: ProcessId, user: &str, pack_id: u64, start_ns: u64) {
        lock(&self.0).push(Execution {
            server,
            user: user.to_string(),
            pack_id,
            start_ns,
            end_ns: None,
            committed: None,
        });
    }

    fn end(
        &self,
        server: ProcessId,
        user: &str,
        pack_id: u64,
        end_ns: u64,
        committed: Option<(Outcome, u64)>,
    ) {
        let mut log = lock(&self.0);
        // The oldest open execution of this pack on this server.
        if let Some(e) = log
            .iter_mut()
            .find(|e| e.server == server && e.user == user && e.pack_id == pack_id && e.end_ns.is_none())
        {
            e.end_ns = Some(end_ns);
            e.committed = committed;
        }
    }

    /// Takes an execution report another process made; false for other evidence.
    pub fn absorb(&self, evidence: &Evidence) -> bool {
        match evidence {
            Evidence::PackExecuting { user, pack_id, server, t_ns } => {
                self.start(*server, user, *pack_id, *t_ns)
            }
            Evidence::PackExecuted { user, pack_id, server, t_ns, committed } => {
                self.end(*server, user, *pack_id, *t_ns, *committed)
            }
            _ => return false,
        }
        true
    }
}

struct ExecObserver {
    log: Executions,
    server: ProcessId,
    now: TimeSource,
    tap: Option<EvidenceTap>,
}

impl CommandsObserver for ExecObserver {
    fn executing(&self, user: &str, pack_id: u64) {
        let t_ns = (self.now)();
        if let Some(tap) = &self.tap {
            tap(&Evidence::PackExecuting { user: user.to_string(), pack_id, server: self.server, t_ns });
        }
        self.log.start(self.server, user, pack_id, t_ns);
    }

    fn executed(&self, user: &str, pack_id: u64, committed: Option<(Outcome, u64)>) {
        let t_ns = (self.now)();
        if let Some(tap) = &self.tap {
            tap(&Evidence::PackExecuted {
                user: user.to_string(),
                pack_id,
                server: self.server,
                t_ns,
                committed,
            });
        }
        self.log.end(self.server, user, pack_id, t_ns, committed);
    }
}
