//! [`FakeDb`]: the `Db` port on the shared SQL instance model, in memory.
//!
//! **Fault model.** One SQL instance ([`Instance`], the model the simulator's SQL nodes serve),
//! answered at once, every call validated first as a server would. Test-driven faults:
//! [`set_reachable`](FakeDb::set_reachable)`(false)` fails every call with `Unavailable`
//! (nothing sent); [`lose_next_answer`](FakeDb::lose_next_answer) applies the next call and
//! then fails it with `ConnectionLoss { maybe_applied: true }` (a `transact` committed, the
//! caller cannot know); [`hold_transacts`](FakeDb::hold_transacts) keeps every `transact`
//! waiting (unapplied) until it is lifted, so a test can see how many are in flight at once.
//! **Not modelled**: latency, timeouts, crashes losing uncommitted work (there is none: every
//! call commits at once).

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use futures::channel::oneshot;

use super::sql_service::Instance;
use crate::env::{
    lock, validate_get_many, validate_key, validate_name, validate_scan, validate_transact, Db, DbError, Row,
    RowState, TableName, WriteOp, WriteResult, WRITE_CONCURRENCY_DEFAULT,
};

#[derive(Default)]
struct State {
    data: Instance,
    unreachable: bool,
    lose_next_answer: bool,
    /// What [`Db::write_concurrency`] answers (`None`: the port's default).
    write_concurrency: Option<usize>,
    /// `transact` calls wait while this is set.
    holding: bool,
    /// The waiting `transact` calls, released when holding ends.
    held: Vec<oneshot::Sender<()>>,
}

/// An in-memory SQL instance for unit tests. Cheap to clone; clones share the data.
#[derive(Clone)]
pub struct FakeDb {
    name: String,
    st: Arc<Mutex<State>>,
}

impl FakeDb {
    pub fn new(name: impl Into<String>) -> FakeDb {
        FakeDb { name: name.into(), st: Arc::default() }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    /// Whether calls reach the instance.
    pub fn set_reachable(&self, reachable: bool) {
        self.st().unreachable = !reachable;
    }

    /// The next call is applied, then its answer is lost.
    pub fn lose_next_answer(&self) {
        self.st().lose_next_answer = true;
    }

    /// What the instance answers to [`Db::write_concurrency`].
    pub fn set_write_concurrency(&self, writers: usize) {
        self.st().write_concurrency = Some(writers);
    }

    /// While `hold` is true every `transact` waits before it is applied; setting it false lets
    /// all the waiting ones go on.
    pub fn hold_transacts(&self, hold: bool) {
        let released = {
            let mut st = self.st();
            st.holding = hold;
            if hold {
                Vec::new()
            } else {
                std::mem::take(&mut st.held)
            }
        };
        for w in released {
            let _ = w.send(());
        }
    }

    /// `transact` calls waiting now (see [`hold_transacts`](FakeDb::hold_transacts)).
    pub fn transacts_held(&self) -> usize {
        self.st().held.len()
    }

    /// Reads or changes the data directly (assertions, planted states).
    pub fn with<T>(&self, f: impl FnOnce(&mut Instance) -> T) -> T {
        f(&mut self.st().data)
    }

    /// Runs one call: refused if unreachable, applied, then maybe answered with a loss.
    fn call<T>(
        &self,
        validate: Result<(), DbError>,
        f: impl FnOnce(&mut Instance) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        validate?;
        let mut st = self.st();
        if st.unreachable {
            return Err(DbError::Unavailable);
        }
        let r = f(&mut st.data);
        if std::mem::take(&mut st.lose_next_answer) {
            return Err(DbError::ConnectionLoss { maybe_applied: true });
        }
        r
    }
}

#[async_trait]
impl Db for FakeDb {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, table: &TableName, key: &str) -> Result<Option<Row>, DbError> {
        self.call(validate_key(key), |d| Ok(d.get(table, key)))
    }

    async fn get_many(&self, table: &TableName, keys: &[String]) -> Result<Vec<Option<Row>>, DbError> {
        self.call(validate_get_many(keys), |d| Ok(d.get_many(table, keys)))
    }

    async fn scan_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, DbError> {
        self.call(validate_scan(prefix, start_after, limit), |d| {
            Ok(d.scan_prefix(table, prefix, start_after, limit))
        })
    }

    async fn get_by_index(
        &self,
        table: &TableName,
        index: &str,
        index_key: &str,
    ) -> Result<Option<Row>, DbError> {
        self.call(validate_name(index).and_then(|()| validate_key(index_key)), |d| {
            Ok(d.get_by_index(table, index, index_key))
        })
    }

    async fn export_prefix(
        &self,
        table: &TableName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<RowState>, DbError> {
        self.call(validate_scan(prefix, start_after, limit), |d| {
            Ok(d.export_prefix(table, prefix, start_after, limit))
        })
    }

    async fn transact(&self, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, DbError> {
        let wait = {
            let mut st = self.st();
            st.holding.then(|| {
                let (tx, rx) = oneshot::channel();
                st.held.push(tx);
                rx
            })
        };
        if let Some(rx) = wait {
            let _ = rx.await;
        }
        self.call(validate_transact(&ops), |d| d.transact(&ops))
    }

    fn write_concurrency(&self) -> usize {
        self.st().write_concurrency.unwrap_or(WRITE_CONCURRENCY_DEFAULT)
    }
}
