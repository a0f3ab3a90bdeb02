//! Cross-server storage (iFun's `CrossServerStorage`): JSON values in Redis under generated
//! keys with an expiry, shared by every server of the cluster.
//!
//! The seed's use: a game server stores a player's battle data under a fresh key with a 10 s
//! expiry and hands the key to the client as an authentication key; the battle server the
//! client moves to reads (better: [`take`](CrossServerStorage::take)s) the data by that key.
//!
//! ```no_run
//! # use std::time::Duration;
//! # use engine::storage::{CrossServerStorage, Key, StorageError};
//! # async fn demo(storage: CrossServerStorage, text_from_client: &str) -> Result<(), StorageError> {
//! // Game server: issue the key (iFun: CrossServerStorage::CreateSync(user_data, 10 s, &key)).
//! let auth_key = storage.create(&serde_json::json!({"user_name": "alice", "level": 7}),
//!                               Duration::from_secs(10)).await?;
//! let _for_the_client = auth_key.to_string();
//! // Battle server: redeem it exactly once.
//! let key: Key = text_from_client.parse().expect("reply with an error to the client");
//! let user_data = storage.take(&key).await?; // NotFound: expired, forged or already used
//! # let _ = user_data; Ok(()) }
//! ```
//!
//! # iFun names
//! | iFun | Sandtable |
//! |---|---|
//! | `Create` / `CreateSync` | [`create`](CrossServerStorage::create), [`create_with_key`](CrossServerStorage::create_with_key) |
//! | `Read` / `ReadSync` | [`read`](CrossServerStorage::read), [`read_versioned`](CrossServerStorage::read_versioned) |
//! | `Write` / `WriteSync` | [`write`](CrossServerStorage::write), [`compare_and_write`](CrossServerStorage::compare_and_write) |
//! | `Delete` / `DeleteSync` | [`delete`](CrossServerStorage::delete), [`take`](CrossServerStorage::take) |
//! | `Refresh` / `RefreshSync` | [`refresh`](CrossServerStorage::refresh) |
//!
//! Every call is an `async fn`: awaiting it is iFun's `...Sync`; spawning it (the `Spawn`
//! port) and handling its result later is iFun's callback form. `CrossServerStorage::Key`
//! is [`Key`], `Result` codes are [`StorageError`] variants.
//!
//! # Storage format
//! The value under [`Key`] `k` lives in the Redis string `{key_prefix}{k}` (e.g.
//! `sandtable:css:0b6c5f1e-8d0a-4c8e-9f1e-2a3b4c5d6e7f`) as the compact JSON envelope
//! `{"v":<version>,"d":<value>}` (plus `"r":<refresh count>` once refreshed): see
//! the private `envelope` module. Any JSON value may be stored, `null` included.
//!
//! - `v`: the version, 1 on create, +1 on every `write` / `compare_and_write`.
//! - `r`: how often the key was refreshed (absent = 0); see "Expiry" for why it exists.
//! - `d`: the value.
//!
//! Because `(v, r)` only grows, a key never holds the same bytes twice, so the
//! compare-and-sets on the bytes have no ABA problem.
//!
//! # Concurrency
//! Every call is linearizable (each is one atomic Redis command, or a loop of reads and one
//! compare-and-set that succeeds only if nothing changed in between).
//! - [`write`](CrossServerStorage::write) is last-writer-wins, as iFun documents for `Write`:
//!   concurrent writers overwrite each other in an order nobody chooses. Each write still
//!   bumps the version atomically, so a `compare_and_write` based on an older read fails.
//! - [`compare_and_write`](CrossServerStorage::compare_and_write) is the safe alternative:
//!   it writes only over the version the caller read.
//! - [`take`](CrossServerStorage::take) is `GETDEL`: of any number of concurrent takers
//!   exactly one gets the value. Use it for one-shot authentication keys; `read` + `delete`
//!   would let two servers both accept one key.
//! - The optimistic loops retry at most [`UPDATE_ATTEMPTS_MAX`] times, then answer
//!   [`StorageError::Contended`] having changed nothing.
//!
//! # Expiry
//! TTLs count on the Redis node's clock, in whole milliseconds (sub-millisecond parts are
//! dropped), from 1 ms to [`TTL_MAX`]. `write` and `compare_and_write` keep the key's
//! remaining TTL: they read `PTTL` after reading the value, then compare-and-set the new
//! envelope with `PX` = that remaining time. So an update may push the expiry out by the time
//! between its `PTTL` and its compare-and-set (one round trip) but never shortens it, and a
//! key that expires meanwhile makes the compare-and-set fail and the call answer `NotFound`.
//! A `refresh` that lands between an update's `PTTL` and its compare-and-set would be undone
//! if `refresh` were a bare `PEXPIRE`; that is why `refresh` is a compare-and-set too, which
//! bumps the envelope's refresh count, so the update's compare-and-set fails and it retries
//! with the refreshed TTL. (Rejected alternative: `SET XX KEEPTTL` keeps the TTL atomically
//! but cannot be made conditional on the version, so a plain write could clobber a
//! concurrent `compare_and_write` with an equal version number.)
//!
//! # Metrics
//! With [`with_metrics`](CrossServerStorage::with_metrics), every call is counted in
//! [`STORAGE_OPS`] (`sandtable_storage_ops_total{op, result}`): `op` is the method name
//! (`create`, `create_with_key`, `read`, `write`, `compare_and_write`, `delete`, `refresh`,
//! `take`; `read_versioned` counts as `read`), `result` one of `ok`, `not_found`,
//! `already_exists`, `version_mismatch`, `contended` or `error` (everything else: disabled,
//! bad arguments, corrupt values, Redis failures). Redis latency itself is measured by
//! [`InstrumentedKv`](crate::metrics::InstrumentedKv).
//!
//! # Failures
//! A [`StorageError::Backend`] error whose [`maybe_applied`](StorageError::maybe_applied) is
//! true may hide a change: a `create` may have stored a value under a key the caller never
//! learns (harmless: it expires), a `take` may have consumed the value (treat the key as used).

