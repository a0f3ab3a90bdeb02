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
/// last; the object acted on last; what each server holds in transactions under way. Shared
/// by every server of a run.
#[derive(Clone, Default)]
pub struct ObjectActs {
    spans: Arc<Mutex<BTreeMap<String, BTreeMap<Owner, ActSpan>>>>,
    actors: LatestActor,
    latest_object: Arc<Mutex<Option<String>>>,
    holds: Arc<Mutex<Holds>>,
}

/// Where a transaction holding an object is: still taking its objects (the object was acted
/// on once, when taken), or committing (acted on again, its state sent to SQL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Taking,
    Committing,
}

/// The objects server incarnations hold in transactions under way (reported by this
/// process's servers only: acts absorbed from other processes carry no releases).
#[derive(Default)]
struct Holds {
    /// server incarnation -> object -> (stage, when it was taken: a sequence number).
    by_server: BTreeMap<ProcessId, BTreeMap<String, (Stage, u64)>>,
    next_seq: u64,
}

impl ObjectActs {
    pub fn record(&self, object: &str, owner: Owner, t_ns: u64) {
        let mut m = lock(&self.spans);
        let span = m.entry(object.to_string()).or_default().entry(owner).or_insert(ActSpan {
            start_ns: t_ns,
            end_ns: t_ns,
            acts: 0,
        });
        span.start_ns = span.start_ns.min(t_ns);
        span.end_ns = span.end_ns.max(t_ns);
        span.acts += 1;
        drop(m);
        self.actors.acted(owner.0);
        *lock(&self.latest_object) = Some(object.to_string());
    }

    /// Server incarnation `server`'s transaction acted on `object`: the first act takes it,
    /// the next is its commit.
    pub fn held(&self, server: ProcessId, object: &str) {
        let mut h = lock(&self.holds);
        let Holds { by_server, next_seq } = &mut *h;
        let objects = by_server.entry(server).or_default();
        match objects.get_mut(object) {
            Some((stage, _)) => *stage = Stage::Committing,
            None => {
                objects.insert(object.to_string(), (Stage::Taking, *next_seq));
                *next_seq += 1;
            }
        }
    }

    /// Server incarnation `server`'s transaction holding `object` ended.
    pub fn released(&self, server: ProcessId, object: &str) {
        let mut h = lock(&self.holds);
        if let Some(objects) = h.by_server.get_mut(&server) {
            objects.remove(object);
            if objects.is_empty() {
                h.by_server.remove(&server);
            }
        }
    }

    /// A server incarnation started: the earlier incarnations on its node (killed, so their
    /// transactions ended without a word) hold nothing any more.
    pub fn server_started(&self, server: ProcessId, node: &str) {
        self.actors.started_on(server, node);
        let mut h = lock(&self.holds);
        h.by_server.retain(|p, _| *p == server || self.actors.node_of(*p).as_deref() != Some(node));
    }

    /// The node of the server whose transaction took an object most recently and is still
    /// taking the others, before its commit (a pause now deposes an owner in the middle of a
    /// transaction, which carries on when it resumes), if any.
    pub fn taking_node(&self) -> Option<String> {
        let h = lock(&self.holds);
        let latest = h
            .by_server
            .iter()
            .flat_map(|(p, objects)| {
                objects.values().filter(|(s, _)| *s == Stage::Taking).map(move |(_, seq)| (*seq, *p))
            })
            .max();
        drop(h);
        latest.and_then(|(_, p)| self.actors.node_of(p))
    }

    /// The object (`model/key`) acted on last, if any.
    pub fn latest_object(&self) -> Option<String> {
        lock(&self.latest_object).clone()
    }

    /// The servers and which one acted on an object last.
    pub fn actors(&self) -> &LatestActor {
        &self.actors
    }

    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<Owner, ActSpan>> {
        lock(&self.spans).clone()
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
        self.acts.held(self.server, &object);
    }

    fn released(&self, object: &ObjectRef) {
        self.acts.released(self.server, &object.name());
    }
}
