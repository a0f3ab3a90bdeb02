//! [`SimKv`]: the `Kv` port over one pipelined connection to the simulated Redis node.
//!
//! Requests carry ids; a writer task sends frames in the order callers queued them and a
//! reader task hands each response to the caller waiting on that id, so any number of tasks
//! may call concurrently. The connection is opened lazily on the first call and again after
//! any failure. Outcomes:
//! - could not connect: `ConnectionLoss { maybe_applied: false }` (nothing was sent);
//! - the command timeout passed before the request was handed to the connection:
//!   `Timeout { maybe_applied: false }`;
//! - the timeout passed after it was sent: `Timeout { maybe_applied: true }`, and the
//!   connection is dropped (a stalled connection is useless, and no late reply can be taken for
//!   another request); other calls outstanding on it fail with `ConnectionLoss { maybe_applied:
//!   true }`;
//! - the connection died with the request outstanding: `ConnectionLoss { maybe_applied: true }`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{
    timeout, Clock, Connection, FrameSink, FrameStream, Kv, KvError, MonoTime, Net, SetOptions, Spawn,
    TaskHandle, Ttl, MAX_PEER_FRAME_BYTES,
};
use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::proto::{self, Command, CommandError, Reply, Request, Response};

type ReplySender = oneshot::Sender<Result<Reply, CommandError>>;

/// A Redis client for simulated nodes. Cheap to share behind an `Arc`.
pub struct SimKv {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimKv").field("server", &self.inner.server).finish_non_exhaustive()
    }
}

struct Inner {
    net: Arc<dyn Net>,
    clock: Arc<dyn Clock>,
    spawn: Arc<dyn Spawn>,
    server: SocketAddr,
    command_timeout: Duration,
    /// Serialises connection attempts (held across the connect; an async mutex).
    connect_lock: futures::lock::Mutex<()>,
    current: Mutex<Option<Arc<Conn>>>,
    conn_seq: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(c) = lock(&self.current).take() {
            c.close("client dropped");
        }
    }
}

use engine::env::lock;

/// One established connection and the requests outstanding on it.
struct Conn {
    /// Sequence number of this connection within the client (for logs).
    seq: u64,
    outbox: mpsc::UnboundedSender<Bytes>,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    dead: bool,
    next_id: u64,
    pending: BTreeMap<u64, ReplySender>,
    tasks: Vec<TaskHandle>,
}

impl Conn {
    fn is_dead(&self) -> bool {
        lock(&self.state).dead
    }

    /// Marks the connection dead, fails every outstanding call (their senders are dropped, so
    /// they see `ConnectionLoss { maybe_applied: true }`) and stops its tasks. Idempotent.
    fn close(&self, why: &str) {
        let (pending, tasks) = {
            let mut st = lock(&self.state);
            if st.dead {
                return;
            }
            st.dead = true;
            (std::mem::take(&mut st.pending), std::mem::take(&mut st.tasks))
        };
        info!(conn = self.seq, outstanding = pending.len(), reason = why, "redis client connection lost");
        self.outbox.close_channel();
        drop(pending);
        for t in tasks {
            t.abort();
        }
    }

    /// Registers a call; `None` if the connection already died.
    fn register(&self) -> Option<(u64, oneshot::Receiver<Result<Reply, CommandError>>)> {
        let mut st = lock(&self.state);
        if st.dead {
            return None;
        }
        st.next_id += 1;
        let id = st.next_id;
        let (tx, rx) = oneshot::channel();
        st.pending.insert(id, tx);
        Some((id, rx))
    }

    fn forget(&self, id: u64) {
        lock(&self.state).pending.remove(&id);
    }

    fn deliver(&self, resp: Response) {
        let waiter = lock(&self.state).pending.remove(&resp.id);
        match waiter {
            // The caller may have given up in the meantime; then nobody listens.
            Some(tx) => drop(tx.send(resp.result)),
            None => debug!(conn = self.seq, id = resp.id, "redis reply for a call nobody waits for"),
        }
    }
}

