//! [`Transaction`]: objects locked in the global order, changed in memory, written at commit;
//! effects queued until the commit succeeded.

use std::collections::BTreeMap;
use std::future::Future;

use futures::future::BoxFuture;
use futures::FutureExt;
use serde_json::Value;

use super::{Model, ObjectRef, Orm, OrmError, Owned};
use crate::account::keyed_lock::KeyGuard;
use crate::env::{MonoTime, Row, TableName, WriteOp};

/// Most objects one transaction may hold (each is one row of one `transact`).
pub const TXN_OBJECTS_MAX: usize = 24;
/// Most plain rows ([`Transaction::write_row`]) one transaction may write: with
/// [`TXN_OBJECTS_MAX`] objects and the shard guards it stays within one `transact`.
pub const TXN_ROWS_MAX: usize = 8;

/// One object held by a transaction.
pub(super) struct Held<'a> {
    _guard: KeyGuard<'a>,
    /// The owner's state when the transaction took it.
    pub base: Owned,
    /// The transaction's change: `Some(state)` once written (`Some(None)`: deleted).
    pub change: Option<Option<Value>>,
}

impl Held<'_> {
    /// The object's state as this transaction sees it.
    fn current(&self) -> Option<&Value> {
        match &self.change {
            Some(v) => v.as_ref(),
            None => self.base.value.as_ref(),
        }
    }
}

/// A transaction of one server's object store; see the [module docs](super). Dropping it
/// without [`commit`](Self::commit) aborts it: nothing is written, no effect runs.
pub struct Transaction<'a> {
    pub(super) orm: &'a Orm,
    pub(super) held: BTreeMap<ObjectRef, Held<'a>>,
    pub(super) effects: Vec<BoxFuture<'static, ()>>,
    /// Plain rows written with the objects at commit: (the user whose shard holds it, op).
    pub(super) rows: Vec<(String, WriteOp)>,
    deadline: MonoTime,
}

impl Drop for Transaction<'_> {
    /// Lets go of every object held (their locks go with `held`), telling the observer.
    fn drop(&mut self) {
        for obj in self.held.keys() {
            self.orm.inner.released(obj);
        }
    }
}

