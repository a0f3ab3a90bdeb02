//! `coord_lock`: a distributed lock on the `Coord` port guarding writes to a `Kv` key with a
//! fencing token.
//!
//! Recipe (ZooKeeper's lock recipe with Curator's "protected" names): each contender creates
//! an ephemeral-sequential znode `/lock/<guid>-<seq>`; the lowest sequence holds the lock;
//! others watch their predecessor. The holder's **fencing token** is its sequence number.
//! A holder acts only while its session is `Connected`, but that is not enough: a holder can
//! be paused (GC, VM stall) between its check and its write, long enough for the service to
//! expire its session and grant the lock to someone else. The guarded write therefore checks
//! the token at the store, atomically: it compare-and-sets `{token, log}` only if the stored
//! token is not newer than its own.
//!
//! Invariants (over the final value of the guarded key and the history):
//! - tokens in the write log never decrease (no write with a stale token was accepted after a
//!   newer holder's write, i.e. holders' acting intervals never interleave);
//! - every acknowledged write is in the log (nothing acknowledged was lost), and every log
//!   entry was really issued;
//! - liveness: after the heal, some holder gets a write accepted within the bound.
//!
//! Planted bug `no-fencing`: the holder writes with a plain SET, without the token check.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::env::{
    timeout, Coord, CoordError, CreateMode, Env, KvError, RandExt, SessionOptions, SessionState, SetOptions,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

use crate::checker::Report;
use crate::faults::{FaultKind, FaultSpace};
use crate::history::{History, OpHandle, Outcome, ProcessId, Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, Topology,
};

const LOCK_DIR: &str = "/lock";
const GUARDED_KEY: &str = "fenced";
const CLIENTS: usize = 4;
/// ZooKeeper's smallest session timeout at its default tick (2 × tickTime): a pause past it
/// (plus a new holder's first write) deposes a holder.
const SESSION_TIMEOUT: Duration = Duration::from_secs(4);
/// Attempts of the read/compare-and-set loop of one guarded write before giving up.
const CAS_ATTEMPTS_MAX: u32 = 8;
/// Attempts to create (or find) our lock node before giving up on the session.
const CREATE_ATTEMPTS_MAX: u32 = 10;
/// Attempts to delete our lock node before giving up on the session.
const RELEASE_ATTEMPTS_MAX: u32 = 10;

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "no-fencing",
    description: "holders write with a plain SET, without checking the fencing token at the store",
    caught_within_seeds: 50,
}];

pub struct CoordLock;

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &[
    "coord_lock: stale fencing token rejected at the store",
    "redis client: outcome unknown (maybe applied)",
    "zk client: connection lost, session kept",
    "zk: session expired at the service",
];

/// Checked on the clients only, so it runs live too.
const META: ScenarioMeta = ScenarioMeta {
    name: "coord_lock",
    description:
        "ZooKeeper lock recipe + fenced writes to Redis under pauses, partitions, kills and clock faults",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

impl Scenario for CoordLock {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, _bug: Option<&str>) -> Topology {
        Topology {
            zookeeper: true,
            redis: Some(RedisSpec { persistent: true, stale_read_probability: 0.0 }),
            sql: None,
            servers: vec![],
            clients: CLIENTS,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 25_000, 15_000)
            .liveness_bound_ms(12_000)
            // Longer than the session timeout, so pauses and partitions expire sessions.
            .faults(3, 9, 12_000)
            .kill(&[Nodes::All])
            .pause(&[Nodes::Clients, Nodes::Zk])
            .partition(&[Nodes::All])
            .clock(&[Nodes::All], 10_000, 20_000)
            .network()
            .weight(FaultKind::Pause, 6)
            // A pause deposes a holder only if it hits the holder: aim half the pauses at it.
            .aim(FaultKind::Pause, &[ROLE_HOLDER])
            .build()
    }
    fn start(&self, bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run {
            rec: Recorder::new(now),
            no_fencing: bug == Some("no-fencing"),
            holder: Holder::default(),
        })
    }
}

/// A guarded write, as the history records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardedWrite {
    pub token: u64,
    pub seq: u64,
}

/// What the store said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteResult {
    Accepted,
    /// The store holds a newer token: this holder is stale.
    RejectedStale {
        current: u64,
    },
}

