//! What a `broadcast` run records: the operations ([`BOp`], [`BRes`]), one [`SessionRec`] per
//! client connection and every [`Receipt`] of a pushed frame, together a [`BroadcastHistory`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::history::{History, ProcessId};

/// Which accounts a broadcast is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Scope {
    /// Accounts logged in on the broadcaster's server.
    Local,
    /// Accounts logged in on any game server.
    Global,
}

impl Scope {
    pub fn wire(self) -> &'static str {
        match self {
            Scope::Local => "local",
            Scope::Global => "global",
        }
    }
}

/// A session: (client process, connection ordinal within the process).
pub type SessionKey = (ProcessId, u32);

/// One client operation; `session` is the connection ordinal of the invoking process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BOp {
    Login { server: String, account: String, session: u32 },
    Broadcast { server: String, session: u32, scope: Scope, id: String },
    Send { server: String, session: u32, to: String, id: String },
    Logout { server: String, session: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BRes {
    Login,
    Broadcast { delivered: u64 },
    Send { delivered: bool },
    Logout,
}

/// How a session's login went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LoginState {
    /// Not answered yet (the client was killed meanwhile).
    Pending,
    /// Logged in: the reply arrived at `at_ns` as frame `seq` of the connection.
    Ok { at_ns: u64, seq: u64 },
    /// The server answered with an error: this session was never logged in.
    Refused,
    /// No answer (timeout or close): it may or may not have been logged in.
    Unknown,
}

/// How a session ended (as the client saw it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndKind {
    /// The client closed the connection.
    Closed,
    /// The client saw the connection close.
    ServerClosed,
    /// The client gave up: a reply or the ticks stopped coming.
    GaveUp,
}

/// One client connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRec {
    pub process: ProcessId,
    pub ordinal: u32,
    pub server: String,
    pub account: String,
    pub connected_ns: u64,
    pub login: LoginState,
    /// Why the login was refused (the error message, or the `_error` code).
    pub refusal: Option<String>,
    /// `cs_logout` invoked at this time.
    pub logout_invoked_ns: Option<u64>,
    /// The successful logout reply: (arrival, frame seq).
    pub logout_reply: Option<(u64, u64)>,
    /// `None`: still open at the end of the run, or the client was killed.
    pub end: Option<(u64, EndKind)>,
}

impl SessionRec {
    pub fn key(&self) -> SessionKey {
        (self.process, self.ordinal)
    }
}

/// What a pushed frame was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Received {
    Broadcast { id: String, from: String },
    Message { id: String, from: String },
    Tick { seq: u64 },
    Other { msg_type: String },
}

/// One frame the server pushed on a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub process: ProcessId,
    pub session: u32,
    /// Position among the connection's frames (receipts and replies), from 1.
    pub seq: u64,
    /// True arrival time, ns.
    pub at_ns: u64,
    pub what: Received,
}

impl Receipt {
    pub fn key(&self) -> SessionKey {
        (self.process, self.session)
    }
}

/// Everything a run recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BroadcastHistory {
    pub ops: History<BOp, BRes>,
    pub sessions: Vec<SessionRec>,
    pub receipts: Vec<Receipt>,
}

/// Sessions and receipts, shared by every client of a run.
#[derive(Clone, Default)]
pub(super) struct SessionLog {
    inner: Arc<Mutex<LogState>>,
}

#[derive(Default)]
struct LogState {
    sessions: BTreeMap<SessionKey, SessionRec>,
    receipts: Vec<Receipt>,
}

impl SessionLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        engine::env::lock(&self.inner)
    }
    pub(super) fn open(&self, rec: SessionRec) {
        self.lock().sessions.insert(rec.key(), rec);
    }
    pub(super) fn update(&self, key: SessionKey, f: impl FnOnce(&mut SessionRec)) {
        if let Some(s) = self.lock().sessions.get_mut(&key) {
            f(s);
        }
    }
    pub(super) fn received(&self, r: Receipt) {
        self.lock().receipts.push(r);
    }
    pub(super) fn snapshot(&self) -> (Vec<SessionRec>, Vec<Receipt>) {
        let g = self.lock();
        (g.sessions.values().cloned().collect(), g.receipts.clone())
    }
}
