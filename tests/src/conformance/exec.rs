//! Runs one case through the ports, whatever backend is behind them, and writes its
//! normalised transcript. The backends only say how to open sessions, partition a client and
//! let time pass ([`ZkWorld`], [`KvWorld`]); everything observed goes through `Coord`/`Kv`.
//!
//! When a watch is looked at: a fired watch is recorded only right after an operation *of
//! its own client* that reached the service (not one refused by the client library), because
//! that is when the port guarantees delivery ("its event is delivered before the client can
//! see the new state in any later read's answer"); looking at other moments would record
//! network timing, not semantics. At the end each live client makes one last round trip
//! (`exists` on the root) so that every watch the case triggered is observed.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{
    Coord, CoordError, CreateMode, Kv, KvError, Op, SessionEvent, SessionState, SetOptions, Watcher,
};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};

use super::ops::{AnyOp, Case, KvOp, MultiOp, Step, ZkOp};
use super::transcript::{bytes, state, ttl, Transcript};

/// How long one operation may take before the run records it as hung.
const OP_LIMIT: Duration = Duration::from_secs(20);

/// A ZooKeeper backend, as the executor needs it.
#[async_trait]
pub trait ZkWorld: Send + Sync {
    /// Opens a session for client `client`.
    async fn connect(&self, client: usize, timeout: Duration) -> Result<Arc<dyn Coord>, CoordError>;
    /// A session outside the case's clients: creates the case root, reads the final tree.
    async fn observer(&self) -> Arc<dyn Coord>;
    /// Partitions `client` from the service / ends the partition.
    fn cut(&self, client: usize);
    fn heal(&self, client: usize);
    async fn sleep(&self, d: Duration);
}

/// A Redis backend, as the executor needs it.
#[async_trait]
pub trait KvWorld: Send + Sync {
    fn kv(&self, client: usize) -> Arc<dyn Kv>;
    async fn sleep(&self, d: Duration);
}

struct ZkClient {
    coord: Option<Arc<dyn Coord>>,
    events: Option<BoxStream<'static, SessionEvent>>,
    /// Pending watches: (label, watcher).
    watches: Vec<(usize, Watcher)>,
}

impl ZkClient {
    fn drain_events(&mut self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if let Some(ev) = &mut self.events {
            while let Some(Some(e)) = ev.next().now_or_never() {
                out.push(state(e.state));
            }
        }
        out
    }
}

async fn limited<T>(world: &dyn ZkWorld, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let fut = std::pin::pin!(fut);
    let sleep = std::pin::pin!(world.sleep(OP_LIMIT));
    match futures::future::select(fut, sleep).await {
        futures::future::Either::Left((v, _)) => Some(v),
        futures::future::Either::Right(_) => None,
    }
}