/// The guarded value in Redis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guarded {
    pub token: u64,
    /// Every accepted write, in acceptance order: (token, process, seq).
    pub log: Vec<(u64, ProcessId, u64)>,
}

struct Run {
    rec: Recorder<GuardedWrite, WriteResult>,
    no_fencing: bool,
    holder: Holder,
}

/// The role of the client that last acquired the lock and has not released it yet.
const ROLE_HOLDER: &str = "lock-holder";

/// Which client (topology index) believes it holds the lock, for faults aimed at
/// [`ROLE_HOLDER`].
#[derive(Clone, Default)]
struct Holder(Arc<std::sync::Mutex<Option<usize>>>);

impl Holder {
    fn set(&self, index: usize) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(index);
    }
    /// Clears the holder if it is still `index`.
    fn clear(&self, index: usize) {
        let mut h = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *h == Some(index) {
            *h = None;
        }
    }
    fn get(&self) -> Option<usize> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn kv_outcome(rec: &Recorder<GuardedWrite, WriteResult>, h: OpHandle, e: &KvError) {
    if e.maybe_applied() {
        rec.info(h)
    } else {
        rec.fail(h)
    }
}

/// Sequence number of a sequential znode name (`<guid>-0000000042` -> 42).
fn seq_of(name: &str) -> Option<u64> {
    name.rsplit('-').next().and_then(|s| s.parse().ok())
}

impl Run {
    async fn guarded_write(&self, env: &Env, process: ProcessId, token: u64, seq: u64) {
        let h = self.rec.invoke(process, GuardedWrite { token, seq });
        for _ in 0..CAS_ATTEMPTS_MAX {
            let cur_bytes = match env.kv.get(GUARDED_KEY).await {
                Ok(v) => v,
                Err(e) => return kv_outcome(&self.rec, h, &e),
            };
            let cur: Guarded = match &cur_bytes {
                Some(b) => match serde_json::from_slice(b) {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(error = %e, "guarded value is not valid JSON");
                        return self.rec.fail(h);
                    }
                },
                None => Guarded::default(),
            };
            if !self.no_fencing && cur.token > token {
                engine::probe!("coord_lock: stale fencing token rejected at the store");
                tracing::info!(token, current = cur.token, "stale fencing token rejected");
                return self.rec.ok(h, WriteResult::RejectedStale { current: cur.token });
            }
            let mut next = cur.clone();
            next.token = token;
            next.log.push((token, process, seq));
            let next_bytes = Bytes::from(serde_json::to_vec(&next).expect("serialisable"));
            let r = if self.no_fencing {
                env.kv.set(GUARDED_KEY, next_bytes, SetOptions::default()).await
            } else {
                env.kv.compare_and_set(GUARDED_KEY, cur_bytes, Some(next_bytes), None).await
            };
            match r {
                Ok(true) => return self.rec.ok(h, WriteResult::Accepted),
                Ok(false) => {
                    engine::probe!("coord_lock: guarded write lost a compare-and-set race, retried");
                    continue;
                }
                Err(e) => return kv_outcome(&self.rec, h, &e),
            }
        }
        // Every compare-and-set lost a race: nothing was written.
        self.rec.fail(h)
    }

    /// One lock round: acquire, do a few guarded writes, release. Returns the session to
    /// reuse, or `None` if it ended.
    async fn round(&self, ctx: &ClientCtx, coord: Arc<dyn Coord>, seq: &mut u64) -> Option<Arc<dyn Coord>> {
        let env = &ctx.env;
        match coord.create(LOCK_DIR, Bytes::new(), CreateMode::Persistent).await {
            Ok(_) | Err(CoordError::NodeExists) => {}
            Err(e) => return keep_if_alive(coord, e),
        }
        let guid = env.rand.uuid().simple().to_string();
        let prefix = format!("{LOCK_DIR}/{guid}-");
        let Some(mine) = create_lock_node(env, &coord, &guid, &prefix).await else {
            return keep_if_alive(coord, CoordError::SessionExpired);
        };
        let my_name = mine.rsplit('/').next().unwrap_or_default().to_string();
        let token = seq_of(&my_name)?;
        // Wait until ours is the lowest sequence number. Transient errors are retried with
        // the same znode: giving up on it while the session lives would leave an orphan at
        // the head of the queue that nobody ever deletes.
        loop {
            if ctx.phases.finished() {
                release(env, &coord, &mine).await;
                return Some(coord);
            }
            let mut children = match coord.get_children(LOCK_DIR).await {
                Ok(c) => c,
                Err(e) => {
                    if !retry_after(env, &coord, e).await {
                        return None;
                    }
                    continue;
                }
            };
            children.sort_by_key(|c| seq_of(c).unwrap_or(u64::MAX));
            let Some(pos) = children.iter().position(|c| *c == my_name) else {
                // Our node is gone: the session expired under us.
                return keep_if_alive(coord, CoordError::SessionExpired);
            };
            if pos == 0 {
                break;
            }
            let pred = format!("{LOCK_DIR}/{}", children[pos - 1]);
            match coord.exists_w(&pred).await {
                Ok((None, _)) => continue,
                Ok((Some(_), watcher)) => {
                    let _ = timeout(&*env.clock, Duration::from_secs(2), watcher).await;
                }
                Err(e) => {
                    if !retry_after(env, &coord, e).await {
                        return None;
                    }
                }
            }
        }
        tracing::info!(token, "lock acquired");
        self.holder.set(ctx.index);
        let writes = env.rand.gen_range(1..4);
        for _ in 0..writes {
            if coord.state() != SessionState::Connected {
                tracing::info!(token, "session not connected: stop acting");
                break;
            }
            // "Work" between the check and the write: the window a pause can hit.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(100..1000))).await;
            *seq += 1;
            self.guarded_write(env, ctx.process, token, *seq).await;
        }
        release(env, &coord, &mine).await;
        self.holder.clear(ctx.index);
        tracing::info!(token, "lock released");
        Some(coord)
    }
}

