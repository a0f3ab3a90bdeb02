//! [`SimDb`]: the `Db` port over one pipelined connection to a simulated SQL node.
//!
//! Requests carry ids; a writer task sends frames in the order callers queued them and a
//! reader task hands each response to the caller waiting on that id, so any number of tasks
//! may call concurrently (the node takes them one at a time, in order). The connection is
//! opened lazily on the first call and again after any failure. Outcomes:
//! - arguments over a limit: `InvalidArgument`, nothing sent (the port's `validate_*`);
//! - could not connect: `Unavailable` (nothing was sent);
//! - the call timeout passed before the request was handed to the connection:
//!   `Timeout { maybe_applied: false }`;
//! - the timeout passed after it was sent: `Timeout { maybe_applied: true }`, and the
//!   connection is dropped (a stalled connection is useless, and no late answer can be taken
//!   for another request); other calls outstanding on it fail with `ConnectionLoss {
//!   maybe_applied: true }`;
//! - the connection died with the request outstanding: `ConnectionLoss { maybe_applied: true }`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{
    lock, timeout, validate_get_many, validate_key, validate_name, validate_scan, validate_transact, Clock,
    Connection, Db, DbError, FrameSink, FrameStream, MonoTime, Net, Row, RowState, Spawn, TableName,
    TaskHandle, WriteOp, WriteResult, MAX_PEER_FRAME_BYTES,
};
use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, StreamExt};
use tracing::{debug, info, warn};

use super::proto::{self, Command, Reply, Request, Response};

type ReplySender = oneshot::Sender<Result<Reply, DbError>>;

/// A client of one simulated SQL instance. Cheap to share behind an `Arc`.
pub struct SimDb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SimDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDb")
            .field("name", &self.inner.name)
            .field("server", &self.inner.server)
            .finish_non_exhaustive()
    }
}

struct Inner {
    name: String,
    net: Arc<dyn Net>,
    clock: Arc<dyn Clock>,
    spawn: Arc<dyn Spawn>,
    server: SocketAddr,
    call_timeout: Duration,
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
        info!(conn = self.seq, outstanding = pending.len(), reason = why, "sql client connection lost");
        self.outbox.close_channel();
        drop(pending);
        for t in tasks {
            t.abort();
        }
    }

    /// Registers a call; `None` if the connection already died.
    fn register(&self) -> Option<(u64, oneshot::Receiver<Result<Reply, DbError>>)> {
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
            None => debug!(conn = self.seq, id = resp.id, "sql answer for a call nobody waits for"),
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
                    warn!(conn = conn.seq, len = frame.len(), error = %e, "sql client got a malformed answer");
                    conn.close("malformed answer");
                    return;
                }
            },
        }
    }
}

