//! The keyspace of the simulated Redis node: Redis 7 semantics for the commands of the `Kv`
//! port, as pure functions of (state, command, the node's wall-clock reading). No I/O.
//!
//! Fault model. The service is one Redis primary with no replicas: every command is applied
//! atomically, one at a time, in arrival order, so the service is linearizable. Faults come
//! from outside this module: the node's wall clock (the caller passes `now_ms` from the Redis
//! node's own `Clock` port) may be skewed or jump, which shortens or stretches TTLs exactly as
//! on a real host; a crash loses every key unless the server was configured `persistent`
//! (then the store models an fsync-always AOF: every acknowledged write survives); network
//! partitions and connection loss are the server's and client's business. The only fault
//! *inside* this module is a planted bug, enabled by [`Keyspace::set_track_previous`]: the
//! keyspace remembers, per string key, its value before the latest write, and a `GET` whose
//! `stale` draw says yes answers that older value (as a lagging replica read would).
//!
//! It is the one Redis model of the project: the simulator's Redis node (`sim::redis`)
//! serves it over the simulated network, and the in-memory [`FakeKv`](super::FakeKv) of unit
//! tests calls it directly. The commands and replies are plain serde data, so the simulator
//! sends them as they are.
//!
//! Size: under 500 lines of code, the rest are its tests.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::env::{SetCondition, SetOptions, Ttl};

/// One Redis command, as the `Kv` port names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: Bytes,
        opts: SetOptions,
    },
    Del {
        key: String,
    },
    /// `PEXPIRE key ms`.
    PExpire {
        key: String,
        ttl_ms: u64,
    },
    PTtl {
        key: String,
    },
    /// The atomic compare-and-set (a Lua script on real Redis).
    CompareAndSet {
        key: String,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
    },
    /// `GETDEL`.
    Take {
        key: String,
    },
    RPush {
        key: String,
        values: Vec<Bytes>,
    },
    LPop {
        key: String,
    },
    LRange {
        key: String,
        start: i64,
        stop: i64,
    },
    LLen {
        key: String,
    },
}

impl Command {
    /// The Redis name of the command (for logs).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "GET",
            Command::Set { .. } => "SET",
            Command::Del { .. } => "DEL",
            Command::PExpire { .. } => "PEXPIRE",
            Command::PTtl { .. } => "PTTL",
            Command::CompareAndSet { .. } => "CAS",
            Command::Take { .. } => "GETDEL",
            Command::RPush { .. } => "RPUSH",
            Command::LPop { .. } => "LPOP",
            Command::LRange { .. } => "LRANGE",
            Command::LLen { .. } => "LLEN",
        }
    }

    /// The key the command touches.
    pub fn key(&self) -> &str {
        match self {
            Command::Get { key }
            | Command::Set { key, .. }
            | Command::Del { key }
            | Command::PExpire { key, .. }
            | Command::PTtl { key }
            | Command::CompareAndSet { key, .. }
            | Command::Take { key }
            | Command::RPush { key, .. }
            | Command::LPop { key }
            | Command::LRange { key, .. }
            | Command::LLen { key } => key,
        }
    }
}

/// A successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// A bulk string or nil (`GET`, `GETDEL`, `LPOP`).
    Value(Option<Bytes>),
    /// A yes/no answer (`SET`, `DEL`, `PEXPIRE`, CAS).
    Bool(bool),
    /// An integer (`RPUSH`, `LLEN`).
    Int(u64),
    /// `PTTL`.
    Ttl(Ttl),
    /// `LRANGE`.
    List(Vec<Bytes>),
}

/// A command the server refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// Redis's own error text (e.g. `ERR invalid expire time in 'set' command`).
    #[error("{0}")]
    Server(String),
}

/// What a key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(Bytes),
    List(VecDeque<Bytes>),
}

/// One key's value and its expiry (milliseconds since the epoch on the Redis node's clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    pub expire_at_ms: Option<i64>,
}

impl Entry {
    fn is_expired(&self, now_ms: i64) -> bool {
        self.expire_at_ms.is_some_and(|at| at <= now_ms)
    }
}

/// The whole dataset of one Redis node.
#[derive(Debug, Clone, Default)]
pub struct Keyspace {
    keys: BTreeMap<String, Entry>,
    /// Planted bug: per string key, its value before its latest write (`None` = absent then).
    /// Only maintained while `track_previous` is on.
    previous: BTreeMap<String, Option<Bytes>>,
    track_previous: bool,
}