/// Removes a registered call if the caller's future is dropped before its answer.
struct PendingGuard<'a> {
    conn: &'a Conn,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.conn.forget(self.id);
    }
}

async fn write_loop(conn: Arc<Conn>, mut sink: FrameSink, mut outbox: mpsc::UnboundedReceiver<Bytes>) {
    while let Some(frame) = outbox.next().await {
        if let Err(e) = sink.send(frame).await {
            conn.close(&format!("send failed: {e}"));
            return;
        }
    }
}

async fn read_loop(conn: Arc<Conn>, mut stream: FrameStream) {
    loop {
        match stream.next().await {
            None => {
                conn.close("closed by server");
                return;
            }
            Some(Err(e)) => {
                conn.close(&format!("receive failed: {e}"));
                return;
            }
            Some(Ok(frame)) => match proto::decode::<Response>(&frame) {
                Ok(resp) => conn.deliver(resp),
                Err(e) => {
                    warn!(conn = conn.seq, len = frame.len(), error = %e, "redis client got a malformed reply");
                    conn.close("malformed reply");
                    return;
                }
            },
        }
    }
}

impl SimKv {
    /// A client of the Redis node at `server`. Nothing is connected until the first call.
    pub fn new(
        net: Arc<dyn Net>,
        clock: Arc<dyn Clock>,
        spawn: Arc<dyn Spawn>,
        server: SocketAddr,
        command_timeout: Duration,
    ) -> Self {
        SimKv {
            inner: Arc::new(Inner {
                net,
                clock,
                spawn,
                server,
                command_timeout,
                connect_lock: futures::lock::Mutex::new(()),
                current: Mutex::new(None),
                conn_seq: AtomicU64::new(0),
            }),
        }
    }

    fn live_conn(&self) -> Option<Arc<Conn>> {
        lock(&self.inner.current).clone().filter(|c| !c.is_dead())
    }

    /// The current connection, opening one if there is none (or it died).
    async fn connection(&self) -> Result<Arc<Conn>, KvError> {
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let _guard = self.inner.connect_lock.lock().await;
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let Connection { sink, stream, peer } =
            self.inner.net.connect(self.inner.server, MAX_PEER_FRAME_BYTES).await.map_err(|e| {
                debug!(server = %self.inner.server, error = %e, "redis client cannot connect");
                KvError::ConnectionLoss { maybe_applied: false }
            })?;
        let seq = self.inner.conn_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (outbox, rx) = mpsc::unbounded();
        let conn = Arc::new(Conn { seq, outbox, state: Mutex::new(ConnState::default()) });
        let writer =
            self.inner.spawn.spawn("redis-client-write", Box::pin(write_loop(conn.clone(), sink, rx)));
        let reader = self.inner.spawn.spawn("redis-client-read", Box::pin(read_loop(conn.clone(), stream)));
        {
            let mut st = lock(&conn.state);
            if st.dead {
                // Already failed in the moment since spawning; stop the tasks.
                drop(st);
                writer.abort();
                reader.abort();
                return Err(KvError::ConnectionLoss { maybe_applied: false });
            }
            st.tasks.push(writer);
            st.tasks.push(reader);
        }
        debug!(conn = seq, %peer, "redis client connected");
        *lock(&self.inner.current) = Some(conn.clone());
        Ok(conn)
    }