/// Keeps the session for the next round unless the error ended it.
fn keep_if_alive(coord: Arc<dyn Coord>, e: CoordError) -> Option<Arc<dyn Coord>> {
    match e {
        CoordError::SessionExpired | CoordError::Closed => None,
        _ if coord.state().is_terminal() => None,
        _ => Some(coord),
    }
}

/// Creates our ephemeral-sequential lock node, surviving connection loss: a create that may
/// have applied is looked up by its guid before it is retried, so a session never leaves an
/// orphan node in the queue. `None` if the session ended or attempts ran out (then the
/// session is closed, which removes any node it made).
async fn create_lock_node(env: &Env, coord: &Arc<dyn Coord>, guid: &str, prefix: &str) -> Option<String> {
    for _ in 0..CREATE_ATTEMPTS_MAX {
        match coord.create(prefix, Bytes::new(), CreateMode::EphemeralSequential).await {
            Ok(p) => return Some(p),
            Err(CoordError::ConnectionLoss { maybe_applied: true }) => {
                // Look for it until we get an answer.
                for _ in 0..CREATE_ATTEMPTS_MAX {
                    if !retry_after(env, coord, CoordError::ConnectionLoss { maybe_applied: true }).await {
                        return None;
                    }
                    match coord.get_children(LOCK_DIR).await {
                        Ok(children) => {
                            if let Some(c) = children.iter().find(|c| c.starts_with(guid)) {
                                return Some(format!("{LOCK_DIR}/{c}"));
                            }
                            break; // not applied: create again
                        }
                        Err(e) if e.is_transient() => continue,
                        Err(_) => return None,
                    }
                }
            }
            Err(e) => {
                if !retry_after(env, coord, e).await {
                    return None;
                }
            }
        }
    }
    tracing::warn!(guid, "cannot create the lock node: closing the session");
    coord.close().await;
    None
}

/// After a failed call in the acquire loop: true if the session lives on (wait for it to
/// reconnect and retry), false if it ended.
async fn retry_after(env: &Env, coord: &Arc<dyn Coord>, e: CoordError) -> bool {
    match e {
        CoordError::SessionExpired | CoordError::Closed => false,
        _ if coord.state().is_terminal() => false,
        _ => {
            wait_connected(env, coord, SESSION_TIMEOUT).await;
            !coord.state().is_terminal()
        }
    }
}

/// Deletes our lock znode, retrying through disconnections while the session lives. If the
/// session ends, the service deletes the ephemeral node itself.
async fn release(env: &Env, coord: &Arc<dyn Coord>, mine: &str) {
    for _ in 0..RELEASE_ATTEMPTS_MAX {
        match coord.delete(mine, None).await {
            Ok(()) | Err(CoordError::NoNode) => return,
            Err(e) => {
                if !retry_after(env, coord, e).await {
                    return;
                }
            }
        }
    }
    // Still failing: close the session so the service removes the node.
    tracing::warn!(path = mine, "cannot delete the lock node: closing the session");
    coord.close().await;
}