impl SimDb {
    /// A client of the instance `name` served at `server`. Nothing is connected until the
    /// first call; each call gives up after `call_timeout`.
    pub fn new(
        name: impl Into<String>,
        net: Arc<dyn Net>,
        clock: Arc<dyn Clock>,
        spawn: Arc<dyn Spawn>,
        server: SocketAddr,
        call_timeout: Duration,
    ) -> Self {
        SimDb {
            inner: Arc::new(Inner {
                name: name.into(),
                net,
                clock,
                spawn,
                server,
                call_timeout,
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
    async fn connection(&self) -> Result<Arc<Conn>, DbError> {
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let _guard = self.inner.connect_lock.lock().await;
        if let Some(c) = self.live_conn() {
            return Ok(c);
        }
        let Connection { sink, stream, peer } =
            self.inner.net.connect(self.inner.server, MAX_PEER_FRAME_BYTES).await.map_err(|e| {
                debug!(db = %self.inner.name, server = %self.inner.server, error = %e, "sql client cannot connect");
                DbError::Unavailable
            })?;
        let seq = self.inner.conn_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let (outbox, rx) = mpsc::unbounded();
        let conn = Arc::new(Conn { seq, outbox, state: Mutex::new(ConnState::default()) });
        let writer = self.inner.spawn.spawn("sql-client-write", Box::pin(write_loop(conn.clone(), sink, rx)));
        let reader = self.inner.spawn.spawn("sql-client-read", Box::pin(read_loop(conn.clone(), stream)));
        {
            let mut st = lock(&conn.state);
            if st.dead {
                // Already failed in the moment since spawning; stop the tasks.
                drop(st);
                writer.abort();
                reader.abort();
                return Err(DbError::ConnectionLoss { maybe_applied: false });
            }
            st.tasks.push(writer);
            st.tasks.push(reader);
        }
        debug!(db = %self.inner.name, conn = seq, %peer, "sql client connected");
        *lock(&self.inner.current) = Some(conn.clone());
        Ok(conn)
    }

    /// Sends `command` and waits for its answer, within the call timeout.
    async fn call(&self, command: Command) -> Result<Reply, DbError> {
        let clock = self.inner.clock.clone();
        let deadline = clock.now() + self.inner.call_timeout;
        let remaining = |now: MonoTime| deadline.saturating_since(now);
        let name = command.name();

        let conn = match timeout(&*clock, remaining(clock.now()), self.connection()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                debug!(db = %self.inner.name, call = name, error = %e, "sql call failed");
                return Err(e);
            }
            Err(_) => {
                debug!(db = %self.inner.name, call = name, "sql call timed out connecting");
                return Err(DbError::Timeout { maybe_applied: false });
            }
        };
        let Some((id, rx)) = conn.register() else {
            return Err(DbError::ConnectionLoss { maybe_applied: false });
        };
        let guard = PendingGuard { conn: &conn, id };
        let frame = proto::encode(&Request { id, command })
            .map_err(|e| DbError::InvalidArgument(format!("request cannot be sent: {e}")))?;
        if conn.outbox.unbounded_send(frame).is_err() {
            return Err(DbError::ConnectionLoss { maybe_applied: false });
        }
        // From here on the request may reach the server.
        let outcome = match timeout(&*clock, remaining(clock.now()), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(oneshot::Canceled)) => Err(DbError::ConnectionLoss { maybe_applied: true }),
            Err(_) => {
                drop(guard);
                conn.close("call timed out");
                Err(DbError::Timeout { maybe_applied: true })
            }
        };
        engine::probe!(
            outcome.as_ref().is_err_and(DbError::maybe_applied),
            "sql client: outcome unknown (maybe applied)"
        );
        debug!(db = %self.inner.name, conn = conn.seq, id, call = name, ?outcome, "sql call");
        outcome
    }
}

/// A server bug, not a fault to model: the call was answered with another call's kind of
/// reply. The simulation stops (a crash verdict) rather than report a made-up error.
fn unexpected(reply: Reply) -> ! {
    panic!("sql server answered with the wrong kind of reply: {reply:?}")
}

fn as_row(r: Reply) -> Result<Option<Row>, DbError> {
    match r {
        Reply::Row(row) => Ok(row),
        other => unexpected(other),
    }
}

#[async_trait]
impl Db for SimDb {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn get(&self, table: &TableName, key: &str) -> Result<Option<Row>, DbError> {
        validate_key(key)?;
        as_row(self.call(Command::Get { table: table.clone(), key: key.to_string() }).await?)
    }

    async fn get_many(&self, table: &TableName, keys: &[String]) -> Result<Vec<Option<Row>>, DbError> {
        validate_get_many(keys)?;
        match self.call(Command::GetMany { table: table.clone(), keys: keys.to_vec() }).await? {
            Reply::Rows(rows) if rows.len() == keys.len() => Ok(rows),
            other => unexpected(other),
        }
    }

    async fn scan_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        validate_scan(prefix, start_after, limit)?;
        let command = Command::Scan {
            table: table.clone(),
            prefix: prefix.to_string(),
            start_after: start_after.map(str::to_string),
            limit,
        };
        match self.call(command).await? {
            Reply::Scan(rows) => Ok(rows),
            other => unexpected(other),
        }
    }

    async fn export_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RowState>, DbError> {
        validate_scan(prefix, start_after, limit)?;
        let command = Command::Export {
            table: table.clone(),
            prefix: prefix.to_string(),
            start_after: start_after.map(str::to_string),
            limit,
        };
        match self.call(command).await? {
            Reply::Export(rows) => Ok(rows),
            other => unexpected(other),
        }
    }

    async fn get_by_index(
        &self,
        table: &TableName,
        index: &str,
        index_key: &str,
    ) -> Result<Option<Row>, DbError> {
        validate_name(index)?;
        validate_key(index_key)?;
        let command = Command::GetByIndex {
            table: table.clone(),
            index: index.to_string(),
            index_key: index_key.to_string(),
        };
        as_row(self.call(command).await?)
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, DbError> {
        validate_transact(&ops)?;
        let n = ops.len();
        match self.call(Command::Transact { ops }).await? {
            Reply::Written(results) if results.len() == n => Ok(results),
            other => unexpected(other),
        }
    }
}
