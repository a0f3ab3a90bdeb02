//! One async lock per account: logins and logouts of *one* account on a server must not
//! interleave (a logout must not delete the record a concurrent login of the same account
//! just claimed), but different accounts have nothing to order. A single server-wide lock
//! made every login wait for every other one's ZooKeeper round trips (16 concurrent logins
//! ran at a fifth of the raw ZooKeeper rate, with multi-second waits); per-account locks keep
//! the ordering that matters and let the rest run concurrently.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::env::lock;
use futures::lock::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Async locks by key, created on first use and forgotten when nobody holds or awaits them
/// (the map holds only accounts with an operation in flight).
#[derive(Default)]
pub(crate) struct KeyedLocks {
    map: Mutex<BTreeMap<String, Arc<AsyncMutex<()>>>>,
}

/// Holds the lock of one key; releases it (and forgets an unused entry) on drop.
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    key: String,
    lock: Arc<AsyncMutex<()>>,
    guard: Option<OwnedMutexGuard<()>>,
}

impl KeyedLocks {
    /// Waits for `key`'s lock (first come, first served among waiters of that key).
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let lock = {
            let mut map = lock(&self.map);
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.clone().lock_owned().await;
        KeyGuard { locks: self, key: key.to_string(), lock, guard: Some(guard) }
    }

    /// Takes `key`'s lock if nobody holds it; `None` (and nothing waits) otherwise.
    pub(crate) fn try_lock(&self, key: &str) -> Option<KeyGuard<'_>> {
        let lock = {
            let mut map = lock(&self.map);
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = lock.try_lock_owned();
        let guard = KeyGuard { locks: self, key: key.to_string(), lock, guard };
        // A failed attempt drops its guard at once, forgetting an entry it alone created.
        guard.guard.is_some().then_some(guard)
    }

    /// Keys with a lock entry (held or awaited).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.map).len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = lock(&self.locks.map);
        // Clones are taken under the map's lock: 2 = the map's and ours, so nobody else
        // holds or awaits this key.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn one_key_is_exclusive_other_keys_are_not_and_unused_entries_go() {
        let locks = KeyedLocks::default();
        let a = locks.lock("a").now_or_never().expect("free");
        // Another key is free while "a" is held.
        let b = locks.lock("b").now_or_never().expect("other key free");
        // "a" again must wait.
        let mut a2 = Box::pin(locks.lock("a"));
        assert!((&mut a2).now_or_never().is_none(), "second lock of a key waits");
        drop(b);
        assert_eq!(locks.len(), 1, "b's entry is forgotten, a's kept (held and awaited)");
        drop(a);
        let a2 = a2.now_or_never().expect("released to the waiter");
        assert_eq!(locks.len(), 1);
        drop(a2);
        assert_eq!(locks.len(), 0);
    }
}
