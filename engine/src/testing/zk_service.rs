//! The simulated ZooKeeper service's state machine: the data tree, sessions and watches.
//!
//! **Fault model.** The ensemble is modelled as *one* linearizable service whose state (this
//! [`Service`]) is durable: killing and restarting the service node loses no committed write,
//! no session and no ephemeral (as a ZooKeeper quorum that elects a new leader), but it does
//! lose every connection and every server-side watch registration (clients re-register
//! them with `SetWatches` when they reconnect, as with a real leader change). While the
//! service is down, partitioned away or paused, clients see `Disconnected`; time during which
//! the service itself was unavailable never counts against a session (deadlines are reset
//! when the service starts and when it notices it was paused). Sessions expire only when the
//! *running* service has heard nothing on them for their negotiated timeout, measured on the
//! service node's monotonic clock; `ctime`/`mtime` come from its (skewable) wall clock.
//! **Not modelled**: quorum loss or minority partitions inside the ensemble, stale reads from
//! lagging followers (every read here is linearizable, which real ZooKeeper only promises
//! after `sync`), ACLs and auth (`aversion` stays 0), quotas, containers/TTL nodes, the
//! `sync` and `getEphemerals` calls, chroot, read-only mode, server-side request throttling.
//!
//! This module does no I/O: every call gets the current time from the caller and returns the
//! watch notifications it triggered, so it is unit-tested directly. It is the one ZooKeeper
//! model of the project: the simulator's ZooKeeper node (`sim::zk`) serves it over the
//! simulated network, and the in-memory [`FakeCoord`](super::FakeCoord) of unit tests calls
//! it directly.
//!
//! Size: about 680 lines of code (tests below): one state machine whose operations share the
//! data tree, the session table and the watch tables; `multi` must replay every other
//! operation against the same state, so they stay together.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::env::{
    parent_path, validate_path, CoordError, CreateMode, EventKind, MonoTime, MultiError, Op, OpResult, Stat,
    WallTime, WatchedEvent,
};
use bytes::Bytes;

/// A watch notification for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub session: i64,
    pub event: WatchedEvent,
}

#[derive(Debug, Clone)]
struct Node {
    data: Bytes,
    stat: Stat,
    children: BTreeSet<String>,
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub password: u64,
    pub timeout: Duration,
    /// Service monotonic time after which the session expires unless heard from.
    pub deadline: MonoTime,
    ephemerals: BTreeSet<String>,
}

/// Result of a connect handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    Established { session_id: i64, password: u64, timeout: Duration, new: bool },
    Expired,
}

/// The whole service state.
#[derive(Debug)]
pub struct Service {
    tick: Duration,
    /// `minSessionTimeout` / `maxSessionTimeout` when configured (else 2 and 20 ticks).
    min_timeout: Option<Duration>,
    max_timeout: Option<Duration>,
    nodes: BTreeMap<String, Node>,
    zxid: i64,
    sessions: BTreeMap<i64, Session>,
    /// Session ids are `session_base + n` (`session_base` is drawn like ZooKeeper's: server id
    /// in the top byte, the wall clock at first use below), so they are unique and
    /// deterministic under the simulator.
    session_base: Option<i64>,
    sessions_created: i64,
    data_watches: BTreeMap<String, BTreeSet<i64>>,
    child_watches: BTreeMap<String, BTreeSet<i64>>,
}

/// splitmix64: passwords are derived from the session id and a secret drawn once from the
/// store's state. The simulation needs unguessable-by-accident, not cryptographic, secrets.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A watch trigger recorded while a transaction runs; fired only if it commits.
struct Trigger {
    child: bool,
    path: String,
    kind: EventKind,
}

impl Trigger {
    fn data(path: &str, kind: EventKind) -> Self {
        Trigger { child: false, path: path.to_string(), kind }
    }
    fn child(path: &str, kind: EventKind) -> Self {
        Trigger { child: true, path: path.to_string(), kind }
    }
}

/// Undo log of a transaction in progress: the previous value of every touched node and
/// session-ephemeral set, restored in full if any operation fails.
#[derive(Default)]
struct Undo {
    nodes: BTreeMap<String, Option<Node>>,
    ephemerals: BTreeMap<i64, BTreeSet<String>>,
}

