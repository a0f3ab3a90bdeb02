//! Packs this server stored, kept in memory until they execute, so a worker need not read its
//! user's pack rows back from SQL (two round trips: the rows and the shard guard). I/O-free.
//!
//! Sound because a stored pack never changes: its row is created once (`Expect::Absent`) at
//! an id that is never reused, and only its outcome is written later, in the transaction that
//! executes it. A pack enters the cache only after the commit that stored it returned; a miss
//! (another server stored it, the cache was full, this server restarted) falls back to reading
//! the rows. What executes a pack, and only once, is still the queue record's versioned,
//! fenced `done` in the executing transaction: the cache holds contents, never progress.
//!
//! The cached row's version is assumed to be [`PACK_ROW_VERSION_STORED`] (a row created by one
//! `Put` on an absent key). Should it be another (a key that held a fence placeholder), the
//! executing transaction's versioned write of the row is refused, nothing of it applies, the
//! user's entries are forgotten and the next turn reads the rows.
//!
//! Inputs: [`PackCache::stored`] (a pack's storing commit returned), [`PackCache::run`] (a
//! worker's turn asks for the next packs), [`PackCache::executed`] (a turn's commit returned),
//! [`PackCache::forget`] (a turn failed).

use std::collections::BTreeMap;

use super::stored::PackRow;

/// Most bytes of encoded pack rows one server keeps (beyond it the smallest `(user, pack)`
/// keys go first: a miss only costs a read).
pub const PACK_CACHE_BYTES_MAX: usize = 32 << 20;
/// The version of a pack row created by the one `Put` that stored it.
pub const PACK_ROW_VERSION_STORED: u64 = 1;

#[derive(Debug, Default)]
pub struct PackCache {
    /// `(user, pack_id)` -> the stored row and its encoded size.
    packs: BTreeMap<(String, u64), (PackRow, usize)>,
    bytes: usize,
}

impl PackCache {
    /// `row` (not executed) was stored for `user` in a committed transaction; `bytes` is its
    /// encoded size. Makes room by dropping the smallest keys if need be.
    pub fn stored(&mut self, user: &str, row: PackRow, bytes: usize) {
        if bytes > PACK_CACHE_BYTES_MAX || row.executed.is_some() {
            return;
        }
        while self.bytes + bytes > PACK_CACHE_BYTES_MAX {
            let Some((_, (_, b))) = self.packs.pop_first() else { break };
            self.bytes -= b;
        }
        if let Some((_, old)) = self.packs.insert((user.to_string(), row.pack_id), (row, bytes)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
    }

    /// `user`'s packs `first`, `first + 1`, ... as far as they are cached, at most `max`.
    pub fn run(&self, user: &str, first: u64, max: usize) -> Vec<PackRow> {
        let mut out = Vec::new();
        for id in first..first.saturating_add(max as u64) {
            match self.packs.get(&(user.to_string(), id)) {
                Some((row, _)) => out.push(row.clone()),
                None => break,
            }
        }
        out
    }

    /// `user`'s packs up to `done` executed: they are never needed again.
    pub fn executed(&mut self, user: &str, done: u64) {
        let gone: Vec<(String, u64)> = self
            .packs
            .range((user.to_string(), 0)..=(user.to_string(), done))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            if let Some((_, b)) = self.packs.remove(&k) {
                self.bytes -= b;
            }
        }
    }

    /// Drops every cached pack of `user` (a turn failed: its next turn reads the rows).
    pub fn forget(&mut self, user: &str) {
        self.executed(user, u64::MAX);
    }

    /// Packs cached now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.packs.len()
    }

    /// True if no pack is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.packs.is_empty()
    }

    /// Encoded bytes cached now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: u64) -> PackRow {
        PackRow { pack_id: id, basis: 0, commands: Vec::new(), executed: None }
    }

    #[test]
    fn a_run_is_the_consecutive_cached_packs_from_the_first_asked() {
        let mut c = PackCache::default();
        for id in [1, 2, 3, 5] {
            c.stored("u", row(id), 10);
        }
        c.stored("v", row(4), 10);
        let ids = |r: Vec<PackRow>| r.into_iter().map(|p| p.pack_id).collect::<Vec<_>>();
        assert_eq!(ids(c.run("u", 1, 8)), [1, 2, 3], "stops at the first pack not cached");
        assert_eq!(ids(c.run("u", 2, 1)), [2], "at most max");
        assert!(c.run("u", 4, 8).is_empty());
    }

    #[test]
    fn executed_packs_and_forgotten_users_leave_the_cache() {
        let mut c = PackCache::default();
        for id in 1..=4 {
            c.stored("u", row(id), 10);
        }
        c.stored("v", row(1), 10);
        c.executed("u", 2);
        assert_eq!((c.len(), c.bytes()), (3, 30));
        assert!(c.run("u", 1, 8).is_empty());
        c.forget("u");
        assert_eq!((c.len(), c.bytes()), (1, 10));
        assert_eq!(c.run("v", 1, 8).len(), 1);
    }

    #[test]
    fn the_cache_stays_within_its_byte_bound() {
        let mut c = PackCache::default();
        let each = PACK_CACHE_BYTES_MAX / 4;
        for id in 1..=6 {
            c.stored("u", row(id), each);
        }
        assert_eq!((c.len(), c.bytes()), (4, PACK_CACHE_BYTES_MAX));
        assert_eq!(c.run("u", 3, 8).len(), 4, "the smallest keys went first");
        c.stored("u", row(9), PACK_CACHE_BYTES_MAX + 1);
        assert_eq!(c.len(), 4, "a row over the whole bound is not kept");
    }

    #[test]
    fn an_executed_row_is_never_cached() {
        let mut c = PackCache::default();
        let mut r = row(1);
        r.executed = Some(super::super::stored::Executed {
            outcome: super::super::queue::Outcome::Applied,
            epoch: 1,
            error: None,
        });
        c.stored("u", r, 10);
        assert!(c.is_empty());
    }
}
