//! [`ShardRouter`]: routes a user's rows to the instance holding the user's shard, by the
//! shard map in ZooKeeper, with every write guarded by the map version it was routed by.
//!
//! Inputs: the map znode (read at start, then kept fresh by a watch task), the instances'
//! answers, and the clock (freeze waits). A write to shard `s` is sent to the instance the
//! cached map names, as one `transact` whose first operation is a `Guard` on `s`'s guard row
//! at the map's version. If the instance refuses the guard (`Fenced`: the shard moved after
//! that version; `NotFound`: the shard is not, or no longer, there), nothing was written: the
//! router re-reads the map and retries — at once if the map moved on, else (a move of `s` is
//! frozen) every [`FREEZE_POLL`] until the map changes, for at most [`FREEZE_WAIT_MAX`].
//! Writes to other shards never wait. Reads check the guard row after reading the data: a
//! guard still present with a fence no newer than the map means the instance held the shard
//! when the data was read (guards are only ever removed, or re-created with a newer fence).
//!
//! Row keys of sharded data carry their shard ([`super::key`]); a write whose key belongs to
//! another shard, or that sets a unique index (indexes do not move with shards: unique data
//! such as user names belongs in a public area), is refused before anything is sent. The
//! first write of a table to an instance also registers the table there (a fence-0
//! placeholder `table/{name}` in the guard table, in the same transaction), so a shard move
//! knows every table to copy.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::config::ShardConfig;
use super::key::{key_shard, shard_of, user_key, user_prefix, validate_user, ShardId};
use super::map::{guard_key, guard_table, map_path, registry_key, ShardMap};
use super::ShardError;
use crate::env::{
    ensure_path, lock, Backoff, Coord, CoordError, CreateMode, Db, DbError, Env, Expect, Row, SessionOptions,
    Stat, TableName, TaskHandle, WriteOp, WriteResult,
};

/// Longest a write or read waits for a frozen shard (a move's switch) before failing with
/// [`ShardError::Frozen`]. Moves freeze a shard for well under a second.
pub const FREEZE_WAIT_MAX: Duration = Duration::from_secs(5);
/// How often a waiting call looks at the cached map during a freeze.
pub const FREEZE_POLL: Duration = Duration::from_millis(10);
/// Back-off of the watch task after a coordination error.
const WATCH_BACKOFF: Backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));

/// The cached map and the znode stat it was read with.
struct Cached {
    map: Arc<ShardMap>,
    /// Data version of the znode; only newer reads replace the cache.
    znode_version: i32,
}

struct Inner {
    env: Env,
    app_id: String,
    cfg: ShardConfig,
    coord: Mutex<Arc<dyn Coord>>,
    session: SessionOptions,
    cached: Mutex<Cached>,
    /// `(instance, table)` already registered by this process.
    registered: Mutex<BTreeSet<(String, TableName)>>,
    watch: Mutex<Option<TaskHandle>>,
}

/// Where a write was accepted: the instance and the map version it was routed (and guarded)
/// by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub shard: ShardId,
    pub instance: String,
    pub map_version: u64,
}

/// Routes rows by user id; cheap to clone.
#[derive(Clone)]
pub struct ShardRouter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ShardRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardRouter").field("version", &self.map().version).finish_non_exhaustive()
    }
}

