//! What `object_lending` records: the clients' operations (logins, gifts, trades, inventory
//! reads) with their outcomes, every `sc_gift_received` a client got, and the servers' acts
//! on objects (the single-owner evidence, reported through [`engine::orm::OrmObserver`]).

use crate::evidence::{Evidence, EvidenceTap};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use engine::env::lock;
use engine::orm::{ObjectRef, OrmObserver};
use serde::{Deserialize, Serialize};

use crate::history::{History, ProcessId, Recorder, TimeSource};
use crate::roles::LatestActor;

/// One recorded client operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvOp {
    /// `cs_game_server_login` as `user` on `server` (creates the inventory if absent).
    Login { user: String, server: usize },
    /// `cs_gift` from `from` (the session's user) to `to`.
    Gift { from: String, to: String, item: String, count: i64 },
    /// `cs_trade` by `user` with `with`.
    Trade { user: String, with: String, give: BTreeMap<String, i64>, take: BTreeMap<String, i64> },
    /// `cs_inventory` of `user`.
    Inventory { user: String },
}

/// What a completed operation answered.
///
/// How answers map to outcomes: `Ok(Applied | Read | LoggedIn)`; a game-logic refusal
/// (`not enough items`, `unknown recipient`, ...) is `Ok(Refused)`: definite, nothing
/// changed; `try again`, `Not logged in` and a refused login are `Fail` (nothing changed);
/// `outcome unknown`, a timeout, a closed connection or an `_error` frame are `Info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvRes {
    /// The gift or trade committed.
    Applied,
    /// Refused by the game's rules; nothing changed.
    Refused(String),
    /// An inventory read.
    Read {
        gold: i64,
        items: BTreeMap<String, i64>,
    },
    LoggedIn,
}

pub type InvHistory = History<InvOp, InvRes>;
pub type Rec = Recorder<InvOp, InvRes>;

/// One `sc_gift_received`, as the client logged in as `user` got it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    pub user: String,
    pub from: String,
    pub item: String,
    pub count: i64,
    pub at_ns: u64,
}

/// Every `sc_gift_received` of the run.
#[derive(Clone, Default)]
pub struct Inbox(Arc<Mutex<Vec<Received>>>);

impl Inbox {
    pub fn push(&self, r: Received) {
        lock(&self.0).push(r);
    }
    pub fn snapshot(&self) -> Vec<Received> {
        lock(&self.0).clone()
    }
}

/// An owner instance of an object: the server incarnation and the fence it acted under.
pub type Owner = (ProcessId, u64);

/// First and last act of one owner instance on one object (true ns), and how many acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActSpan {
    pub start_ns: u64,
    pub end_ns: u64,
    pub acts: u64,
}

/// object (`model/key`) -> owner instance -> its acting span; the servers and which one acted
/// last; the object acted on last. Shared by every server of a run.
#[derive(Clone, Default)]
pub struct ObjectActs(
    Arc<Mutex<BTreeMap<String, BTreeMap<Owner, ActSpan>>>>,
    LatestActor,
    Arc<Mutex<Option<String>>>,
);

impl ObjectActs {
    pub fn record(&self, object: &str, owner: Owner, t_ns: u64) {
        let mut m = lock(&self.0);
        let span = m.entry(object.to_string()).or_default().entry(owner).or_insert(ActSpan {
            start_ns: t_ns,
            end_ns: t_ns,
            acts: 0,
        });
        span.start_ns = span.start_ns.min(t_ns);
        span.end_ns = span.end_ns.max(t_ns);
        span.acts += 1;
        drop(m);
        self.1.acted(owner.0);
        *lock(&self.2) = Some(object.to_string());
    }

    /// The object (`model/key`) acted on last, if any.
    pub fn latest_object(&self) -> Option<String> {
        lock(&self.2).clone()
    }

    /// The servers and which one acted on an object last.
    pub fn actors(&self) -> &LatestActor {
        &self.1
    }

    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<Owner, ActSpan>> {
        lock(&self.0).clone()
    }

    /// The observer server incarnation `server` reports through (also to `tap`, when the
    /// server runs in its own process).
    pub fn observer(
        &self,
        server: ProcessId,
        now: TimeSource,
        tap: Option<EvidenceTap>,
    ) -> Arc<dyn OrmObserver> {
        Arc::new(ActObserver { acts: self.clone(), server, now, tap })
    }

    /// Takes an act another process reported; false for other evidence.
    pub fn absorb(&self, evidence: &Evidence) -> bool {
        match evidence {
            Evidence::ObjectAct { object, server, fence, t_ns } => {
                self.record(object, (*server, *fence), *t_ns);
                true
            }
            _ => false,
        }
    }
}

struct ActObserver {
    acts: ObjectActs,
    server: ProcessId,
    now: TimeSource,
    tap: Option<EvidenceTap>,
}

impl OrmObserver for ActObserver {
    fn acted(&self, object: &ObjectRef, fence: u64) {
        let (object, t_ns) = (object.name(), (self.now)());
        if let Some(tap) = &self.tap {
            tap(&Evidence::ObjectAct { object: object.clone(), server: self.server, fence, t_ns });
        }
        self.acts.record(&object, (self.server, fence), t_ns);
    }
}