mod config;
mod envelope;
mod error;
mod key;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use crate::env::{Env, Kv, Rand, SetCondition, SetOptions, Ttl};
use crate::metrics::{CounterVec, Metrics};

pub use self::config::{StorageConfig, KEY_PREFIX_DEFAULT, SECTION, VALUE_BYTES_DEFAULT, VALUE_BYTES_LIMIT};
pub use self::error::StorageError;
pub use self::key::{Key, KeyParseError, KEY_TEXT_BYTES};

/// Longest TTL accepted: 10 years. Longer is almost surely a unit mistake, and keeps
/// `now + ttl` far from overflowing on the Redis side.
pub const TTL_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// Shortest TTL accepted (Redis refuses `PX 0`).
pub const TTL_MIN: Duration = Duration::from_millis(1);

/// Attempts of the read / compare-and-set loop of `write`, `compare_and_write` and `refresh`
/// before giving up with [`StorageError::Contended`]. Each lost attempt means another update
/// of the same key succeeded, so the cluster as a whole always makes progress.
pub const UPDATE_ATTEMPTS_MAX: u32 = 16;

/// Keys `create` draws before giving up with [`StorageError::AlreadyExists`]. A random v4 UUID
/// collides with astronomically small probability; exhausting this means `Rand` is broken.
pub const CREATE_ATTEMPTS_MAX: u32 = 4;

/// Counter of storage calls by `op` and `result` (see the module's "Metrics").
pub const STORAGE_OPS: &str = "sandtable_storage_ops_total";

/// iFun's `CrossServerStorage`: see the [module docs](self). Cheap to clone (reference counts).
#[derive(Clone)]
pub struct CrossServerStorage {
    inner: Arc<Inner>,
}

struct Inner {
    kv: Arc<dyn Kv>,
    rand: Arc<dyn Rand>,
    cfg: StorageConfig,
    /// No-op unless [`CrossServerStorage::with_metrics`].
    ops: CounterVec,
}

/// The `result` label of a storage call's outcome.
fn result_kind<T>(r: &Result<T, StorageError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(StorageError::NotFound) => "not_found",
        Err(StorageError::AlreadyExists) => "already_exists",
        Err(StorageError::VersionMismatch { .. }) => "version_mismatch",
        Err(StorageError::Contended { .. }) => "contended",
        Err(_) => "error",
    }
}

