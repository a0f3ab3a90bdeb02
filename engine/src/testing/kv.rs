//! [`FakeKv`]: the `Kv` port on the shared Redis keyspace model, in memory.
//!
//! **Fault model.** One Redis primary ([`Keyspace`], the model the simulator's Redis node
//! serves), answered at once, TTLs judged by the [`ManualClock`]'s wall clock (jump it with
//! [`ManualClock::set_wall`] to model a skewed Redis host). Test-driven faults:
//! [`set_reachable`](FakeKv::set_reachable)`(false)` fails every call with
//! `ConnectionLoss { maybe_applied: false }`; [`lose_next_answer`](FakeKv::lose_next_answer)
//! applies the next call and then fails it with `ConnectionLoss { maybe_applied: true }`;
//! [`flush`](FakeKv::flush) loses every key (a restart without persistence).
//! **Not modelled**: latency, command timeouts, replicas.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::clock::ManualClock;
use super::redis_service::{Command, CommandError, Keyspace, Reply};
use crate::env::{lock, Clock, Kv, KvError, SetOptions, Ttl};

#[derive(Default)]
struct State {
    keys: Keyspace,
    unreachable: bool,
    lose_next_answer: bool,
}

/// An in-memory Redis for unit tests. Cheap to clone; clones share one keyspace.
#[derive(Clone)]
pub struct FakeKv {
    st: Arc<Mutex<State>>,
    clock: ManualClock,
}

impl FakeKv {
    pub fn new(clock: ManualClock) -> Self {
        FakeKv { st: Arc::default(), clock }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    /// Whether calls reach the service.
    pub fn set_reachable(&self, reachable: bool) {
        self.st().unreachable = !reachable;
    }

    /// The next call is applied, then its answer is lost.
    pub fn lose_next_answer(&self) {
        self.st().lose_next_answer = true;
    }

    /// Loses every key.
    pub fn flush(&self) {
        self.st().keys.clear();
    }

    /// Live keys (expired ones not yet swept may be counted).
    pub fn len(&self) -> usize {
        self.st().keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn run(&self, cmd: Command) -> Result<Reply, KvError> {
        let now_ms = self.clock.wall_now().as_millis();
        let mut st = self.st();
        if st.unreachable {
            return Err(KvError::ConnectionLoss { maybe_applied: false });
        }
        let r = st.keys.execute(&cmd, now_ms, &mut || false);
        if std::mem::take(&mut st.lose_next_answer) {
            return Err(KvError::ConnectionLoss { maybe_applied: true });
        }
        r.map_err(|e| match e {
            CommandError::WrongType => KvError::WrongType,
            CommandError::Server(m) => KvError::Server(m),
        })
    }
}

fn unexpected(r: Reply) -> KvError {
    KvError::Server(format!("unexpected reply {r:?}"))
}

#[async_trait]
impl Kv for FakeKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        match self.run(Command::Get { key: key.into() })? {
            Reply::Value(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }
    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool, KvError> {
        match self.run(Command::Set { key: key.into(), value, opts })? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }
    async fn del(&self, key: &str) -> Result<bool, KvError> {
        match self.run(Command::Del { key: key.into() })? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }
    async fn pexpire(&self, key: &str, ttl: Duration) -> Result<bool, KvError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        match self.run(Command::PExpire { key: key.into(), ttl_ms })? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }
    async fn pttl(&self, key: &str) -> Result<Ttl, KvError> {
        match self.run(Command::PTtl { key: key.into() })? {
            Reply::Ttl(t) => Ok(t),
            r => Err(unexpected(r)),
        }
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
    ) -> Result<bool, KvError> {
        match self.run(Command::CompareAndSet { key: key.into(), expected, new, px })? {
            Reply::Bool(b) => Ok(b),
            r => Err(unexpected(r)),
        }
    }
    async fn take(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        match self.run(Command::Take { key: key.into() })? {
            Reply::Value(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }
    async fn rpush(&self, key: &str, values: Vec<Bytes>) -> Result<u64, KvError> {
        match self.run(Command::RPush { key: key.into(), values })? {
            Reply::Int(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
    async fn lpop(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        match self.run(Command::LPop { key: key.into() })? {
            Reply::Value(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Bytes>, KvError> {
        match self.run(Command::LRange { key: key.into(), start, stop })? {
            Reply::List(v) => Ok(v),
            r => Err(unexpected(r)),
        }
    }
    async fn llen(&self, key: &str) -> Result<u64, KvError> {
        match self.run(Command::LLen { key: key.into() })? {
            Reply::Int(n) => Ok(n),
            r => Err(unexpected(r)),
        }
    }
}