fn wrong_type() -> CommandError {
    CommandError::WrongType
}

fn invalid_expire(cmd: &str) -> CommandError {
    CommandError::Server(format!("ERR invalid expire time in '{cmd}' command"))
}

/// Milliseconds of a `PX` option; Redis takes whole milliseconds and refuses less than 1.
fn px_millis(px: Duration, cmd: &str) -> Result<i64, CommandError> {
    match i64::try_from(px.as_millis()) {
        Ok(ms) if ms >= 1 => Ok(ms),
        _ => Err(invalid_expire(cmd)),
    }
}

fn expire_at(now_ms: i64, ttl_ms: i64, cmd: &str) -> Result<i64, CommandError> {
    now_ms.checked_add(ttl_ms).ok_or_else(|| invalid_expire(cmd))
}

/// `LRANGE`'s index rules: inclusive, negative counts from the end, out of range clamps.
pub fn lrange_bounds(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = len as i64;
    let mut start = if start < 0 { start.saturating_add(len) } else { start };
    let mut stop = if stop < 0 { stop.saturating_add(len) } else { stop };
    if start < 0 {
        start = 0;
    }
    if start > stop || start >= len {
        return None;
    }
    if stop >= len {
        stop = len - 1;
    }
    Some((start as usize, stop as usize))
}

