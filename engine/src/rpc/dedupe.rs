//! At-most-once execution: the receiver's per-sender window of xids it has seen.
//!
//! For one sender (one caller incarnation) the window holds:
//! - a `floor`: every xid below it is *forgotten* — a copy arriving later is dropped unseen
//!   ([`Admit::Stale`]); the handler never runs for it (again);
//! - an entry per xid at or above the floor: in progress, or done with its cached reply.
//!
//! Why forgetting is safe: the caller stamps each request with the smallest xid it still
//! waits for from this receiver (`floor` in the request). Everything below is answered or
//! abandoned by the caller, so it never retransmits those; a stray copy (e.g. from a stalled
//! old connection) is dropped as stale instead of running again. The floor only rises.
//!
//! Memory bound: at most [`MAX_TRACKED_XIDS_PER_SENDER`] entries. Past that the oldest entry
//! is evicted by raising the floor over it, which keeps at-most-once (a late retransmission
//! of it is dropped, the caller times out) at the price of liveness for that one call. A
//! sender that goes silent is dropped whole by the server after `SENDER_STATE_IDLE_TTL`
//! (see `server.rs`), which outlives every call deadline (`MAX_CALL_TIMEOUT`).

use std::collections::BTreeMap;

/// Most xids remembered per sender (in progress + replies cached). The caller's floor keeps
/// the window at about the number of its outstanding calls; this cap only bites on a caller
/// with more concurrent calls than this, or a misbehaving one.
pub const MAX_TRACKED_XIDS_PER_SENDER: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Entry<R> {
    InProgress,
    Done(R),
}

/// What to do with an arriving request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit<R> {
    /// First sighting: run it (now recorded as in progress).
    New,
    /// Already running: its reply goes out when it finishes.
    InProgress,
    /// Already finished: re-send this cached reply.
    Done(R),
    /// Below the floor: the caller no longer waits for it; drop it.
    Stale,
}

/// The xid window of one sender. `R` is the cached reply (encoded frame).
#[derive(Clone, Debug)]
pub struct DedupeWindow<R> {
    floor: u64,
    entries: BTreeMap<u64, Entry<R>>,
    max_entries: usize,
}

impl<R: Clone> Default for DedupeWindow<R> {
    fn default() -> Self {
        Self::new(MAX_TRACKED_XIDS_PER_SENDER)
    }
}

impl<R: Clone> DedupeWindow<R> {
    pub fn new(max_entries: usize) -> Self {
        assert!(max_entries > 0);
        DedupeWindow { floor: 0, entries: BTreeMap::new(), max_entries }
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True if some admitted xid has not finished.
    pub fn has_in_progress(&self) -> bool {
        self.entries.values().any(|e| matches!(e, Entry::InProgress))
    }

    /// Raises the floor to `floor` (never lowers it) and forgets everything below.
    pub fn advance_floor(&mut self, floor: u64) {
        if floor <= self.floor {
            return;
        }
        self.floor = floor;
        self.entries = self.entries.split_off(&floor);
        debug_assert!(self.entries.keys().all(|x| *x >= self.floor));
    }

    /// Classifies an arriving xid; a new one is recorded as in progress.
    pub fn admit(&mut self, xid: u64) -> Admit<R> {
        if xid < self.floor {
            return Admit::Stale;
        }
        match self.entries.get(&xid) {
            Some(Entry::InProgress) => Admit::InProgress,
            Some(Entry::Done(r)) => Admit::Done(r.clone()),
            None => {
                self.entries.insert(xid, Entry::InProgress);
                while self.entries.len() > self.max_entries {
                    let (&oldest, _) = self.entries.first_key_value().expect("over a positive cap");
                    self.advance_floor(oldest + 1);
                }
                if xid < self.floor {
                    // It was the oldest itself (cap reached by older in-progress entries).
                    return Admit::Stale;
                }
                Admit::New
            }
        }
    }

    /// The cached replies of finished xids, in xid order.
    pub fn done_replies(&self) -> impl Iterator<Item = &R> {
        self.entries.values().filter_map(|e| match e {
            Entry::Done(r) => Some(r),
            Entry::InProgress => None,
        })
    }

    /// Records the reply of an admitted xid. A no-op if it was forgotten meanwhile (the
    /// caller abandoned it; nobody will ask again).
    pub fn finish(&mut self, xid: u64, reply: R) {
        if let Some(e) = self.entries.get_mut(&xid) {
            debug_assert!(matches!(e, Entry::InProgress), "xid {xid} finished twice");
            *e = Entry::Done(reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn done_replies_lists_the_finished_xids_only_in_order() {
        let mut w = DedupeWindow::<&str>::new(8);
        for x in [3, 1, 2] {
            assert_eq!(w.admit(x), Admit::New);
        }
        w.finish(3, "three");
        w.finish(1, "one");
        assert_eq!(w.done_replies().copied().collect::<Vec<_>>(), ["one", "three"]);
        w.advance_floor(2);
        assert_eq!(w.done_replies().copied().collect::<Vec<_>>(), ["three"], "forgotten below the floor");
    }

    #[test]
    fn a_duplicate_never_runs_twice() {
        let mut w = DedupeWindow::<&str>::new(16);
        assert_eq!(w.admit(5), Admit::New);
        assert_eq!(w.admit(5), Admit::InProgress);
        w.finish(5, "r5");
        assert_eq!(w.admit(5), Admit::Done("r5"));
        assert_eq!(w.admit(5), Admit::Done("r5"));
        assert_eq!(w.admit(3), Admit::New, "xids need not arrive in order");
    }

    #[test]
    fn the_floor_forgets_and_rejects_below_it() {
        let mut w = DedupeWindow::<u32>::new(16);
        for x in 1..=4 {
            assert_eq!(w.admit(x), Admit::New);
            w.finish(x, x as u32);
        }
        w.advance_floor(3);
        assert_eq!(w.len(), 2);
        assert_eq!(w.admit(1), Admit::Stale);
        assert_eq!(w.admit(2), Admit::Stale);
        assert_eq!(w.admit(3), Admit::Done(3));
        w.advance_floor(2);
        assert_eq!(w.floor(), 3, "the floor never goes down");
        assert_eq!(w.admit(2), Admit::Stale);
    }

    #[test]
    fn finishing_a_forgotten_xid_is_a_no_op() {
        let mut w = DedupeWindow::<u32>::new(16);
        assert_eq!(w.admit(1), Admit::New);
        w.advance_floor(2);
        w.finish(1, 1);
        assert!(w.is_empty());
        assert_eq!(w.admit(1), Admit::Stale);
    }

    #[test]
    fn the_cap_evicts_the_oldest_by_raising_the_floor() {
        let mut w = DedupeWindow::<u32>::new(3);
        for x in 10..13 {
            assert_eq!(w.admit(x), Admit::New);
        }
        assert!(w.has_in_progress());
        assert_eq!(w.admit(13), Admit::New);
        assert_eq!(w.len(), 3);
        assert_eq!(w.floor(), 11);
        assert_eq!(w.admit(10), Admit::Stale, "evicted, so never run again");
        assert_eq!(w.admit(5), Admit::Stale);
        assert_eq!(w.admit(12), Admit::InProgress);
    }
}