impl ShardRouter {
    /// Connects, loads the map (creating it from the configured layout, with its guard rows,
    /// if the cluster has none yet) and starts watching it.
    pub async fn start(
        env: Env,
        app_id: &str,
        cfg: ShardConfig,
        session: SessionOptions,
    ) -> Result<ShardRouter, ShardError> {
        for name in cfg.instances.keys() {
            if env.db.instance(name).is_none() {
                return Err(ShardError::UnknownInstance(name.clone()));
            }
        }
        let coord = env.coord.connect(session).await?;
        ensure_path(coord.as_ref(), &format!("/{app_id}")).await?;
        let path = map_path(app_id);
        let (map, stat) = match read_map(coord.as_ref(), &path, &cfg).await {
            Err(ShardError::Coord(CoordError::NoNode)) => {
                bootstrap(&env, coord.as_ref(), &path, &cfg).await?;
                read_map(coord.as_ref(), &path, &cfg).await?
            }
            other => other?,
        };
        info!(version = map.version, "shard map loaded");
        let router = ShardRouter {
            inner: Arc::new(Inner {
                env,
                app_id: app_id.to_string(),
                cfg,
                coord: Mutex::new(coord),
                session,
                cached: Mutex::new(Cached { map: Arc::new(map), znode_version: stat.version }),
                registered: Mutex::default(),
                watch: Mutex::new(None),
            }),
        };
        let task = router.clone();
        let handle =
            router.inner.env.spawn.spawn("shard-map-watch", Box::pin(async move { task.watch_loop().await }));
        *lock(&router.inner.watch) = Some(handle);
        Ok(router)
    }

    /// Stops watching the map.
    pub fn stop(&self) {
        if let Some(h) = lock(&self.inner.watch).take() {
            h.abort();
        }
    }

    /// The map as this server knows it now.
    pub fn map(&self) -> Arc<ShardMap> {
        lock(&self.inner.cached).map.clone()
    }

    pub fn config(&self) -> &ShardConfig {
        &self.inner.cfg
    }

    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    pub(crate) fn env(&self) -> &Env {
        &self.inner.env
    }

    pub(crate) fn coord(&self) -> Arc<dyn Coord> {
        lock(&self.inner.coord).clone()
    }

    /// The shard of `user`.
    pub fn shard_of(&self, user: &str) -> ShardId {
        shard_of(user, self.inner.cfg.logical_shards)
    }

    /// The row key of `user`'s row `suffix`.
    pub fn user_key(&self, user: &str, suffix: &str) -> String {
        user_key(self.shard_of(user), user, suffix)
    }

    /// The instance called `name`.
    pub fn instance(&self, name: &str) -> Result<Arc<dyn Db>, ShardError> {
        self.inner.env.db.instance(name).ok_or_else(|| ShardError::UnknownInstance(name.to_string()))
    }

    /// The instance holding public `area` (unsharded data: the user-name index, guilds, ...).
    pub fn public(&self, area: &str) -> Result<Arc<dyn Db>, ShardError> {
        self.instance(self.inner.cfg.public_instance(area))
    }

    /// Applies `ops` to `user`'s shard all-or-nothing (one instance, as `Db::transact`).
    /// Every key must be one of the shard's ([`ShardRouter::user_key`]); error op indexes
    /// refer to `ops`.
    pub async fn transact(&self, user: &str, ops: Vec<WriteOp>) -> Result<Vec<WriteResult>, ShardError> {
        self.transact_routed(user, ops).await.map(|(results, _)| results)
    }

    /// [`ShardRouter::transact`], also saying where the write was accepted.
    pub async fn transact_routed(
        &self,
        user: &str,
        ops: Vec<WriteOp>,
    ) -> Result<(Vec<WriteResult>, Route), ShardError> {
        validate_user(user).map_err(ShardError::InvalidArgument)?;
        let shard = self.shard_of(user);
        let (results, mut routes) = self.transact_in(&[shard], ops).await?;
        Ok((results, routes.remove(0)))
    }

    /// Applies `ops`, whose keys belong to the shards of `users`, all-or-nothing, when those
    /// shards are on one instance (one `transact`, one guard per shard). If the map puts them
    /// on several instances the call fails with [`ShardError::Spread`] before anything is
    /// sent: atomicity across instances is the caller's (the object store's intent records).
    pub async fn transact_users(
        &self,
        users: &[&str],
        ops: Vec<WriteOp>,
    ) -> Result<Vec<WriteResult>, ShardError> {
        let mut shards = BTreeSet::new();
        for user in users {
            validate_user(user).map_err(ShardError::InvalidArgument)?;
            shards.insert(self.shard_of(user));
        }
        let shards: Vec<ShardId> = shards.into_iter().collect();
        self.transact_in(&shards, ops).await.map(|(results, _)| results)
    }