impl Default for Service {
    fn default() -> Self {
        Service::new(Duration::from_secs(2))
    }
}

impl Service {
    pub fn new(tick: Duration) -> Self {
        let mut nodes = BTreeMap::new();
        nodes.insert(
            "/".to_string(),
            Node { data: Bytes::new(), stat: Stat::default(), children: BTreeSet::new() },
        );
        Service {
            tick,
            min_timeout: None,
            max_timeout: None,
            nodes,
            zxid: 0,
            sessions: BTreeMap::new(),
            session_base: None,
            sessions_created: 0,
            data_watches: BTreeMap::new(),
            child_watches: BTreeMap::new(),
        }
    }

    pub fn set_tick(&mut self, tick: Duration) {
        self.tick = tick;
    }

    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// ZooKeeper's `minSessionTimeout` / `maxSessionTimeout` (`None`: 2 and 20 ticks).
    pub fn set_session_timeout_bounds(&mut self, min: Option<Duration>, max: Option<Duration>) {
        self.min_timeout = min;
        self.max_timeout = max;
    }

    /// The last applied transaction id.
    pub fn zxid(&self) -> i64 {
        self.zxid
    }

    pub fn session(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn session_ids(&self) -> Vec<i64> {
        self.sessions.keys().copied().collect()
    }

    /// Clamps a requested timeout to `[minSessionTimeout, maxSessionTimeout]` (by default
    /// `[2, 20] × tick`), as ZooKeeper does.
    pub fn negotiate(&self, requested: Duration) -> Duration {
        let min = self.min_timeout.unwrap_or(self.tick * 2);
        let max = self.max_timeout.unwrap_or(self.tick * 20).max(min);
        requested.clamp(min, max)
    }

    // ---- sessions ----

    /// Handles a connect handshake at monotonic time `now` (wall time `wall` seeds ids).
    /// Resuming a session drops its server-side watches: the client re-registers them.
    pub fn connect(
        &mut self,
        session_id: i64,
        password: u64,
        requested: Duration,
        now: MonoTime,
        wall: WallTime,
    ) -> ConnectOutcome {
        if session_id == 0 {
            let base = *self.session_base.get_or_insert_with(|| {
                let w = wall.as_millis() as u64;
                ((1i64) << 56) | (((w << 24) >> 8) as i64)
            });
            self.sessions_created += 1;
            let id = base.wrapping_add(self.sessions_created);
            let password = mix((id as u64) ^ mix(base as u64));
            let timeout = self.negotiate(requested);
            self.sessions.insert(
                id,
                Session {
                    id,
                    password,
                    timeout,
                    deadline: now.saturating_add(timeout),
                    ephemerals: BTreeSet::new(),
                },
            );
            return ConnectOutcome::Established { session_id: id, password, timeout, new: true };
        }
        match self.sessions.get_mut(&session_id) {
            Some(s) if s.password == password => {
                s.deadline = now.saturating_add(s.timeout);
                let (id, password, timeout) = (s.id, s.password, s.timeout);
                self.drop_watches_of(id);
                ConnectOutcome::Established { session_id: id, password, timeout, new: false }
            }
            _ => ConnectOutcome::Expired,
        }
    }

    /// Records that the session was heard from. False if it does not exist.
    pub fn touch(&mut self, session_id: i64, now: MonoTime) -> bool {
        match self.sessions.get_mut(&session_id) {
            Some(s) => {
                s.deadline = now.saturating_add(s.timeout);
                true
            }
            None => false,
        }
    }

    /// Restarts every session's countdown (the service was unavailable: restart or pause).
    pub fn touch_all(&mut self, now: MonoTime) {
        for s in self.sessions.values_mut() {
            s.deadline = now.saturating_add(s.timeout);
        }
    }

    /// Forgets every watch registration (the service restarted; connections are gone).
    pub fn drop_all_watches(&mut self) {
        self.data_watches.clear();
        self.child_watches.clear();
    }

    fn drop_watches_of(&mut self, session: i64) {
        for table in [&mut self.data_watches, &mut self.child_watches] {
            table.retain(|_, set| {
                set.remove(&session);
                !set.is_empty()
            });
        }
    }

    /// Expires every session whose deadline has passed. Returns the expired ids (ascending)
    /// and the notifications their ephemerals' deletion triggered.
    pub fn expire_due(&mut self, now: MonoTime) -> (Vec<i64>, Vec<Notification>) {
        let due: Vec<i64> = self.sessions.values().filter(|s| s.deadline <= now).map(|s| s.id).collect();
        let mut notes = Vec::new();
        for id in &due {
            crate::probe!("zk: session expired at the service");
            notes.extend(self.end_session(*id));
        }
        (due, notes)
    }

    /// Closes (or expires) a session: deletes its ephemerals in one transaction and forgets it.
    pub fn end_session(&mut self, session: i64) -> Vec<Notification> {
        let Some(s) = self.sessions.remove(&session) else { return Vec::new() };
        let mut notes = Vec::new();
        if s.ephemerals.is_empty() {
            self.drop_watches_of(session);
            return Vec::new();
        }
        let zxid = self.zxid + 1;
        let mut undo = Undo::default();
        // Deepest paths first is not needed (ephemerals have no children); sorted order.
        for path in &s.ephemerals {
            let r = self.apply_delete(path, None, zxid, &mut undo, &mut notes);
            debug_assert!(r.is_ok(), "ephemeral {path} of session {session:#x} missing: {r:?}");
        }
        self.zxid = zxid;
        // The session's own watches fire too (as in ZooKeeper, whose closeSession deletes the
        // ephemerals while the session's connection is still attached: a closing client is
        // told `NodeDeleted` before the close is confirmed); then the rest are forgotten.
        let notes = self.fire(notes);
        self.drop_watches_of(session);
        notes
    }

    // ---- requests ----

    /// Applies a write or read of `session`. `now` is the service's wall clock (for stats).
    pub fn create(
        &mut self,
        session: i64,
        path: &str,
        data: Bytes,
        mode: CreateMode,
        wall: WallTime,
    ) -> (Result<String, CoordError>, Vec<Notification>) {
        match self.multi(session, vec![Op::Create { path: path.to_string(), data, mode }], wall) {
            (Ok(mut r), n) => match r.pop() {
                Some(OpResult::Create(p)) => (Ok(p), n),
                other => unreachable!("create answered {other:?}"),
            },
            (Err(e), n) => (Err(e.error), n),
        }
    }

    pub fn delete(
        &mut self,
        session: i64,
        path: &str,
        version: Option<i32>,
        wall: WallTime,
    ) -> (Result<(), CoordError>, Vec<Notification>) {
        let (r, n) = self.multi(session, vec![Op::Delete { path: path.to_string(), version }], wall);
        (r.map(|_| ()).map_err(|e| e.error), n)
    }

    pub fn set_data(
        &mut self,
        session: i64,
        path: &str,
        data: Bytes,
        version: Option<i32>,
        wall: WallTime,
    ) -> (Result<Stat, CoordError>, Vec<Notification>) {
        match self.multi(session, vec![Op::SetData { path: path.to_string(), data, version }], wall) {
            (Ok(mut r), n) => match r.pop() {
                Some(OpResult::SetData(s)) => (Ok(s), n),
                other => unreachable!("set_data answered {other:?}"),
            },
            (Err(e), n) => (Err(e.error), n),
        }
    }

    /// Data and stat; with `watch`, leaves a data watch (only if the node exists).
    pub fn get_data(&mut self, session: i64, path: &str, watch: bool) -> Result<(Bytes, Stat), CoordError> {
        validate_path(path)?;
        let n = self.nodes.get(path).ok_or(CoordError::NoNode)?;
        let r = (n.data.clone(), n.stat);
        if watch {
            self.data_watches.entry(path.to_string()).or_default().insert(session);
        }
        Ok(r)
    }

    /// Stat if present; with `watch`, leaves a watch whether or not the node exists.
    pub fn exists(&mut self, session: i64, path: &str, watch: bool) -> Result<Option<Stat>, CoordError> {
        validate_path(path)?;
        let r = self.nodes.get(path).map(|n| n.stat);
        if watch {
            self.data_watches.entry(path.to_string()).or_default().insert(session);
        }
        Ok(r)
    }

    /// Sorted child names; with `watch`, leaves a child watch (only if the node exists).
    pub fn get_children(&mut self, session: i64, path: &str, watch: bool) -> Result<Vec<String>, CoordError> {
        validate_path(path)?;
        let n = self.nodes.get(path).ok_or(CoordError::NoNode)?;
        let r = n.children.iter().cloned().collect();
        if watch {
            self.child_watches.entry(path.to_string()).or_default().insert(session);
        }
        Ok(r)
    }

    /// Re-registers watches after a reconnect; fires at once those whose node changed after
    /// `zxid` (as ZooKeeper's `SetWatches`).
    pub fn set_watches(
        &mut self,
        session: i64,
        zxid: i64,
        data: &[String],
        exist: &[String],
        child: &[String],
    ) -> Vec<Notification> {
        let mut notes = Vec::new();
        let mut note = |kind, path: &str| {
            notes.push(Notification { session, event: WatchedEvent { kind, path: path.to_string() } })
        };
        for p in data {
            match self.nodes.get(p) {
                None => note(EventKind::NodeDeleted, p),
                Some(n) if n.stat.mzxid > zxid => note(EventKind::NodeDataChanged, p),
                Some(_) => {
                    self.data_watches.entry(p.clone()).or_default().insert(session);
                }
            }
        }
        for p in exist {
            match self.nodes.get(p) {
                Some(_) => note(EventKind::NodeCreated, p),
                None => {
                    self.data_watches.entry(p.clone()).or_default().insert(session);
                }
            }
        }
        for p in child {
            match self.nodes.get(p) {
                None => note(EventKind::NodeDeleted, p),
                Some(n) if n.stat.pzxid > zxid => note(EventKind::NodeChildrenChanged, p),
                Some(_) => {
                    self.child_watches.entry(p.clone()).or_default().insert(session);
                }
            }
        }
        crate::probe!(
            !notes.is_empty(),
            "zk: re-registered watches fired for changes missed while disconnected"
        );
        notes
    }

    /// All-or-nothing transaction. All its operations share one zxid (as in ZooKeeper); a
    /// failed transaction consumes no zxid and triggers no watch.
    pub fn multi(
        &mut self,
        session: i64,
        ops: Vec<Op>,
        wall: WallTime,
    ) -> (Result<Vec<OpResult>, MultiError>, Vec<Notification>) {
        let zxid = self.zxid + 1;
        let mut undo = Undo::default();
        let mut notes = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for (index, op) in ops.into_iter().enumerate() {
            let r = match op {
                Op::Create { path, data, mode } => self
                    .apply_create(session, &path, data, mode, zxid, wall, &mut undo, &mut notes)
                    .map(OpResult::Create),
                Op::Delete { path, version } => {
                    self.apply_delete(&path, version, zxid, &mut undo, &mut notes).map(|()| OpResult::Delete)
                }
                Op::SetData { path, data, version } => self
                    .apply_set(&path, data, version, zxid, wall, &mut undo, &mut notes)
                    .map(OpResult::SetData),
                Op::Check { path, version } => self.apply_check(&path, version).map(|()| OpResult::Check),
            };
            match r {
                Ok(r) => results.push(r),
                Err(error) => {
                    self.rollback(undo);
                    return (Err(MultiError { index, error }), Vec::new());
                }
            }
        }
        if !undo.nodes.is_empty() {
            self.zxid = zxid;
        }
        (Ok(results), self.fire(notes))
    }

    fn rollback(&mut self, undo: Undo) {
        for (path, old) in undo.nodes {
            match old {
                Some(n) => {
                    self.nodes.insert(path, n);
                }
                None => {
                    self.nodes.remove(&path);
                }
            }
        }
        for (id, eph) in undo.ephemerals {
            if let Some(s) = self.sessions.get_mut(&id) {
                s.ephemerals = eph;
            }
        }
    }

    fn save(&self, undo: &mut Undo, path: &str) {
        if !undo.nodes.contains_key(path) {
            undo.nodes.insert(path.to_string(), self.nodes.get(path).cloned());
        }
    }

    fn save_eph(&self, undo: &mut Undo, session: i64) {
        if let Some(s) = self.sessions.get(&session) {
            undo.ephemerals.entry(session).or_insert_with(|| s.ephemerals.clone());
        }
    }

    /// Fires the watches a committed transaction triggered, in order.
    fn fire(&mut self, triggers: Vec<Trigger>) -> Vec<Notification> {
        let mut notes = Vec::new();
        for t in triggers {
            let table = if t.child { &mut self.child_watches } else { &mut self.data_watches };
            Self::trigger(table, &t.path, t.kind, &mut notes);
        }
        notes
    }

    fn trigger(
        table: &mut BTreeMap<String, BTreeSet<i64>>,
        path: &str,
        kind: EventKind,
        notes: &mut Vec<Notification>,
    ) {
        if let Some(set) = table.remove(path) {
            for session in set {
                let event = WatchedEvent { kind, path: path.to_string() };
                let n = Notification { session, event };
                if !notes.contains(&n) {
                    notes.push(n);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_create(
        &mut self,
        session: i64,
        path: &str,
        data: Bytes,
        mode: CreateMode,
        zxid: i64,
        wall: WallTime,
        undo: &mut Undo,
        notes: &mut Vec<Trigger>,
    ) -> Result<String, CoordError> {
        // A sequential path may end in '/' (ZooKeeper validates `path + "1"`).
        if mode.is_sequential() {
            validate_path(&format!("{path}1"))?;
        } else {
            validate_path(path)?;
        }
        if path == "/" {
            return Err(CoordError::NodeExists);
        }
        // The parent of `path + suffix` (the same for every suffix).
        let probe = format!("{path}x");
        let parent = parent_path(if mode.is_sequential() { &probe } else { path })
            .map(str::to_string)
            .ok_or_else(|| CoordError::BadArguments(format!("no parent: {path:?}")))?;
        if mode.is_ephemeral() && !self.sessions.contains_key(&session) {
            return Err(CoordError::SessionExpired);
        }
        let pnode = self.nodes.get(&parent).ok_or(CoordError::NoNode)?;
        if pnode.stat.ephemeral_owner != 0 {
            return Err(CoordError::NoChildrenForEphemerals);
        }
        let full = if mode.is_sequential() {
            // ZooKeeper numbers sequential children with its *internal* cversion, which
            // counts child creations only; the `cversion` it reports in a `Stat` is
            // `2 × internal − numChildren` (creations plus deletions). Ours is the reported
            // one, so the internal counter is `(cversion + numChildren) / 2`.
            let creations = (pnode.stat.cversion + pnode.stat.num_children) / 2;
            format!("{path}{creations:010}")
        } else {
            path.to_string()
        };
        if self.nodes.contains_key(&full) {
            return Err(CoordError::NodeExists);
        }
        self.save(undo, &parent);
        self.save(undo, &full);
        let name = full[full.rfind('/').map(|i| i + 1).unwrap_or(0)..].to_string();
        let p = self.nodes.get_mut(&parent).expect("parent checked above");
        p.stat.cversion += 1;
        p.stat.pzxid = zxid;
        p.children.insert(name);
        p.stat.num_children = p.children.len() as i32;
        let owner = if mode.is_ephemeral() { session } else { 0 };
        let stat = Stat {
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            ctime: wall.as_millis(),
            mtime: wall.as_millis(),
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            data_length: data.len() as i32,
            num_children: 0,
        };
        self.nodes.insert(full.clone(), Node { data, stat, children: BTreeSet::new() });
        if owner != 0 {
            self.save_eph(undo, owner);
            if let Some(s) = self.sessions.get_mut(&owner) {
                s.ephemerals.insert(full.clone());
            }
        }
        notes.push(Trigger::data(&full, EventKind::NodeCreated));
        notes.push(Trigger::child(&parent, EventKind::NodeChildrenChanged));
        Ok(full)
    }

    fn apply_delete(
        &mut self,
        path: &str,
        version: Option<i32>,
        zxid: i64,
        undo: &mut Undo,
        notes: &mut Vec<Trigger>,
    ) -> Result<(), CoordError> {
        validate_path(path)?;
        let Some(parent) = parent_path(path) else {
            return Err(CoordError::BadArguments("cannot delete /".to_string()));
        };
        let n = self.nodes.get(path).ok_or(CoordError::NoNode)?;
        if version.is_some_and(|v| v != n.stat.version) {
            return Err(CoordError::BadVersion);
        }
        if !n.children.is_empty() {
            return Err(CoordError::NotEmpty);
        }
        let owner = n.stat.ephemeral_owner;
        let parent = parent.to_string();
        self.save(undo, path);
        self.save(undo, &parent);
        self.nodes.remove(path);
        let name = &path[path.rfind('/').map(|i| i + 1).unwrap_or(0)..];
        if let Some(p) = self.nodes.get_mut(&parent) {
            p.children.remove(name);
            p.stat.cversion += 1;
            p.stat.pzxid = zxid;
            p.stat.num_children = p.children.len() as i32;
        }
        if owner != 0 {
            self.save_eph(undo, owner);
            if let Some(s) = self.sessions.get_mut(&owner) {
                s.ephemerals.remove(path);
            }
        }
        notes.push(Trigger::data(path, EventKind::NodeDeleted));
        notes.push(Trigger::child(path, EventKind::NodeDeleted));
        notes.push(Trigger::child(&parent, EventKind::NodeChildrenChanged));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_set(
        &mut self,
        path: &str,
        data: Bytes,
        version: Option<i32>,
        zxid: i64,
        wall: WallTime,
        undo: &mut Undo,
        notes: &mut Vec<Trigger>,
    ) -> Result<Stat, CoordError> {
        validate_path(path)?;
        let n = self.nodes.get(path).ok_or(CoordError::NoNode)?;
        if version.is_some_and(|v| v != n.stat.version) {
            return Err(CoordError::BadVersion);
        }
        self.save(undo, path);
        let n = self.nodes.get_mut(path).expect("checked above");
        n.stat.version += 1;
        n.stat.mzxid = zxid;
        n.stat.mtime = wall.as_millis();
        n.stat.data_length = data.len() as i32;
        n.data = data;
        let stat = n.stat;
        notes.push(Trigger::data(path, EventKind::NodeDataChanged));
        Ok(stat)
    }

    fn apply_check(&self, path: &str, version: Option<i32>) -> Result<(), CoordError> {
        validate_path(path)?;
        let n = self.nodes.get(path).ok_or(CoordError::NoNode)?;
        if version.is_some_and(|v| v != n.stat.version) {
            return Err(CoordError::BadVersion);
        }
        Ok(())
    }

    /// Number of znodes, root included (for tests and traces).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: WallTime = WallTime(1_000);

    fn svc() -> (Service, i64, i64) {
        let mut s = Service::new(Duration::from_secs(2));
        let now = MonoTime(0);
        let a = match s.connect(0, 0, Duration::from_secs(10), now, W) {
            ConnectOutcome::Established { session_id, .. } => session_id,
            ConnectOutcome::Expired => unreachable!(),
        };
        let b = match s.connect(0, 0, Duration::from_secs(1), now, W) {
            ConnectOutcome::Established { session_id, timeout, .. } => {
                assert_eq!(timeout, Duration::from_secs(4), "clamped to 2 ticks");
                session_id
            }
            ConnectOutcome::Expired => unreachable!(),
        };
        (s, a, b)
    }

    #[test]
    fn sessions_negotiate_resume_and_expire() {
        let (mut s, a, b) = svc();
        assert_ne!(a, b);
        assert_eq!(s.negotiate(Duration::from_secs(100)), Duration::from_secs(40));
        let pw = s.session(a).unwrap().password;
        assert_eq!(s.connect(a, pw ^ 1, Duration::ZERO, MonoTime(0), W), ConnectOutcome::Expired);
        assert!(matches!(
            s.connect(a, pw, Duration::ZERO, MonoTime(0), W),
            ConnectOutcome::Established { new: false, .. }
        ));
        s.create(b, "/e", Bytes::new(), CreateMode::Ephemeral, W).0.unwrap();
        s.exists(a, "/e", true).unwrap();
        let secs = |n: u64| MonoTime(n * 1_000_000_000);
        assert!(s.touch(b, secs(1)));
        let (gone, notes) = s.expire_due(secs(4));
        assert!(gone.is_empty() && notes.is_empty());
        let (gone, notes) = s.expire_due(secs(5));
        assert_eq!(gone, vec![b]);
        assert_eq!(
            notes,
            vec![Notification {
                session: a,
                event: WatchedEvent { kind: EventKind::NodeDeleted, path: "/e".into() }
            }]
        );
        assert_eq!(s.exists(a, "/e", false), Ok(None));
        assert_eq!(s.connect(b, 0, Duration::ZERO, secs(5), W), ConnectOutcome::Expired);
        s.touch_all(secs(100));
        assert_eq!(s.session(a).unwrap().deadline, secs(110));
    }

    #[test]
    fn configured_timeout_bounds_and_closing_sessions_own_watches() {
        let (mut s, a, b) = svc();
        s.set_session_timeout_bounds(Some(Duration::from_millis(500)), Some(Duration::from_secs(40)));
        assert_eq!(s.negotiate(Duration::from_millis(100)), Duration::from_millis(500));
        assert_eq!(s.negotiate(Duration::from_secs(120)), Duration::from_secs(40));
        s.create(a, "/e", Bytes::new(), CreateMode::Ephemeral, W).0.unwrap();
        s.exists(a, "/e", true).unwrap();
        s.exists(b, "/e", true).unwrap();
        // Closing `a` deletes its ephemeral and tells both sessions, `a` included.
        let sessions: Vec<i64> = s.end_session(a).iter().map(|n| n.session).collect();
        assert_eq!(sessions, vec![a, b]);
        // And then forgets `a`'s other watches.
        s.create(b, "/x", Bytes::new(), CreateMode::Persistent, W).0.unwrap();
        assert!(s.data_watches.is_empty() && s.child_watches.is_empty());
    }

    #[test]
    fn multi_rollback_restores_everything() {
        let (mut s, a, _) = svc();
        s.create(a, "/p", Bytes::from_static(b"0"), CreateMode::Persistent, W).0.unwrap();
        s.get_children(a, "/p", true).unwrap();
        let before = (s.zxid(), s.exists(a, "/p", false).unwrap());
        let (r, notes) = s.multi(
            a,
            vec![
                Op::Create { path: "/p/e".into(), data: Bytes::new(), mode: CreateMode::EphemeralSequential },
                Op::Delete { path: "/p".into(), version: None },
            ],
            W,
        );
        assert_eq!(r, Err(MultiError { index: 1, error: CoordError::NotEmpty }));
        assert!(notes.is_empty());
        assert_eq!((s.zxid(), s.exists(a, "/p", false).unwrap()), before);
        assert!(s.session(a).unwrap().ephemerals.is_empty());
        // The child watch was not consumed by the rolled-back transaction.
        let (_, notes) = s.create(a, "/p/c", Bytes::new(), CreateMode::Persistent, W);
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].event.kind, EventKind::NodeChildrenChanged);
    }

    #[test]
    fn set_watches_fires_missed_changes() {
        let (mut s, a, b) = svc();
        s.create(a, "/x", Bytes::new(), CreateMode::Persistent, W).0.unwrap();
        let z = s.zxid();
        s.set_data(b, "/x", Bytes::from_static(b"1"), None, W).0.unwrap();
        let notes = s.set_watches(a, z, &["/x".into()], &["/y".into()], &["/x".into(), "/gone".into()]);
        let kinds: Vec<_> = notes.iter().map(|n| (n.event.kind, n.event.path.as_str())).collect();
        assert_eq!(kinds, vec![(EventKind::NodeDataChanged, "/x"), (EventKind::NodeDeleted, "/gone")]);
        let (_, notes) = s.create(b, "/y", Bytes::new(), CreateMode::Persistent, W);
        assert_eq!(notes[0].event.kind, EventKind::NodeCreated);
        assert_eq!(notes[0].session, a);
    }
}