impl std::fmt::Debug for CrossServerStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossServerStorage").field("cfg", &self.inner.cfg).finish_non_exhaustive()
    }
}

impl CrossServerStorage {
    /// A storage client over `kv` (the Redis server tagged `cfg.redis_tag`), drawing keys from
    /// `rand`. A disabled `cfg` is accepted (every call then answers [`StorageError::Disabled`]);
    /// an empty `key_prefix` or a `max_value_bytes` outside `1..=VALUE_BYTES_LIMIT` is
    /// [`StorageError::InvalidConfig`].
    pub fn new(kv: Arc<dyn Kv>, rand: Arc<dyn Rand>, cfg: StorageConfig) -> Result<Self, StorageError> {
        if cfg.key_prefix.is_empty() {
            return Err(StorageError::InvalidConfig(
                "key_prefix must not be empty (storage keys would mix with every other key)".to_owned(),
            ));
        }
        if !(1..=VALUE_BYTES_LIMIT).contains(&cfg.max_value_bytes) {
            return Err(StorageError::InvalidConfig(format!(
                "max_value_bytes {} is outside 1..={VALUE_BYTES_LIMIT}",
                cfg.max_value_bytes
            )));
        }
        Ok(CrossServerStorage { inner: Arc::new(Inner { kv, rand, cfg, ops: CounterVec::default() }) })
    }

    /// This storage, counting its calls in `metrics` (see the module's "Metrics"). Clones
    /// made before this call keep not counting.
    pub fn with_metrics(self, metrics: &Metrics) -> Self {
        let ops = metrics.counter_vec(
            STORAGE_OPS,
            "Cross-server storage calls, by operation and result.",
            &["op", "result"],
        );
        let i = &self.inner;
        CrossServerStorage {
            inner: Arc::new(Inner { kv: i.kv.clone(), rand: i.rand.clone(), cfg: i.cfg.clone(), ops }),
        }
    }

    /// Counts `r` under `op` and passes it on.
    fn counted<T>(&self, op: &str, r: Result<T, StorageError>) -> Result<T, StorageError> {
        self.inner.ops.with(&[op, result_kind(&r)]).inc();
        r
    }

    /// [`CrossServerStorage::new`] with the node's `Kv` and `Rand` ports.
    pub fn from_env(env: &Env, cfg: StorageConfig) -> Result<Self, StorageError> {
        Self::new(env.kv.clone(), env.rand.clone(), cfg)
    }

    /// The configuration in use.
    pub fn config(&self) -> &StorageConfig {
        &self.inner.cfg
    }

    /// The Redis key holding `key`'s value.
    pub fn redis_key(&self, key: &Key) -> String {
        format!("{}{}", self.inner.cfg.key_prefix, key)
    }

    /// Stores `value` under a fresh random key that expires after `ttl` (iFun's `Create`).
    /// The key is drawn from the `Rand` port and written with `SET NX PX`; on the
    /// astronomically unlikely collision another key is drawn. The value starts at version 1.
    pub async fn create(&self, value: &Value, ttl: Duration) -> Result<Key, StorageError> {
        let r = self.create_inner(value, ttl).await;
        self.counted("create", r)
    }

    async fn create_inner(&self, value: &Value, ttl: Duration) -> Result<Key, StorageError> {
        self.check_enabled()?;
        check_ttl(ttl)?;
        let stored = encode_new(self.value_json(value)?);
        for _ in 0..CREATE_ATTEMPTS_MAX {
            let key = Key::random(&*self.inner.rand);
            if self.set_absent(&key, stored.clone(), ttl).await? {
                return Ok(key);
            }
            tracing::warn!(%key, "cross-server storage: generated key already in use; drawing another");
        }
        Err(StorageError::AlreadyExists)
    }

    /// Stores `value` under `key`, which must not hold a value, expiring after `ttl`.
    /// [`StorageError::AlreadyExists`] if it does (nothing is changed). Version 1.
    pub async fn create_with_key(&self, key: &Key, value: &Value, ttl: Duration) -> Result<(), StorageError> {
        let r = self.create_with_key_inner(key, value, ttl).await;
        self.counted("create_with_key", r)
    }