    /// The instance the cached map puts `user`'s shard on.
    pub fn instance_of_user(&self, user: &str) -> String {
        self.map().instance_of(self.shard_of(user)).to_string()
    }

    /// The guarded write behind `transact*`: `shards` sorted and distinct.
    async fn transact_in(
        &self,
        shards: &[ShardId],
        ops: Vec<WriteOp>,
    ) -> Result<(Vec<WriteResult>, Vec<Route>), ShardError> {
        for op in &ops {
            if !key_shard(op.key()).is_some_and(|s| shards.contains(&s)) {
                return Err(ShardError::InvalidArgument(format!(
                    "key {:?} is not in shard(s) {shards:?}",
                    op.key()
                )));
            }
            if matches!(op, WriteOp::Put { index, .. } if !index.is_empty()) {
                return Err(ShardError::InvalidArgument("sharded rows cannot set unique indexes".into()));
            }
            if op.table() == &guard_table() {
                return Err(ShardError::InvalidArgument("the shard guard table is reserved".into()));
            }
        }
        let deadline = self.inner.env.clock.now() + FREEZE_WAIT_MAX;
        loop {
            let map = self.map();
            let names: BTreeSet<&str> = shards.iter().map(|s| map.instance_of(*s)).collect();
            if names.len() != 1 {
                return Err(ShardError::Spread {
                    instances: names.into_iter().map(str::to_string).collect(),
                });
            }
            let name = map.instance_of(shards[0]).to_string();
            let db = self.instance(&name)?;
            let tables: BTreeSet<TableName> = ops.iter().map(|op| op.table().clone()).collect();
            let unregistered: Vec<TableName> = {
                let done = lock(&self.inner.registered);
                tables.into_iter().filter(|t| !done.contains(&(name.clone(), t.clone()))).collect()
            };
            let mut full = Vec::with_capacity(ops.len() + shards.len() + unregistered.len());
            full.extend(shards.iter().map(|s| WriteOp::guard(&guard_table(), guard_key(*s), map.version)));
            full.extend(
                unregistered.iter().map(|t| WriteOp::raise_fence(&guard_table(), registry_key(t), 0)),
            );
            let skip = full.len();
            full.extend(ops.iter().cloned());
            match db.transact(full).await {
                Ok(mut results) => {
                    lock(&self.inner.registered).extend(unregistered.into_iter().map(|t| (name.clone(), t)));
                    let routes = shards
                        .iter()
                        .map(|s| Route { shard: *s, instance: name.clone(), map_version: map.version })
                        .collect();
                    return Ok((results.split_off(skip), routes));
                }
                Err(DbError::Fenced { op_index, .. } | DbError::NotFound { op_index })
                    if op_index < shards.len() =>
                {
                    let shard = shards[op_index];
                    crate::probe!("shard: write refused by the guard, shard moved or frozen");
                    debug!(%shard, version = map.version, instance = %name, "write refused by the shard guard");
                    self.await_newer_map(shard, map.version, deadline).await?;
                }
                Err(e) => return Err(ShardError::Db { instance: name, error: shift_op_index(e, skip) }),
            }
        }
    }

    /// `user`'s row `key` of `table`.
    pub async fn get(&self, user: &str, table: &TableName, key: &str) -> Result<Option<Row>, ShardError> {
        validate_user(user).map_err(ShardError::InvalidArgument)?;
        let shard = self.shard_of(user);
        if key_shard(key) != Some(shard) {
            return Err(ShardError::InvalidArgument(format!("key {key:?} is not in shard {shard}")));
        }
        self.guarded_read(shard, |db| {
            let (table, key) = (table.clone(), key.to_string());
            async move { db.get(&table, &key).await }
        })
        .await
    }