async fn wait_connected(env: &Env, coord: &Arc<dyn Coord>, max: Duration) {
    let deadline = env.clock.now() + max;
    while coord.state() == SessionState::Disconnected && env.clock.now() < deadline {
        env.clock.sleep(Duration::from_millis(100)).await;
    }
}

impl ScenarioRun for Run {
    fn role(&self, role: &str) -> Option<String> {
        (role == ROLE_HOLDER).then(|| self.holder.get().map(Topology::client_name)).flatten()
    }

    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views()
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let this = Run { rec: self.rec.clone(), no_fencing: self.no_fencing, holder: self.holder.clone() };
        async move {
            let mut session: Option<Arc<dyn Coord>> = None;
            let mut seq = 0u64;
            while !ctx.phases.finished() {
                let coord = match session.take() {
                    Some(c) if !c.state().is_terminal() => c,
                    _ => {
                        let opts = SessionOptions {
                            session_timeout: SESSION_TIMEOUT,
                            connect_timeout: Duration::from_secs(5),
                        };
                        match ctx.env.coord.connect(opts).await {
                            Ok(c) => c,
                            Err(e) => {
                                tracing::info!(error = %e, "cannot open a session");
                                ctx.env.clock.sleep(Duration::from_millis(500)).await;
                                continue;
                            }
                        }
                    }
                };
                if coord.state() != SessionState::Connected {
                    ctx.env.clock.sleep(Duration::from_millis(200)).await;
                    session = Some(coord);
                    continue;
                }
                // One operation: a lock round (acquire, 1 to 3 guarded writes, release).
                if !ctx.budget.take() {
                    session = Some(coord);
                    break;
                }
                session = this.round(&ctx, coord, &mut seq).await;
                ctx.env.clock.sleep(Duration::from_millis(ctx.env.rand.gen_range(0..300))).await;
            }
            if let Some(c) = session {
                c.close().await;
            }
        }
        .boxed()
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let rec = self.rec.clone();
        async move {
            let mut final_value = None;
            let mut last_err = None;
            for _ in 0..20 {
                match env.kv.get(GUARDED_KEY).await {
                    Ok(v) => {
                        final_value = Some(v);
                        break;
                    }
                    Err(e) => last_err = Some(e),
                }
                env.clock.sleep(Duration::from_millis(250)).await;
            }
            let history = rec.snapshot();
            let mut report = Report::default();
            match final_value {
                None => report.violation(
                    "coord_lock",
                    format!("cannot read the guarded key after the heal: {last_err:?}"),
                ),
                Some(v) => {
                    let guarded = match v.map(|b| serde_json::from_slice::<Guarded>(&b)) {
                        None => Guarded::default(),
                        Some(Ok(g)) => g,
                        Some(Err(e)) => {
                            report.violation("coord_lock", format!("guarded value is not valid JSON: {e}"));
                            Guarded::default()
                        }
                    };
                    report.merge(check_fencing(&history, &guarded));
                }
            }
            report.merge(check_liveness(&history, &phases));
            report
        }
        .boxed()
    }
}