    async fn create_with_key_inner(
        &self,
        key: &Key,
        value: &Value,
        ttl: Duration,
    ) -> Result<(), StorageError> {
        self.check_enabled()?;
        check_ttl(ttl)?;
        let stored = encode_new(self.value_json(value)?);
        if self.set_absent(key, stored, ttl).await? {
            Ok(())
        } else {
            Err(StorageError::AlreadyExists)
        }
    }

    /// The value under `key` (iFun's `Read`); [`StorageError::NotFound`] if absent or expired.
    pub async fn read(&self, key: &Key) -> Result<Value, StorageError> {
        let r = self.read_inner(key).await.map(|(v, _)| v);
        self.counted("read", r)
    }

    /// The value under `key` and its version, for a later
    /// [`compare_and_write`](Self::compare_and_write).
    pub async fn read_versioned(&self, key: &Key) -> Result<(Value, u64), StorageError> {
        let r = self.read_inner(key).await;
        self.counted("read", r)
    }

    async fn read_inner(&self, key: &Key) -> Result<(Value, u64), StorageError> {
        self.check_enabled()?;
        let (_, e) = self.get(&self.redis_key(key)).await?;
        Ok((e.d, e.v))
    }

    /// Replaces the value under `key`, keeping its remaining TTL (iFun's `Write`).
    /// Last writer wins among concurrent writers (see the module's "Concurrency"); the version
    /// goes up by one. [`StorageError::NotFound`] if there is no value (it is not created).
    pub async fn write(&self, key: &Key, value: &Value) -> Result<(), StorageError> {
        let r = async {
            self.check_enabled()?;
            let d = self.value_json(value)?;
            self.update(key, |e| encode_next(e, &d)).await.map(|_| ())
        };
        let r = r.await;
        self.counted("write", r)
    }

    /// Replaces the value under `key` only if it is still at `expected_version`, keeping its
    /// remaining TTL; returns the new version (`expected_version + 1`).
    /// [`StorageError::VersionMismatch`] carries the current version otherwise.
    pub async fn compare_and_write(
        &self,
        key: &Key,
        expected_version: u64,
        value: &Value,
    ) -> Result<u64, StorageError> {
        let r = async {
            self.check_enabled()?;
            let d = self.value_json(value)?;
            self.update(key, |e| {
                if e.v != expected_version {
                    return Err(StorageError::VersionMismatch { current: e.v });
                }
                encode_next(e, &d)
            })
            .await
        };
        let r = r.await;
        self.counted("compare_and_write", r)
    }

    /// Removes the value under `key` (iFun's `Delete`); [`StorageError::NotFound`] if there
    /// is none. Whatever the key holds is removed, even a corrupt value.
    pub async fn delete(&self, key: &Key) -> Result<(), StorageError> {
        let r = async {
            self.check_enabled()?;
            if self.inner.kv.del(&self.redis_key(key)).await? {
                Ok(())
            } else {
                Err(StorageError::NotFound)
            }
        };
        let r = r.await;
        self.counted("delete", r)
    }

    /// Makes `key` expire `ttl` from now (iFun's `Refresh`), shortening or extending its life;
    /// [`StorageError::NotFound`] if there is no value. The value and version are unchanged
    /// (the envelope's refresh count goes up: see the module's "Expiry").
    pub async fn refresh(&self, key: &Key, ttl: Duration) -> Result<(), StorageError> {
        let r = self.refresh_inner(key, ttl).await;
        self.counted("refresh", r)
    }

    async fn refresh_inner(&self, key: &Key, ttl: Duration) -> Result<(), StorageError> {
        self.check_enabled()?;
        check_ttl(ttl)?;
        let name = self.redis_key(key);
        for attempt in 1..=UPDATE_ATTEMPTS_MAX {
            let (current, e) = self.get(&name).await?;
            let d = serde_json::to_vec(&e.d).map_err(|err| StorageError::Corrupt(err.to_string()))?;
            let next = envelope::encode(e.v, e.r.wrapping_add(1), &d);
            if self.inner.kv.compare_and_set(&name, Some(current), Some(next), Some(ttl)).await? {
                return Ok(());
            }
            tracing::debug!(%key, attempt, "cross-server storage: refresh lost a race; retrying");
        }
        Err(StorageError::Contended { attempts: UPDATE_ATTEMPTS_MAX })
    }