fn data(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// True if a result came from the service (so the client's watches are up to date).
fn reached_service(e: &CoordError) -> bool {
    !matches!(
        e,
        CoordError::BadArguments(_)
            | CoordError::ConnectionLoss { maybe_applied: false }
            | CoordError::Closed
            | CoordError::SessionExpired
            | CoordError::Timeout
    )
}

fn multi_op(root: &str, op: &MultiOp) -> Op {
    match op {
        MultiOp::Create { path, data: d, mode } => {
            Op::Create { path: path.under(root), data: data(d), mode: *mode }
        }
        MultiOp::Delete { path, version } => Op::Delete { path: path.under(root), version: *version },
        MultiOp::SetData { path, data: d, version } => {
            Op::SetData { path: path.under(root), data: data(d), version: *version }
        }
        MultiOp::Check { path, version } => Op::Check { path: path.under(root), version: *version },
    }
}

async fn connect(
    world: &dyn ZkWorld,
    t: &mut Transcript,
    c: &mut ZkClient,
    i: usize,
    timeout_ms: u64,
) -> String {
    match limited(world, world.connect(i, Duration::from_millis(timeout_ms))).await {
        None => "HUNG".to_string(),
        Some(Err(e)) => t.coord_err(&e),
        Some(Ok(coord)) => {
            let label = t.session(coord.session_id());
            let r = format!(
                "{label} timeout={}ms state={}",
                coord.negotiated_timeout().as_millis(),
                state(coord.state())
            );
            c.events = Some(coord.session_events());
            c.coord = Some(coord);
            c.watches.clear();
            r
        }
    }
}

/// Runs a ZooKeeper case under `root` (an absolute path that does not exist yet).
pub async fn run_zk(world: &dyn ZkWorld, case: &Case, root: &str) -> Transcript {
    let mut t = Transcript::new(root);
    let obs = world.observer().await;
    if let Err(e) = obs.create(root, Bytes::new(), CreateMode::Persistent).await {
        t.push(format!("setup: cannot create the case root: {e}"));
        return t;
    }
    let mut clients: Vec<ZkClient> =
        case.clients.iter().map(|_| ZkClient { coord: None, events: None, watches: Vec::new() }).collect();
    for (i, timeout_ms) in case.clients.iter().enumerate() {
        let r = connect(world, &mut t, &mut clients[i], i, *timeout_ms).await;
        t.push(format!("c{i} connect timeout={timeout_ms}ms -> {r}"));
    }
    let mut next_watch = 0usize;
    for (n, step) in case.steps.iter().enumerate() {
        let Step { client: i, op: AnyOp::Zk(op) } = step else {
            t.push(format!("{n} not a zk step: {step}"));
            continue;
        };
        let i = *i;
        if i >= clients.len() {
            t.push(format!("{n} {step}: no such client"));
            continue;
        }
        let (result, poll) = zk_step(world, &mut t, &mut clients, i, op, root, &mut next_watch).await;
        t.push(format!("{n} {step} -> {result}"));
        if poll {
            poll_watches(&mut t, &mut clients[i], i);
        }
    }
    // One last round trip per live client, so every watch the case triggered is delivered.
    for (i, c) in clients.iter_mut().enumerate() {
        let Some(coord) = c.coord.clone() else { continue };
        if coord.state() != SessionState::Connected {
            continue;
        }
        match limited(world, coord.exists(root)).await {
            Some(Ok(_)) => poll_watches(&mut t, c, i),
            Some(Err(e)) => t.push(format!("end c{i} probe -> {}", t.coord_err(&e))),
            None => t.push(format!("end c{i} probe -> HUNG")),
        }
    }
    dump_tree(world, &mut t, &obs, root).await;
    for c in &mut clients {
        c.watches.clear();
        if let Some(coord) = c.coord.take() {
            let _ = limited(world, coord.close()).await;
        }
    }
    t
}

fn poll_watches(t: &mut Transcript, c: &mut ZkClient, i: usize) {
    let mut still = Vec::new();
    for (label, mut w) in std::mem::take(&mut c.watches) {
        match (&mut w).now_or_never() {
            Some(ev) => t.push(format!("  c{i} w{label} fired: {}", t.event(&ev))),
            None => still.push((label, w)),
        }
    }
    c.watches = still;
}

async fn dump_tree(world: &dyn ZkWorld, t: &mut Transcript, obs: &Arc<dyn Coord>, root: &str) {
    let mut stack = vec![root.to_string()];
    while let Some(p) = stack.pop() {
        match limited(world, obs.get_data(&p)).await {
            Some(Ok((d, s))) => {
                let line = format!("tree {} {} {}", t.path(&p), bytes(&d), t.stat(&s));
                t.push(line);
            }
            Some(Err(e)) => {
                t.push(format!("tree {} -> {}", t.path(&p), t.coord_err(&e)));
                continue;
            }
            None => {
                t.push(format!("tree {} -> HUNG", t.path(&p)));
                return;
            }
        }
        if let Some(Ok(kids)) = limited(world, obs.get_children(&p)).await {
            // Depth first, in name order.
            for k in kids.iter().rev() {
                stack.push(format!("{p}/{k}"));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn zk_step(
    world: &dyn ZkWorld,
    t: &mut Transcript,
    clients: &mut [ZkClient],
    i: usize,
    op: &ZkOp,
    root: &str,
    next_watch: &mut usize,
) -> (String, bool) {
    // Steps that do not need a session.
    match op {
        ZkOp::Cut => {
            world.cut(i);
            return ("ok".into(), false);
        }
        ZkOp::Heal => {
            world.heal(i);
            return ("ok".into(), false);
        }
        ZkOp::Sleep { ms } => {
            world.sleep(Duration::from_millis(*ms)).await;
            return ("ok".into(), false);
        }
        ZkOp::Reconnect { timeout_ms } => {
            let c = &mut clients[i];
            if let Some(old) = c.coord.take() {
                let _ = limited(world, old.close()).await;
            }
            let r = connect(world, t, c, i, *timeout_ms).await;
            return (r, false);
        }
        _ => {}
    }
    let c = &mut clients[i];
    let Some(coord) = c.coord.clone() else { return ("no session".into(), false) };
    let mut watch = |c: &mut ZkClient, w: Watcher| {
        let label = *next_watch;
        *next_watch += 1;
        c.watches.push((label, w));
        label
    };
    macro_rules! run {
        ($fut:expr) => {
            match limited(world, $fut).await {
                Some(r) => r,
                None => return ("HUNG".into(), false),
            }
        };
    }
    match op {
        ZkOp::Create { path, data: d, mode } => match run!(coord.create(&path.under(root), data(d), *mode)) {
            Ok(p) => (format!("created {}", t.path(&p)), true),
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::Delete { path, version } => match run!(coord.delete(&path.under(root), *version)) {
            Ok(()) => ("deleted".into(), true),
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::GetData { path, watch: false } => match run!(coord.get_data(&path.under(root))) {
            Ok((d, s)) => (format!("{} {}", bytes(&d), t.stat(&s)), true),
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::GetData { path, watch: true } => match run!(coord.get_data_w(&path.under(root))) {
            Ok((d, s, w)) => {
                let r = format!("{} {}", bytes(&d), t.stat(&s));
                let label = watch(c, w);
                (format!("{r} +w{label}"), true)
            }
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::Exists { path, watch: false } => match run!(coord.exists(&path.under(root))) {
            Ok(Some(s)) => (t.stat(&s), true),
            Ok(None) => ("none".into(), true),
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::Exists { path, watch: true } => match run!(coord.exists_w(&path.under(root))) {
            Ok((s, w)) => {
                let r = match s {
                    Some(s) => t.stat(&s),
                    None => "none".into(),
                };
                let label = watch(c, w);
                (format!("{r} +w{label}"), true)
            }
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::GetChildren { path, watch: false } => match run!(coord.get_children(&path.under(root))) {
            Ok(k) => (format!("{k:?}"), true),
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::GetChildren { path, watch: true } => match run!(coord.get_children_w(&path.under(root))) {
            Ok((k, w)) => {
                let label = watch(c, w);
                (format!("{k:?} +w{label}"), true)
            }
            Err(e) => (t.coord_err(&e), reached_service(&e)),
        },
        ZkOp::SetData { path, data: d, version } => {
            match run!(coord.set_data(&path.under(root), data(d), *version)) {
                Ok(s) => (t.stat(&s), true),
                Err(e) => (t.coord_err(&e), reached_service(&e)),
            }
        }
        ZkOp::Multi(ops) => {
            // The client answers an empty transaction itself: no round trip, no watch news.
            let round_trip = !ops.is_empty();
            let ops = ops.iter().map(|o| multi_op(root, o)).collect();
            match run!(coord.multi(ops)) {
                Ok(rs) => {
                    let parts: Vec<String> = rs.iter().map(|r| t.op_result(r)).collect();
                    (format!("ok [{}]", parts.join("; ")), round_trip)
                }
                Err(e) => (t.multi_err(&e), reached_service(&e.error)),
            }
        }
        ZkOp::Close => {
            run!(coord.close());
            // The handle is terminal: its watches resolve with Session(Closed) at once.
            (format!("state={}", state(coord.state())), true)
        }
        ZkOp::Drop => {
            c.coord = None;
            c.events = None;
            c.watches.clear();
            drop(coord);
            ("dropped".into(), false)
        }
        ZkOp::State => {
            let events = c.drain_events();
            (format!("state={} events={events:?}", state(coord.state())), false)
        }
        ZkOp::AwaitTerminal { max_ms } => {
            let mut waited = 0;
            while !coord.state().is_terminal() && waited < *max_ms {
                world.sleep(Duration::from_millis(50)).await;
                waited += 50;
            }
            let terminal = coord.state().is_terminal();
            (format!("terminal={terminal}"), terminal)
        }
        ZkOp::Cut | ZkOp::Heal | ZkOp::Sleep { .. } | ZkOp::Reconnect { .. } => unreachable!("handled above"),
    }
}

/// Every key a Redis case may touch (the final dump reads them all).
pub const KV_KEYS: [&str; 3] = ["a", "b", "l"];

/// Runs a Redis case with keys prefixed by `prefix` (keys nobody has used yet).
pub async fn run_kv(world: &dyn KvWorld, case: &Case, prefix: &str) -> Transcript {
    let mut t = Transcript::new(prefix);
    let key = |k: &str| format!("{prefix}{k}");
    for (n, step) in case.steps.iter().enumerate() {
        let Step { client, op: AnyOp::Kv(op) } = step else {
            t.push(format!("{n} not a kv step: {step}"));
            continue;
        };
        let kv = world.kv(*client);
        let r = kv_step(world, &t, &*kv, op, &key).await;
        t.push(format!("{n} {step} -> {r}"));
    }
    // Final state, read by client 0.
    let kv = world.kv(0);
    for k in KV_KEYS {
        let v = match kv.get(&key(k)).await {
            Ok(Some(v)) => bytes(&v),
            Ok(None) => "nil".to_string(),
            Err(KvError::WrongType) => match kv.lrange(&key(k), 0, -1).await {
                Ok(items) => format!("list {:?}", items.iter().map(|b| bytes(b)).collect::<Vec<_>>()),
                Err(e) => t.kv_err(&e),
            },
            Err(e) => t.kv_err(&e),
        };
        let ttl = match kv.pttl(&key(k)).await {
            Ok(x) => ttl(&x),
            Err(e) => t.kv_err(&e),
        };
        t.push(format!("final {k} = {v} ttl={ttl}"));
    }
    t
}

fn show<T>(t: &Transcript, r: Result<T, KvError>, f: impl FnOnce(T) -> String) -> String {
    match r {
        Ok(v) => f(v),
        Err(e) => t.kv_err(&e),
    }
}

fn opt(v: Option<Bytes>) -> String {
    match v {
        Some(v) => bytes(&v),
        None => "nil".to_string(),
    }
}

async fn kv_step(
    world: &dyn KvWorld,
    t: &Transcript,
    kv: &dyn Kv,
    op: &KvOp,
    key: &(dyn Fn(&str) -> String + Sync),
) -> String {
    let ms = |m: &Option<u64>| m.map(Duration::from_millis);
    match op {
        KvOp::Get { key: k } => show(t, kv.get(&key(k)).await, opt),
        KvOp::Set { key: k, value, cond, px_ms, keep_ttl } => {
            let opts = SetOptions { condition: *cond, px: ms(px_ms), keep_ttl: *keep_ttl };
            show(t, kv.set(&key(k), data(value), opts).await, |b| b.to_string())
        }
        KvOp::Del { key: k } => show(t, kv.del(&key(k)).await, |b| b.to_string()),
        KvOp::PExpire { key: k, ms: m } => {
            show(t, kv.pexpire(&key(k), Duration::from_millis(*m)).await, |b| b.to_string())
        }
        KvOp::PTtl { key: k } => show(t, kv.pttl(&key(k)).await, |x| ttl(&x)),
        KvOp::Cas { key: k, expected, new, px_ms } => show(
            t,
            kv.compare_and_set(&key(k), expected.as_deref().map(data), new.as_deref().map(data), ms(px_ms))
                .await,
            |b| b.to_string(),
        ),
        KvOp::Take { key: k } => show(t, kv.take(&key(k)).await, opt),
        KvOp::RPush { key: k, values } => {
            show(t, kv.rpush(&key(k), values.iter().map(|v| data(v)).collect()).await, |n| n.to_string())
        }
        KvOp::LPop { key: k } => show(t, kv.lpop(&key(k)).await, opt),
        KvOp::LRange { key: k, start, stop } => show(t, kv.lrange(&key(k), *start, *stop).await, |items| {
            format!("{:?}", items.iter().map(|b| bytes(b)).collect::<Vec<_>>())
        }),
        KvOp::LLen { key: k } => show(t, kv.llen(&key(k)).await, |n| n.to_string()),
        KvOp::Sleep { ms: m } => {
            world.sleep(Duration::from_millis(*m)).await;
            "ok".to_string()
        }
    }
}