/// The fencing invariants over the final guarded value and the history.
pub fn check_fencing(history: &History<GuardedWrite, WriteResult>, guarded: &Guarded) -> Report {
    const NAME: &str = "fencing";
    let mut report = Report::default();
    // The history operations that wrote each log entry (for the chart's highlight).
    let mut op_of: std::collections::BTreeMap<(u64, ProcessId, u64), Vec<usize>> = Default::default();
    for op in &history.ops {
        op_of.entry((op.op.token, op.process, op.op.seq)).or_default().push(op.id);
    }
    for w in guarded.log.windows(2) {
        if w[1].0 < w[0].0 {
            let ops = [w[0], w[1]].iter().flat_map(|e| op_of.get(e).into_iter().flatten().copied()).collect();
            report.violation_with_ops(
                NAME,
                format!(
                    "write with stale token {} (process {}, seq {}) accepted after token {} (process {}, seq {})",
                    w[1].0, w[1].1, w[1].2, w[0].0, w[0].1, w[0].2
                ),
                ops,
            );
        }
    }
    let logged: std::collections::BTreeSet<(u64, ProcessId, u64)> = guarded.log.iter().copied().collect();
    let mut issued = std::collections::BTreeSet::new();
    let mut accepted = 0;
    let mut rejected = 0;
    for op in &history.ops {
        let entry = (op.op.token, op.process, op.op.seq);
        issued.insert(entry);
        match op.outcome() {
            Outcome::Ok(WriteResult::Accepted) => {
                accepted += 1;
                if !logged.contains(&entry) {
                    report.violation_with_ops(
                        NAME,
                        format!(
                            "acknowledged write lost: token {} process {} seq {}",
                            entry.0, entry.1, entry.2
                        ),
                        vec![op.id],
                    );
                }
            }
            Outcome::Ok(WriteResult::RejectedStale { .. }) => rejected += 1,
            _ => {}
        }
    }
    for e in &guarded.log {
        if !issued.contains(e) {
            report.violation(NAME, format!("log entry never issued: {e:?}"));
        }
    }
    report.count("fencing.accepted", accepted);
    report.count("fencing.rejected_stale", rejected);
    report.count("fencing.log_len", guarded.log.len() as u64);
    report
}

/// After the heal some holder must get a write accepted within the bound.
fn check_liveness(history: &History<GuardedWrite, WriteResult>, phases: &Phases) -> Report {
    let heal = phases.heal_at.as_nanos() as u64;
    let deadline = heal + phases.liveness_bound.as_nanos() as u64;
    let mut report = Report::default();
    let progressed = history.ops.iter().any(|op| {
        op.invoke_ns >= heal
            && matches!(&op.completion, Some((t, Outcome::Ok(WriteResult::Accepted))) if *t <= deadline)
    });
    if !progressed {
        report.liveness_violation(
            "liveness",
            format!("no guarded write accepted within {:?} after the heal", phases.liveness_bound),
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Operation;

    fn op(
        id: usize,
        p: u64,
        token: u64,
        seq: u64,
        r: Option<WriteResult>,
    ) -> Operation<GuardedWrite, WriteResult> {
        Operation {
            id,
            process: p,
            op: GuardedWrite { token, seq },
            invoke_ns: id as u64 * 10,
            completion: Some((id as u64 * 10 + 5, r.map_or(Outcome::Info, Outcome::Ok))),
        }
    }

    #[test]
    fn good_history_passes() {
        let h = History {
            ops: vec![
                op(0, 1, 3, 1, Some(WriteResult::Accepted)),
                op(1, 2, 5, 1, Some(WriteResult::Accepted)),
                op(2, 1, 3, 2, Some(WriteResult::RejectedStale { current: 5 })),
                op(3, 2, 5, 2, None),
            ],
        };
        let g = Guarded { token: 5, log: vec![(3, 1, 1), (5, 2, 1)] };
        let r = check_fencing(&h, &g);
        assert!(r.ok(), "{r:?}");
    }

    #[test]
    fn stale_token_after_newer_is_caught() {
        let h = History {
            ops: vec![
                op(0, 2, 5, 1, Some(WriteResult::Accepted)),
                op(1, 1, 3, 1, Some(WriteResult::Accepted)),
            ],
        };
        let g = Guarded { token: 3, log: vec![(5, 2, 1), (3, 1, 1)] };
        let r = check_fencing(&h, &g);
        assert!(!r.ok());
        assert!(r.violations[0].message.contains("stale token 3"));
    }

    #[test]
    fn lost_acknowledged_write_is_caught() {
        let h = History {
            ops: vec![
                op(0, 1, 3, 1, Some(WriteResult::Accepted)),
                op(1, 2, 5, 1, Some(WriteResult::Accepted)),
            ],
        };
        let g = Guarded { token: 5, log: vec![(5, 2, 1)] };
        assert!(!check_fencing(&h, &g).ok());
    }

    #[test]
    fn phantom_entry_is_caught() {
        let h = History { ops: vec![] };
        let g = Guarded { token: 5, log: vec![(5, 2, 1)] };
        assert!(!check_fencing(&h, &g).ok());
    }

    #[test]
    fn sequence_suffix_parses() {
        assert_eq!(seq_of("abc-0000000042"), Some(42));
        assert_eq!(seq_of("abc"), None);
    }
}