impl Keyspace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Turns the planted stale-read bug's bookkeeping on or off (off forgets what it knew).
    pub fn set_track_previous(&mut self, on: bool) {
        self.track_previous = on;
        if !on {
            self.previous.clear();
        }
    }

    /// Number of keys, expired-but-not-yet-swept ones included.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Forgets every key (a crash without persistence).
    pub fn clear(&mut self) {
        self.keys.clear();
        self.previous.clear();
    }

    /// Active expiry: removes every key expired at `now_ms`, in key order. Returns how many.
    pub fn sweep(&mut self, now_ms: i64) -> usize {
        let before = self.keys.len();
        self.keys.retain(|_, e| !e.is_expired(now_ms));
        before - self.keys.len()
    }

    /// Lazy expiry, then the live entry (if any).
    fn live(&mut self, key: &str, now_ms: i64) -> Option<&mut Entry> {
        if self.keys.get(key).is_some_and(|e| e.is_expired(now_ms)) {
            self.keys.remove(key);
        }
        self.keys.get_mut(key)
    }

    fn current_str(&mut self, key: &str, now_ms: i64) -> Result<Option<Bytes>, CommandError> {
        match self.live(key, now_ms) {
            None => Ok(None),
            Some(Entry { value: Value::Str(v), .. }) => Ok(Some(v.clone())),
            Some(Entry { value: Value::List(_), .. }) => Err(wrong_type()),
        }
    }

    /// Planted bug bookkeeping: `key` is about to be written; remember what it held.
    fn remember(&mut self, key: &str, now_ms: i64) {
        if !self.track_previous {
            return;
        }
        let old = match self.live(key, now_ms) {
            Some(Entry { value: Value::Str(v), .. }) => Some(v.clone()),
            _ => None,
        };
        self.previous.insert(key.to_string(), old);
    }

    /// Applies one command atomically at the node's wall-clock time `now_ms`.
    ///
    /// `stale` is asked only by a `GET` while the planted bug is enabled and the key has a
    /// remembered older value; if it says yes the `GET` answers that older value.
    pub fn execute(
        &mut self,
        command: &Command,
        now_ms: i64,
        stale: &mut dyn FnMut() -> bool,
    ) -> Result<Reply, CommandError> {
        match command {
            Command::Get { key } => self.get(key, now_ms, stale).map(Reply::Value),
            Command::Set { key, value, opts } => self.set(key, value.clone(), *opts, now_ms).map(Reply::Bool),
            Command::Del { key } => Ok(Reply::Bool(self.del(key, now_ms))),
            Command::PExpire { key, ttl_ms } => self.pexpire(key, *ttl_ms, now_ms).map(Reply::Bool),
            Command::PTtl { key } => Ok(Reply::Ttl(self.pttl(key, now_ms))),
            Command::CompareAndSet { key, expected, new, px } => {
                self.compare_and_set(key, expected.as_ref(), new.clone(), *px, now_ms).map(Reply::Bool)
            }
            Command::Take { key } => self.take(key, now_ms).map(Reply::Value),
            Command::RPush { key, values } => self.rpush(key, values, now_ms).map(Reply::Int),
            Command::LPop { key } => self.lpop(key, now_ms).map(Reply::Value),
            Command::LRange { key, start, stop } => self.lrange(key, *start, *stop, now_ms).map(Reply::List),
            Command::LLen { key } => self.llen(key, now_ms).map(Reply::Int),
        }
    }

    /// `GET`.
    pub fn get(
        &mut self,
        key: &str,
        now_ms: i64,
        stale: &mut dyn FnMut() -> bool,
    ) -> Result<Option<Bytes>, CommandError> {
        let current = self.current_str(key, now_ms)?;
        if self.track_previous {
            if let Some(old) = self.previous.get(key) {
                if stale() {
                    return Ok(old.clone());
                }
            }
        }
        Ok(current)
    }

    /// `SET key value [NX|XX] [PX ms] [KEEPTTL]` (SET overwrites a key of any type).
    pub fn set(
        &mut self,
        key: &str,
        value: Bytes,
        opts: SetOptions,
        now_ms: i64,
    ) -> Result<bool, CommandError> {
        let px_ms = opts.px.map(|px| px_millis(px, "set")).transpose()?;
        let new_expiry = px_ms.map(|ms| expire_at(now_ms, ms, "set")).transpose()?;
        let existing = self.live(key, now_ms).map(|e| e.expire_at_ms);
        let allowed = match opts.condition {
            SetCondition::Always => true,
            SetCondition::IfAbsent => existing.is_none(),
            SetCondition::IfPresent => existing.is_some(),
        };
        if !allowed {
            return Ok(false);
        }
        let expire_at_ms = match (new_expiry, opts.keep_ttl) {
            (Some(at), _) => Some(at),
            (None, true) => existing.flatten(),
            (None, false) => None,
        };
        self.remember(key, now_ms);
        self.keys.insert(key.to_string(), Entry { value: Value::Str(value), expire_at_ms });
        Ok(true)
    }

    /// `DEL`: works on any type.
    pub fn del(&mut self, key: &str, now_ms: i64) -> bool {
        if self.live(key, now_ms).is_none() {
            return false;
        }
        self.remember(key, now_ms);
        self.keys.remove(key);
        true
    }

    /// `PEXPIRE`: works on any type; a TTL of 0 deletes the key (as Redis does for non-positive).
    pub fn pexpire(&mut self, key: &str, ttl_ms: u64, now_ms: i64) -> Result<bool, CommandError> {
        let ttl = i64::try_from(ttl_ms).map_err(|_| invalid_expire("pexpire"))?;
        let at = expire_at(now_ms, ttl, "pexpire")?;
        if self.live(key, now_ms).is_none() {
            return Ok(false);
        }
        if at <= now_ms {
            self.remember(key, now_ms);
            self.keys.remove(key);
        } else if let Some(e) = self.keys.get_mut(key) {
            e.expire_at_ms = Some(at);
        }
        Ok(true)
    }

    /// `PTTL`: works on any type.
    pub fn pttl(&mut self, key: &str, now_ms: i64) -> Ttl {
        match self.live(key, now_ms) {
            None => Ttl::NoKey,
            Some(Entry { expire_at_ms: None, .. }) => Ttl::NoExpiry,
            Some(Entry { expire_at_ms: Some(at), .. }) => {
                Ttl::Remaining(Duration::from_millis(at.saturating_sub(now_ms).max(0) as u64))
            }
        }
    }

    /// Atomic compare-and-set, as the Lua script on real Redis does it: `GET` (so a list key
    /// is `WRONGTYPE`), compare, then `SET key new [PX]` or `DEL`. A bad `px` is refused before
    /// anything is compared or changed.
    pub fn compare_and_set(
        &mut self,
        key: &str,
        expected: Option<&Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
        now_ms: i64,
    ) -> Result<bool, CommandError> {
        let px_ms = px.map(|px| px_millis(px, "set")).transpose()?;
        let new_expiry = px_ms.map(|ms| expire_at(now_ms, ms, "set")).transpose()?;
        let current = self.current_str(key, now_ms)?;
        if current.as_ref() != expected {
            return Ok(false);
        }
        self.remember(key, now_ms);
        match new {
            Some(v) => {
                self.keys.insert(key.to_string(), Entry { value: Value::Str(v), expire_at_ms: new_expiry });
            }
            None => {
                self.keys.remove(key);
            }
        }
        Ok(true)
    }

    /// `GETDEL`.
    pub fn take(&mut self, key: &str, now_ms: i64) -> Result<Option<Bytes>, CommandError> {
        let current = self.current_str(key, now_ms)?;
        if current.is_some() {
            self.remember(key, now_ms);
            self.keys.remove(key);
        }
        Ok(current)
    }

    fn list_mut(&mut self, key: &str, now_ms: i64) -> Result<Option<&mut VecDeque<Bytes>>, CommandError> {
        match self.live(key, now_ms) {
            None => Ok(None),
            Some(Entry { value: Value::List(l), .. }) => Ok(Some(l)),
            Some(Entry { value: Value::Str(_), .. }) => Err(wrong_type()),
        }
    }

    /// `RPUSH`: the new length. A new list has no TTL; an existing one keeps its TTL.
    pub fn rpush(&mut self, key: &str, values: &[Bytes], now_ms: i64) -> Result<u64, CommandError> {
        if values.is_empty() {
            return Err(CommandError::Server("ERR wrong number of arguments for 'rpush' command".into()));
        }
        if let Some(list) = self.list_mut(key, now_ms)? {
            list.extend(values.iter().cloned());
            return Ok(list.len() as u64);
        }
        // The key becomes a list: forget any string history it had.
        self.previous.remove(key);
        let list: VecDeque<Bytes> = values.iter().cloned().collect();
        let len = list.len() as u64;
        self.keys.insert(key.to_string(), Entry { value: Value::List(list), expire_at_ms: None });
        Ok(len)
    }

    /// `LPOP`: an emptied list disappears.
    pub fn lpop(&mut self, key: &str, now_ms: i64) -> Result<Option<Bytes>, CommandError> {
        let Some(list) = self.list_mut(key, now_ms)? else {
            return Ok(None);
        };
        let head = list.pop_front();
        if list.is_empty() {
            self.keys.remove(key);
        }
        Ok(head)
    }

    /// `LRANGE` with Redis's index rules ([`lrange_bounds`]).
    pub fn lrange(
        &mut self,
        key: &str,
        start: i64,
        stop: i64,
        now_ms: i64,
    ) -> Result<Vec<Bytes>, CommandError> {
        let Some(list) = self.list_mut(key, now_ms)? else {
            return Ok(Vec::new());
        };
        Ok(match lrange_bounds(list.len(), start, stop) {
            None => Vec::new(),
            Some((a, b)) => list.range(a..=b).cloned().collect(),
        })
    }

    /// `LLEN`: 0 for an absent key.
    pub fn llen(&mut self, key: &str, now_ms: i64) -> Result<u64, CommandError> {
        Ok(self.list_mut(key, now_ms)?.map_or(0, |l| l.len() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    fn never() -> impl FnMut() -> bool {
        || panic!("stale draw must not happen")
    }

    fn opts(condition: SetCondition, px_ms: Option<u64>, keep_ttl: bool) -> SetOptions {
        SetOptions { condition, px: px_ms.map(Duration::from_millis), keep_ttl }
    }

    const T0: i64 = 1_000_000;

    #[test]
    fn get_set_del() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.get("a", T0, &mut never()), Ok(None));
        assert_eq!(ks.set("a", b("1"), SetOptions::default(), T0), Ok(true));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(Some(b("1"))));
        assert_eq!(ks.set("a", b("2"), SetOptions::default(), T0), Ok(true));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(Some(b("2"))));
        assert!(ks.del("a", T0));
        assert!(!ks.del("a", T0));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(None));
    }

    #[test]
    fn set_nx_xx() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.set("a", b("x"), opts(SetCondition::IfPresent, None, false), T0), Ok(false));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(None));
        assert_eq!(ks.set("a", b("1"), opts(SetCondition::IfAbsent, None, false), T0), Ok(true));
        assert_eq!(ks.set("a", b("2"), opts(SetCondition::IfAbsent, None, false), T0), Ok(false));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(Some(b("1"))));
        assert_eq!(ks.set("a", b("3"), opts(SetCondition::IfPresent, None, false), T0), Ok(true));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(Some(b("3"))));
        // NX succeeds again once the key has expired.
        assert_eq!(ks.set("e", b("1"), opts(SetCondition::Always, Some(10), false), T0), Ok(true));
        assert_eq!(ks.set("e", b("2"), opts(SetCondition::IfAbsent, None, false), T0 + 9), Ok(false));
        assert_eq!(ks.set("e", b("2"), opts(SetCondition::IfAbsent, None, false), T0 + 10), Ok(true));
    }

    #[test]
    fn px_keepttl_and_plain_set_clears_ttl() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.set("a", b("1"), opts(SetCondition::Always, Some(100), false), T0), Ok(true));
        assert_eq!(ks.pttl("a", T0 + 40), Ttl::Remaining(Duration::from_millis(60)));
        // KEEPTTL keeps it.
        assert_eq!(ks.set("a", b("2"), opts(SetCondition::Always, None, true), T0 + 40), Ok(true));
        assert_eq!(ks.pttl("a", T0 + 50), Ttl::Remaining(Duration::from_millis(50)));
        // PX wins over KEEPTTL.
        assert_eq!(ks.set("a", b("3"), opts(SetCondition::Always, Some(500), true), T0 + 50), Ok(true));
        assert_eq!(ks.pttl("a", T0 + 50), Ttl::Remaining(Duration::from_millis(500)));
        // Plain SET clears it.
        assert_eq!(ks.set("a", b("4"), SetOptions::default(), T0 + 60), Ok(true));
        assert_eq!(ks.pttl("a", T0 + 60), Ttl::NoExpiry);
        // KEEPTTL on a new key: no TTL.
        assert_eq!(ks.set("n", b("1"), opts(SetCondition::Always, None, true), T0), Ok(true));
        assert_eq!(ks.pttl("n", T0), Ttl::NoExpiry);
        // Expired exactly at expire_at.
        assert_eq!(ks.set("x", b("1"), opts(SetCondition::Always, Some(5), false), T0), Ok(true));
        assert_eq!(ks.get("x", T0 + 4, &mut never()), Ok(Some(b("1"))));
        assert_eq!(ks.get("x", T0 + 5, &mut never()), Ok(None));
        assert_eq!(ks.pttl("x", T0 + 5), Ttl::NoKey);
    }

    #[test]
    fn px_below_one_ms_is_refused() {
        let mut ks = Keyspace::new();
        let o = SetOptions { px: Some(Duration::from_micros(999)), ..SetOptions::default() };
        assert_eq!(
            ks.set("a", b("1"), o, T0),
            Err(CommandError::Server("ERR invalid expire time in 'set' command".into()))
        );
        let o = SetOptions { px: Some(Duration::ZERO), ..SetOptions::default() };
        assert!(matches!(ks.set("a", b("1"), o, T0), Err(CommandError::Server(_))));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(None));
        assert!(matches!(
            ks.compare_and_set("a", None, Some(b("1")), Some(Duration::ZERO), T0),
            Err(CommandError::Server(_))
        ));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(None));
    }

    #[test]
    fn pexpire_and_pttl() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.pexpire("a", 100, T0), Ok(false));
        assert_eq!(ks.pttl("a", T0), Ttl::NoKey);
        ks.set("a", b("1"), SetOptions::default(), T0).unwrap();
        assert_eq!(ks.pttl("a", T0), Ttl::NoExpiry);
        assert_eq!(ks.pexpire("a", 100, T0), Ok(true));
        assert_eq!(ks.pttl("a", T0 + 1), Ttl::Remaining(Duration::from_millis(99)));
        assert_eq!(ks.get("a", T0 + 100, &mut never()), Ok(None));
        // Zero TTL deletes at once.
        ks.set("b", b("1"), SetOptions::default(), T0).unwrap();
        assert_eq!(ks.pexpire("b", 0, T0), Ok(true));
        assert_eq!(ks.pttl("b", T0), Ttl::NoKey);
        // Works on lists too.
        ks.rpush("l", &[b("x")], T0).unwrap();
        assert_eq!(ks.pexpire("l", 10, T0), Ok(true));
        assert_eq!(ks.pttl("l", T0), Ttl::Remaining(Duration::from_millis(10)));
        assert_eq!(ks.llen("l", T0 + 10), Ok(0));
    }

    #[test]
    fn compare_and_set_cases() {
        let mut ks = Keyspace::new();
        // Expected absent, is absent: create.
        assert_eq!(ks.compare_and_set("a", None, Some(b("1")), None, T0), Ok(true));
        // Expected absent, is present: no change.
        assert_eq!(ks.compare_and_set("a", None, Some(b("2")), None, T0), Ok(false));
        // Wrong expected value.
        assert_eq!(ks.compare_and_set("a", Some(&b("9")), Some(b("2")), None, T0), Ok(false));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(Some(b("1"))));
        // Right value, with TTL.
        assert_eq!(
            ks.compare_and_set("a", Some(&b("1")), Some(b("2")), Some(Duration::from_millis(50)), T0),
            Ok(true)
        );
        assert_eq!(ks.pttl("a", T0), Ttl::Remaining(Duration::from_millis(50)));
        // New without px clears the TTL.
        assert_eq!(ks.compare_and_set("a", Some(&b("2")), Some(b("3")), None, T0), Ok(true));
        assert_eq!(ks.pttl("a", T0), Ttl::NoExpiry);
        // Delete.
        assert_eq!(ks.compare_and_set("a", Some(&b("3")), None, None, T0), Ok(true));
        assert_eq!(ks.get("a", T0, &mut never()), Ok(None));
        // Delete of an absent key expected absent: true, nothing to do.
        assert_eq!(ks.compare_and_set("a", None, None, None, T0), Ok(true));
        // On a list: WRONGTYPE.
        ks.rpush("l", &[b("x")], T0).unwrap();
        assert_eq!(ks.compare_and_set("l", None, Some(b("1")), None, T0), Err(CommandError::WrongType));
    }

    #[test]
    fn take_is_getdel() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.take("t", T0), Ok(None));
        ks.set("t", b("tok"), SetOptions::default(), T0).unwrap();
        assert_eq!(ks.take("t", T0), Ok(Some(b("tok"))));
        assert_eq!(ks.take("t", T0), Ok(None));
        ks.rpush("l", &[b("x")], T0).unwrap();
        assert_eq!(ks.take("l", T0), Err(CommandError::WrongType));
    }

    #[test]
    fn lists() {
        let mut ks = Keyspace::new();
        assert_eq!(ks.llen("l", T0), Ok(0));
        assert_eq!(ks.lpop("l", T0), Ok(None));
        assert_eq!(ks.lrange("l", 0, -1, T0), Ok(vec![]));
        assert_eq!(ks.rpush("l", &[b("a"), b("b")], T0), Ok(2));
        assert_eq!(ks.rpush("l", &[b("c")], T0), Ok(3));
        assert_eq!(ks.lrange("l", 0, -1, T0), Ok(vec![b("a"), b("b"), b("c")]));
        assert_eq!(ks.llen("l", T0), Ok(3));
        assert_eq!(ks.lpop("l", T0), Ok(Some(b("a"))));
        assert_eq!(ks.lpop("l", T0), Ok(Some(b("b"))));
        assert_eq!(ks.lpop("l", T0), Ok(Some(b("c"))));
        // Emptied list disappears.
        assert_eq!(ks.pttl("l", T0), Ttl::NoKey);
        assert!(ks.is_empty());
        assert!(matches!(ks.rpush("l", &[], T0), Err(CommandError::Server(_))));
    }

    #[test]
    fn lrange_index_rules() {
        let mut ks = Keyspace::new();
        let items: Vec<Bytes> = ["0", "1", "2", "3", "4"].iter().map(|s| b(s)).collect();
        ks.rpush("l", &items, T0).unwrap();
        let r = |ks: &mut Keyspace, a, z| -> Vec<String> {
            ks.lrange("l", a, z, T0).unwrap().iter().map(|v| String::from_utf8(v.to_vec()).unwrap()).collect()
        };
        assert_eq!(r(&mut ks, 0, 0), ["0"]);
        assert_eq!(r(&mut ks, 0, -1), ["0", "1", "2", "3", "4"]);
        assert_eq!(r(&mut ks, 1, 3), ["1", "2", "3"]);
        assert_eq!(r(&mut ks, -2, -1), ["3", "4"]);
        assert_eq!(r(&mut ks, -100, 1), ["0", "1"]);
        assert_eq!(r(&mut ks, 3, 100), ["3", "4"]);
        assert_eq!(r(&mut ks, -100, 100), ["0", "1", "2", "3", "4"]);
        assert!(r(&mut ks, 5, 10).is_empty());
        assert!(r(&mut ks, 3, 2).is_empty());
        assert!(r(&mut ks, -1, -2).is_empty());
        assert!(r(&mut ks, 0, -6).is_empty());
        assert!(r(&mut ks, i64::MIN, i64::MIN).is_empty());
        assert_eq!(r(&mut ks, i64::MIN, i64::MAX).len(), 5);
        assert_eq!(lrange_bounds(0, 0, -1), None);
    }

    #[test]
    fn wrong_type_errors() {
        let mut ks = Keyspace::new();
        ks.set("s", b("v"), SetOptions::default(), T0).unwrap();
        ks.rpush("l", &[b("x")], T0).unwrap();
        assert_eq!(ks.get("l", T0, &mut never()), Err(CommandError::WrongType));
        assert_eq!(ks.rpush("s", &[b("x")], T0), Err(CommandError::WrongType));
        assert_eq!(ks.lpop("s", T0), Err(CommandError::WrongType));
        assert_eq!(ks.lrange("s", 0, -1, T0), Err(CommandError::WrongType));
        assert_eq!(ks.llen("s", T0), Err(CommandError::WrongType));
        // SET NX/XX conditions see lists; SET overwrites any type.
        assert_eq!(ks.set("l", b("s"), opts(SetCondition::IfAbsent, None, false), T0), Ok(false));
        assert_eq!(ks.set("l", b("s"), SetOptions::default(), T0), Ok(true));
        assert_eq!(ks.get("l", T0, &mut never()), Ok(Some(b("s"))));
        // DEL, PTTL work on both.
        ks.rpush("l2", &[b("x")], T0).unwrap();
        assert_eq!(ks.pttl("l2", T0), Ttl::NoExpiry);
        assert!(ks.del("l2", T0));
    }

    #[test]
    fn sweep_removes_only_expired_keys() {
        let mut ks = Keyspace::new();
        ks.set("a", b("1"), opts(SetCondition::Always, Some(10), false), T0).unwrap();
        ks.set("b", b("1"), opts(SetCondition::Always, Some(20), false), T0).unwrap();
        ks.set("c", b("1"), SetOptions::default(), T0).unwrap();
        assert_eq!(ks.sweep(T0 + 9), 0);
        assert_eq!(ks.sweep(T0 + 15), 1);
        assert_eq!(ks.len(), 2);
        assert_eq!(ks.sweep(T0 + 1_000_000), 1);
        assert_eq!(ks.len(), 1);
    }

    #[test]
    fn stale_read_bug_only_when_enabled() {
        let mut ks = Keyspace::new();
        ks.set("a", b("1"), SetOptions::default(), T0).unwrap();
        ks.set("a", b("2"), SetOptions::default(), T0).unwrap();
        // Disabled: the draw is never even asked.
        assert_eq!(ks.get("a", T0, &mut never()), Ok(Some(b("2"))));
        ks.set_track_previous(true);
        ks.set("a", b("3"), SetOptions::default(), T0).unwrap();
        assert_eq!(ks.get("a", T0, &mut || true), Ok(Some(b("2"))));
        assert_eq!(ks.get("a", T0, &mut || false), Ok(Some(b("3"))));
        // A fresh key's older state is "absent".
        ks.set("n", b("1"), SetOptions::default(), T0).unwrap();
        assert_eq!(ks.get("n", T0, &mut || true), Ok(None));
        ks.set_track_previous(false);
        assert_eq!(ks.get("a", T0, &mut never()), Ok(Some(b("3"))));
    }

    #[test]
    fn execute_dispatches() {
        let mut ks = Keyspace::new();
        let set = Command::Set { key: "k".into(), value: b("v"), opts: SetOptions::default() };
        assert_eq!(ks.execute(&set, T0, &mut never()), Ok(Reply::Bool(true)));
        assert_eq!(
            ks.execute(&Command::Get { key: "k".into() }, T0, &mut never()),
            Ok(Reply::Value(Some(b("v"))))
        );
        assert_eq!(
            ks.execute(&Command::RPush { key: "k".into(), values: vec![b("x")] }, T0, &mut never()),
            Err(CommandError::WrongType)
        );
        assert_eq!(
            ks.execute(&Command::PExpire { key: "k".into(), ttl_ms: u64::MAX }, T0, &mut never()),
            Err(CommandError::Server("ERR invalid expire time in 'pexpire' command".into()))
        );
    }
}