impl<'a> Transaction<'a> {
    pub(super) fn new(orm: &'a Orm) -> Transaction<'a> {
        let deadline = orm.inner.now() + orm.inner.cfg.acquire_timeout;
        Transaction { orm, held: BTreeMap::new(), effects: Vec::new(), rows: Vec::new(), deadline }
    }

    /// Takes the objects `keys` of model `M` (see [`lock`](Self::lock)).
    pub async fn lock_all<M: Model>(&mut self, keys: &[&str]) -> Result<(), OrmError> {
        let objects: Vec<ObjectRef> = keys.iter().map(|k| ObjectRef::of::<M>(k)).collect();
        self.lock(&objects).await
    }

    /// Takes `objects` (of any models) for this transaction, in the global order: borrows each
    /// from its owner if need be, waiting for the transactions that hold it here. Every object
    /// must sort after the ones already held ([`OrmError::LockOrder`] otherwise), so take all
    /// of a transaction's objects in one call when you can.
    pub async fn lock(&mut self, objects: &[ObjectRef]) -> Result<(), OrmError> {
        let inner = &self.orm.inner;
        let mut todo: Vec<ObjectRef> =
            objects.iter().filter(|o| !self.held.contains_key(*o)).cloned().collect();
        for o in &todo {
            o.validate().map_err(OrmError::InvalidArgument)?;
        }
        if !inner.cfg.bugs.unordered_locks {
            todo.sort();
            todo.dedup();
            if let (Some(first), Some((held, _))) = (todo.first(), self.held.last_key_value()) {
                if first < held {
                    return Err(OrmError::LockOrder { object: first.to_string(), held: held.to_string() });
                }
            }
        }
        if self.held.len() + todo.len() > TXN_OBJECTS_MAX {
            return Err(OrmError::InvalidArgument(format!(
                "{} objects in one transaction: at most {TXN_OBJECTS_MAX}",
                self.held.len() + todo.len()
            )));
        }
        for obj in todo {
            if self.held.contains_key(&obj) {
                continue;
            }
            let (left, name) = (self.deadline.saturating_since(inner.now()), obj.name());
            let Ok(guard) = crate::env::timeout(&*inner.env.clock, left, inner.locks.lock(&name)).await
            else {
                return Err(OrmError::Unavailable {
                    object: obj.to_string(),
                    why: "held by other transactions here past this one's deadline".into(),
                });
            };
            let base = inner.ensure_owned(&obj, self.deadline).await?;
            self.held.insert(obj, Held { _guard: guard, base, change: None });
        }
        Ok(())
    }

    /// Takes the object `key` of model `M` and returns its state (`None`: it does not exist).
    /// iFun's `Fetch`.
    pub async fn fetch<M: Model>(&mut self, key: &str) -> Result<Option<M>, OrmError> {
        let obj = ObjectRef::of::<M>(key);
        self.lock(std::slice::from_ref(&obj)).await?;
        self.get::<M>(key)
    }

    /// The state of a held object of model `M` (`None`: it does not exist).
    pub fn get<M: Model>(&self, key: &str) -> Result<Option<M>, OrmError> {
        let obj = ObjectRef::of::<M>(key);
        let held = self.held.get(&obj).ok_or_else(|| OrmError::NotLocked(obj.to_string()))?;
        held.current()
            .map(|v| {
                serde_json::from_value::<M>(v.clone())
                    .map_err(|e| OrmError::Codec { object: obj.to_string(), why: e.to_string() })
            })
            .transpose()
    }

    /// Writes `value` as the state of its (held) object, creating it if absent. If its unique
    /// fields change, the index entries of the old and new values must be held too
    /// ([`ObjectRef::unique`]); a value another object holds is [`OrmError::UniqueTaken`].
    pub fn put<M: Model>(&mut self, value: &M) -> Result<(), OrmError> {
        let key = value.key();
        let obj = ObjectRef::of::<M>(&key);
        let json = serde_json::to_value(value)
            .map_err(|e| OrmError::Codec { object: obj.to_string(), why: e.to_string() })?;
        let old = self.get::<M>(&key)?;
        self.reindex::<M>(&key, old.as_ref().map(M::unique_fields), Some(value.unique_fields()))?;
        let held = self.held.get_mut(&obj).ok_or_else(|| OrmError::NotLocked(obj.to_string()))?;
        held.change = Some(Some(json));
        Ok(())
    }

    /// Creates the (held) object `value`; [`OrmError::Exists`] if it exists. iFun's `Create`.
    pub fn create<M: Model>(&mut self, value: &M) -> Result<(), OrmError> {
        let obj = ObjectRef::of::<M>(&value.key());
        let held = self.held.get(&obj).ok_or_else(|| OrmError::NotLocked(obj.to_string()))?;
        if held.current().is_some() {
            return Err(OrmError::Exists(obj.to_string()));
        }
        self.put(value)
    }

    /// Deletes the (held) object `key` of model `M` (and its unique-field entries, which must
    /// be held); false if it did not exist.
    pub fn delete<M: Model>(&mut self, key: &str) -> Result<bool, OrmError> {
        let obj = ObjectRef::of::<M>(key);
        let old = self.get::<M>(key)?;
        self.reindex::<M>(key, old.as_ref().map(M::unique_fields), None)?;
        let held = self.held.get_mut(&obj).ok_or_else(|| OrmError::NotLocked(obj.to_string()))?;
        held.change = Some(None);
        Ok(old.is_some())
    }

    /// Takes the unique-field entry `field` = `value` of model `M`, then the object it names,
    /// and returns that object (`None` if no object holds the value). The object must sort
    /// after everything held, like any [`lock`](Self::lock).
    pub async fn fetch_by<M: Model>(&mut self, field: &str, value: &str) -> Result<Option<M>, OrmError> {
        let entry = ObjectRef::unique::<M>(field, value);
        self.lock(std::slice::from_ref(&entry)).await?;
        let Some(key) = self.entry_holder(&entry)? else { return Ok(None) };
        let found = self.fetch::<M>(&key).await?;
        Ok(found.filter(|m| m.unique_fields().iter().any(|(f, v)| *f == field && v == value)))
    }

    /// The key an index entry names, if any.
    fn entry_holder(&self, entry: &ObjectRef) -> Result<Option<String>, OrmError> {
        let held = self.held.get(entry).ok_or_else(|| OrmError::NotLocked(entry.to_string()))?;
        match held.current() {
            None => Ok(None),
            Some(Value::String(k)) => Ok(Some(k.clone())),
            Some(other) => {
                Err(OrmError::Codec { object: entry.to_string(), why: format!("entry holds {other}") })
            }
        }
    }

    /// Moves object `key`'s unique-field entries from `old` to `new` (checked first, then
    /// changed, so a refusal changes nothing).
    fn reindex<M: Model>(
        &mut self,
        key: &str,
        old: Option<Vec<(&'static str, String)>>,
        new: Option<Vec<(&'static str, String)>>,
    ) -> Result<(), OrmError> {
        let (old, new) = (old.unwrap_or_default(), new.unwrap_or_default());
        let gone: Vec<ObjectRef> =
            old.iter().filter(|p| !new.contains(p)).map(|(f, v)| ObjectRef::unique::<M>(f, v)).collect();
        let added: Vec<ObjectRef> =
            new.iter().filter(|p| !old.contains(p)).map(|(f, v)| ObjectRef::unique::<M>(f, v)).collect();
        for entry in gone.iter().chain(&added) {
            entry.validate().map_err(OrmError::InvalidArgument)?;
        }
        for entry in &added {
            match self.entry_holder(entry)? {
                Some(holder) if holder != key => return Err(OrmError::UniqueTaken(entry.key.clone())),
                _ => {}
            }
        }
        for entry in &gone {
            self.entry_holder(entry)?;
        }
        for entry in gone {
            if let Some(h) = self.held.get_mut(&entry) {
                h.change = Some(None);
            }
        }
        for entry in added {
            if let Some(h) = self.held.get_mut(&entry) {
                h.change = Some(Some(Value::String(key.to_string())));
            }
        }
        Ok(())
    }

    /// Queues `effect` (a client message, a send, an RPC, a timer) to run after the commit
    /// succeeds, in queue order, in one task; an aborted transaction drops it unrun.
    pub fn after_commit(&mut self, effect: impl Future<Output = ()> + Send + 'static) {
        if self.orm.inner.cfg.bugs.effects_before_commit {
            drop(self.orm.inner.env.spawn.spawn("orm-effect", effect.boxed()));
            return;
        }
        self.effects.push(effect.boxed());
    }

    /// Adds a write of a plain row (not an object) of `user`'s shard to this transaction's
    /// commit: it goes in the same `transact` as the objects' writes, so it happens exactly when
    /// they do (a journal entry, an idempotency record, an index row). The row key must be in
    /// `user`'s shard (`Orm::router().user_key`). Carry fence 0: the held objects' fences
    /// already fence the whole `transact`. Only for transactions whose writes all go to one SQL
    /// instance (the commit fails with [`OrmError::InvalidArgument`] otherwise); at most
    /// [`TXN_ROWS_MAX`] rows.
    pub fn write_row(&mut self, user: &str, op: WriteOp) -> Result<(), OrmError> {
        if self.rows.len() >= TXN_ROWS_MAX {
            return Err(OrmError::InvalidArgument(format!(
                "more than {TXN_ROWS_MAX} plain rows in one transaction"
            )));
        }
        crate::shard::key::validate_user(user).map_err(OrmError::InvalidArgument)?;
        self.rows.push((user.to_string(), op));
        Ok(())
    }

    /// Reads the committed plain row `key` of `table` in `user`'s shard (not locked: a row
    /// this transaction's objects guard — written only in transactions holding them — cannot
    /// change under it). The future does not borrow the transaction.
    pub fn read_row(
        &self,
        user: &str,
        table: &TableName,
        key: &str,
    ) -> impl Future<Output = Result<Option<Row>, OrmError>> + Send + 'static {
        let router = self.orm.inner.router.clone();
        let (user, table, key) = (user.to_string(), table.clone(), key.to_string());
        async move {
            router.get(&user, &table, &key).await.map_err(|e| OrmError::Unavailable {
                object: format!("{}/{key}", table.as_str()),
                why: e.to_string(),
            })
        }
    }

    /// Reads up to `limit` committed plain rows of `table` in `user`'s shard whose key suffix
    /// starts with `suffix_prefix`, in key order, after the full key `start_after` when given
    /// (not locked, like [`read_row`](Self::read_row)): several rows these objects guard in
    /// one round trip.
    pub fn scan_rows(
        &self,
        user: &str,
        table: &TableName,
        suffix_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Row>, OrmError>> + Send + 'static {
        let router = self.orm.inner.router.clone();
        let (user, table, prefix) = (user.to_string(), table.clone(), suffix_prefix.to_string());
        let after = start_after.map(str::to_string);
        async move {
            router.scan_user(&user, &table, &prefix, after.as_deref(), limit).await.map_err(|e| {
                OrmError::Unavailable {
                    object: format!("{}/{user}/{prefix}*", table.as_str()),
                    why: e.to_string(),
                }
            })
        }
    }

    /// The objects this transaction holds (sorted).
    pub fn held(&self) -> Vec<ObjectRef> {
        self.held.keys().cloned().collect()
    }
}