    /// Sends `command` and waits for its answer, within the command timeout.
    async fn call(&self, command: Command) -> Result<Reply, KvError> {
        let clock = self.inner.clock.clone();
        let deadline = clock.now() + self.inner.command_timeout;
        let remaining = |now: MonoTime| deadline.saturating_since(now);
        let name = command.name();
        let frame_of = |id: u64, command: Command| {
            proto::encode(&Request { id, command })
                .map_err(|e| KvError::Server(format!("ERR request cannot be sent: {e}")))
        };

        let conn = match timeout(&*clock, remaining(clock.now()), self.connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(cmd = name, key = command.key(), error = %e, "redis call failed");
                return Err(e);
            }
            Err(_) => {
                debug!(cmd = name, key = command.key(), "redis call timed out connecting");
                return Err(KvError::Timeout { maybe_applied: false });
            }
        };
        let Some((id, rx)) = conn.register() else {
            return Err(KvError::ConnectionLoss { maybe_applied: false });
        };
        let guard = PendingGuard { conn: &conn, id };
        let key = command.key().to_string();
        let frame = frame_of(id, command)?;
        if conn.outbox.unbounded_send(frame).is_err() {
            return Err(KvError::ConnectionLoss { maybe_applied: false });
        }
        // From here on the request may reach the server.
        let outcome = match timeout(&*clock, remaining(clock.now()), rx).await {
            Ok(Ok(Ok(reply))) => Ok(reply),
            Ok(Ok(Err(CommandError::WrongType))) => Err(KvError::WrongType),
            Ok(Ok(Err(CommandError::Server(msg)))) => Err(KvError::Server(msg)),
            Ok(Err(oneshot::Canceled)) => Err(KvError::ConnectionLoss { maybe_applied: true }),
            Err(_) => {
                drop(guard);
                conn.close("command timed out");
                Err(KvError::Timeout { maybe_applied: true })
            }
        };
        engine::probe!(
            outcome.as_ref().is_err_and(KvError::maybe_applied),
            "redis client: outcome unknown (maybe applied)"
        );
        debug!(conn = conn.seq, id, cmd = name, key = %key, ?outcome, "redis call");
        outcome
    }
}

fn unexpected(reply: Reply) -> KvError {
    KvError::Server(format!("ERR unexpected reply {reply:?}"))
}

fn as_value(r: Reply) -> Result<Option<Bytes>, KvError> {
    match r {
        Reply::Value(v) => Ok(v),
        other => Err(unexpected(other)),
    }
}

fn as_bool(r: Reply) -> Result<bool, KvError> {
    match r {
        Reply::Bool(b) => Ok(b),
        other => Err(unexpected(other)),
    }
}

fn as_int(r: Reply) -> Result<u64, KvError> {
    match r {
        Reply::Int(n) => Ok(n),
        other => Err(unexpected(other)),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Kv for SimKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        as_value(self.call(Command::Get { key: key.to_string() }).await?)
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool, KvError> {
        as_bool(self.call(Command::Set { key: key.to_string(), value, opts }).await?)
    }

    async fn del(&self, key: &str) -> Result<bool, KvError> {
        as_bool(self.call(Command::Del { key: key.to_string() }).await?)
    }

    async fn pexpire(&self, key: &str, ttl: Duration) -> Result<bool, KvError> {
        as_bool(self.call(Command::PExpire { key: key.to_string(), ttl_ms: millis(ttl) }).await?)
    }

    async fn pttl(&self, key: &str) -> Result<Ttl, KvError> {
        match self.call(Command::PTtl { key: key.to_string() }).await? {
            Reply::Ttl(t) => Ok(t),
            other => Err(unexpected(other)),
        }
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
    ) -> Result<bool, KvError> {
        as_bool(self.call(Command::CompareAndSet { key: key.to_string(), expected, new, px }).await?)
    }

    async fn take(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        as_value(self.call(Command::Take { key: key.to_string() }).await?)
    }

    async fn rpush(&self, key: &str, values: Vec<Bytes>) -> Result<u64, KvError> {
        as_int(self.call(Command::RPush { key: key.to_string(), values }).await?)
    }

    async fn lpop(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        as_value(self.call(Command::LPop { key: key.to_string() }).await?)
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Bytes>, KvError> {
        match self.call(Command::LRange { key: key.to_string(), start, stop }).await? {
            Reply::List(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    async fn llen(&self, key: &str) -> Result<u64, KvError> {
        as_int(self.call(Command::LLen { key: key.to_string() }).await?)
    }
}