    /// Up to `limit` of `user`'s rows of `table` whose key suffix starts with `suffix_prefix`,
    /// in key order, after the full key `start_after` when given.
    pub async fn scan_user(
        &self,
        user: &str,
        table: &TableName,
        suffix_prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, ShardError> {
        validate_user(user).map_err(ShardError::InvalidArgument)?;
        let shard = self.shard_of(user);
        let prefix = format!("{}{suffix_prefix}", user_prefix(shard, user));
        self.guarded_read(shard, |db| {
            let (table, prefix, after) = (table.clone(), prefix.clone(), start_after.map(str::to_string));
            async move { db.scan_prefix(&table, &prefix, after.as_deref(), limit).await }
        })
        .await
    }

    /// Up to `limit` rows of `table` in logical shard `shard` (every user's), in key order,
    /// after the full key `start_after` when given: for sweeps over a shard's index rows.
    pub async fn scan_shard(
        &self,
        shard: ShardId,
        table: &TableName,
        start_after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Row>, ShardError> {
        if shard.0 >= self.config().logical_shards {
            return Err(ShardError::InvalidArgument(format!("no shard {}", shard.0)));
        }
        let prefix = crate::shard::key::shard_prefix(shard);
        self.guarded_read(shard, |db| {
            let (table, prefix, after) = (table.clone(), prefix.clone(), start_after.map(str::to_string));
            async move { db.scan_prefix(&table, &prefix, after.as_deref(), limit).await }
        })
        .await
    }

    /// Runs `read` on the instance of `shard`, then checks the instance still held the shard.
    async fn guarded_read<T, F, Fut>(&self, shard: ShardId, read: F) -> Result<T, ShardError>
    where
        F: Fn(Arc<dyn Db>) -> Fut,
        Fut: std::future::Future<Output = Result<T, DbError>>,
    {
        let deadline = self.inner.env.clock.now() + FREEZE_WAIT_MAX;
        loop {
            let map = self.map();
            let name = map.instance_of(shard).to_string();
            let db = self.instance(&name)?;
            let value =
                read(db.clone()).await.map_err(|error| ShardError::Db { instance: name.clone(), error })?;
            let guard = db
                .get(&guard_table(), &guard_key(shard))
                .await
                .map_err(|error| ShardError::Db { instance: name.clone(), error })?;
            match guard {
                Some(g) if g.fence <= map.version => return Ok(value),
                _ => {
                    crate::probe!("shard: read not confirmed by the guard, re-read on a newer map");
                    debug!(%shard, version = map.version, instance = %name, "read not confirmed by the shard guard");
                    self.await_newer_map(shard, map.version, deadline).await?;
                }
            }
        }
    }

    /// Waits until the map is newer than `version`: one direct read first (the watch may lag),
    /// then the cache, polled, until `deadline`.
    async fn await_newer_map(
        &self,
        shard: ShardId,
        version: u64,
        deadline: crate::env::MonoTime,
    ) -> Result<(), ShardError> {
        if let Err(e) = self.refresh().await {
            debug!(error = %e, "shard map re-read failed; waiting for the watch");
        }
        loop {
            let map = self.map();
            if map.version > version {
                return Ok(());
            }
            if self.inner.env.clock.now() >= deadline {
                crate::probe!("shard: gave up waiting for a frozen shard");
                return Err(ShardError::Frozen { shard });
            }
            self.inner.env.clock.sleep(FREEZE_POLL).await;
        }
    }

    /// Reads the map from ZooKeeper now and caches it if newer.
    pub async fn refresh(&self) -> Result<Arc<ShardMap>, ShardError> {
        let coord = self.coord();
        let (map, stat) = read_map(coord.as_ref(), &map_path(&self.inner.app_id), &self.inner.cfg).await?;
        Ok(self.offer(map, stat))
    }

    /// Caches `map` if its znode version is newer than the cached one's.
    pub(crate) fn offer(&self, map: ShardMap, stat: Stat) -> Arc<ShardMap> {
        let mut cached = lock(&self.inner.cached);
        if stat.version > cached.znode_version {
            if map.version != cached.map.version {
                info!(from = cached.map.version, to = map.version, "shard map switched");
            }
            *cached = Cached { map: Arc::new(map), znode_version: stat.version };
        }
        cached.map.clone()
    }

    /// Keeps the cache fresh: read with a watch, wait for it, again; reconnect on expiry.
    async fn watch_loop(self) {
        let path = map_path(&self.inner.app_id);
        let mut attempt = 0;
        loop {
            let coord = self.coord();
            let err = match coord.get_data_w(&path).await {
                Ok((bytes, stat, watcher)) => {
                    match ShardMap::decode(
                        &bytes,
                        self.inner.cfg.logical_shards,
                        &self.inner.cfg.instance_names(),
                    ) {
                        Ok(map) => {
                            self.offer(map, stat);
                        }
                        Err(e) => warn!(error = %e, "stored shard map unusable; keeping the cached one"),
                    }
                    attempt = 0;
                    watcher.await;
                    continue;
                }
                Err(e) => e,
            };
            if matches!(err, CoordError::SessionExpired | CoordError::Closed) {
                match self.inner.env.coord.connect(self.inner.session).await {
                    Ok(c) => *lock(&self.inner.coord) = c,
                    Err(e) => debug!(error = %e, "shard map watch cannot reconnect"),
                }
            }
            let delay = WATCH_BACKOFF.delay(attempt, self.inner.env.rand.as_ref());
            attempt = attempt.saturating_add(1);
            self.inner.env.clock.sleep(delay).await;
        }
    }
}

/// Reads and checks the stored map.
pub(crate) async fn read_map(
    coord: &dyn Coord,
    path: &str,
    cfg: &ShardConfig,
) -> Result<(ShardMap, Stat), ShardError> {
    let (bytes, stat) = coord.get_data(path).await?;
    let map = ShardMap::decode(&bytes, cfg.logical_shards, &cfg.instance_names())?;
    Ok((map, stat))
}

/// First start of the cluster: guard rows for the configured layout at fence 1, then the map.
/// Racing servers do the same harmlessly (same rows; the map is created once).
async fn bootstrap(env: &Env, coord: &dyn Coord, path: &str, cfg: &ShardConfig) -> Result<(), ShardError> {
    let map = ShardMap::initial(cfg.layout.clone());
    for name in cfg.instances.keys() {
        let db = env.db.instance(name).ok_or_else(|| ShardError::UnknownInstance(name.clone()))?;
        let ops: Vec<WriteOp> = (0..cfg.logical_shards)
            .map(ShardId)
            .filter(|s| map.instance_of(*s) == name)
            .map(|s| {
                WriteOp::put(
                    &guard_table(),
                    guard_key(s),
                    Bytes::from(name.clone()),
                    Expect::Any,
                    map.version,
                )
            })
            .collect();
        for chunk in ops.chunks(crate::env::DB_TRANSACT_OPS_MAX) {
            match db.transact(chunk.to_vec()).await {
                // A newer map already fenced these rows: this bootstrap lost the race.
                Ok(_) | Err(DbError::Fenced { .. }) => {}
                Err(error) => return Err(ShardError::Db { instance: name.clone(), error }),
            }
        }
    }
    match coord.create(path, Bytes::from(map.encode()), CreateMode::Persistent).await {
        Ok(_) | Err(CoordError::NodeExists) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Moves an error's `op_index` from the guarded transaction back to the caller's ops.
fn shift_op_index(e: DbError, skip: usize) -> DbError {
    let shift = |i: usize| i.saturating_sub(skip);
    match e {
        DbError::VersionMismatch { op_index, actual } => {
            DbError::VersionMismatch { op_index: shift(op_index), actual }
        }
        DbError::Fenced { op_index, row_fence } => DbError::Fenced { op_index: shift(op_index), row_fence },
        DbError::NotFound { op_index } => DbError::NotFound { op_index: shift(op_index) },
        DbError::UniqueViolation { op_index, index } => {
            DbError::UniqueViolation { op_index: shift(op_index), index }
        }
        other => other,
    }
}