    /// Atomically reads and removes the value under `key` (`GETDEL`): of all concurrent
    /// callers exactly one gets the value, the others [`StorageError::NotFound`]. For one-shot
    /// authentication keys. A corrupt value is removed too, then reported as
    /// [`StorageError::Corrupt`].
    pub async fn take(&self, key: &Key) -> Result<Value, StorageError> {
        let r = async {
            self.check_enabled()?;
            match self.inner.kv.take(&self.redis_key(key)).await? {
                None => Err(StorageError::NotFound),
                Some(b) => Ok(envelope::decode(&b).map_err(StorageError::Corrupt)?.d),
            }
        };
        let r = r.await;
        self.counted("take", r)
    }

    fn check_enabled(&self) -> Result<(), StorageError> {
        if self.inner.cfg.enabled {
            Ok(())
        } else {
            Err(StorageError::Disabled)
        }
    }

    /// The value's compact JSON text, refused if over the size limit.
    fn value_json(&self, value: &Value) -> Result<Vec<u8>, StorageError> {
        // Serialising a `Value` cannot fail (its map keys are strings, its numbers finite).
        let d = serde_json::to_vec(value).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let max = self.inner.cfg.max_value_bytes;
        if d.len() > max {
            return Err(StorageError::TooLarge { len: d.len(), max });
        }
        Ok(d)
    }

    async fn set_absent(&self, key: &Key, stored: Bytes, ttl: Duration) -> Result<bool, StorageError> {
        let opts = SetOptions { condition: SetCondition::IfAbsent, px: Some(ttl), keep_ttl: false };
        Ok(self.inner.kv.set(&self.redis_key(key), stored, opts).await?)
    }

    /// `GET` and decode; `NotFound` if absent.
    async fn get(&self, name: &str) -> Result<(Bytes, envelope::Envelope), StorageError> {
        let Some(b) = self.inner.kv.get(name).await? else { return Err(StorageError::NotFound) };
        let e = envelope::decode(&b).map_err(StorageError::Corrupt)?;
        Ok((b, e))
    }

    /// The optimistic update loop: read the envelope, let `next` compute the new version and
    /// bytes (or fail), read the remaining TTL, compare-and-set with that TTL. Returns the
    /// version now stored.
    async fn update(
        &self,
        key: &Key,
        next: impl Fn(&envelope::Envelope) -> Result<(u64, Bytes), StorageError>,
    ) -> Result<u64, StorageError> {
        let name = self.redis_key(key);
        for attempt in 1..=UPDATE_ATTEMPTS_MAX {
            let (current, e) = self.get(&name).await?;
            let (version, new) = next(&e)?;
            debug_assert!(version > e.v);
            // PTTL after GET: if the TTL changes after this read, so do the bytes (a refresh
            // bumps `r`), and the compare-and-set below fails.
            let px = match self.inner.kv.pttl(&name).await? {
                Ttl::NoKey => continue, // expired or removed since the GET; the next GET says so
                Ttl::NoExpiry => None,  // not written by this module, but keep it that way
                Ttl::Remaining(left) => Some(left.max(TTL_MIN)),
            };
            if self.inner.kv.compare_and_set(&name, Some(current), Some(new), px).await? {
                return Ok(version);
            }
            tracing::debug!(%key, attempt, "cross-server storage: update lost a race; retrying");
        }
        Err(StorageError::Contended { attempts: UPDATE_ATTEMPTS_MAX })
    }
}

fn check_ttl(ttl: Duration) -> Result<(), StorageError> {
    if (TTL_MIN..=TTL_MAX).contains(&ttl) {
        Ok(())
    } else {
        Err(StorageError::InvalidTtl { ttl })
    }
}

/// Version 1 of a value.
fn encode_new(d: Vec<u8>) -> Bytes {
    envelope::encode(1, 0, &d)
}

/// The envelope after `e` with value `d`: version + 1, same refresh count.
fn encode_next(e: &envelope::Envelope, d: &[u8]) -> Result<(u64, Bytes), StorageError> {
    let v = e.v.checked_add(1).ok_or_else(|| StorageError::Corrupt("version at u64::MAX".to_owned()))?;
    Ok((v, envelope::encode(v, e.r, d)))
}

#[cfg(test)]
mod tests;
