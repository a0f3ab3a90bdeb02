//! Ordered handling per order key: the receiver's state machine for one (sender, key).
//!
//! The caller stamps calls of one key to one receiver with sequence numbers 1, 2, 3, ... in
//! call order. The receiver runs the handlers of a key one at a time in sequence order:
//!
//! - `seq == last_started + 1` and nothing running: start it;
//! - `seq > last_started + 1`, or something is running: queue it;
//! - `seq <= last_started` (or already queued): reject as out of order — it was overtaken
//!   (e.g. a copy on a stalled old connection arrived after later calls came over a new
//!   one). Rejection keeps the handled sequence a *subsequence* of the send order.
//!
//! A queued call whose predecessor is missing waits at most [`ORDER_GAP_WAIT`] (counted
//! from its arrival) once the key is idle; then the gap is skipped: it starts, and the
//! missing ones are rejected if they ever come. Gaps are normal: a call that timed out on
//! the caller before it was ever sent leaves one. At most [`MAX_QUEUED_PER_KEY`] calls wait
//! per key; more are rejected as overloaded.
//!
//! Inputs: [`KeyOrder::arrive`], [`KeyOrder::finish`] (the running one ended),
//! [`KeyOrder::poll_expired`] (a gap timer fired). Each returns what to start, if anything.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::env::MonoTime;

/// How long a call waits for a missing predecessor before the gap is skipped. Longer than
/// the usual reorder window of a reconnect (re-sent calls arrive within a round trip or two),
/// short enough not to stall a player's queue for long when a call was lost for good.
pub const ORDER_GAP_WAIT: Duration = Duration::from_secs(1);

/// Most calls queued per (sender, key); beyond that new ones are rejected (overloaded).
pub const MAX_QUEUED_PER_KEY: usize = 1024;

/// What happened to an arriving call.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival<T> {
    /// Run it now.
    Start(T),
    /// Queued behind a running or missing predecessor; re-check at `gap_deadline`.
    Queued { gap_deadline: MonoTime },
    /// Overtaken: reject with out-of-order; `last_seq` is the highest started.
    OutOfOrder { item: T, last_seq: u64 },
    /// Too many queued.
    Overloaded(T),
}

/// One (sender, key)'s ordering state. `T` is the queued call.
#[derive(Debug)]
pub struct KeyOrder<T> {
    last_started: u64,
    running: bool,
    queued: BTreeMap<u64, (MonoTime, T)>,
    /// Last time anything happened (for idle eviction).
    pub last_activity: MonoTime,
}

impl<T> KeyOrder<T> {
    pub fn new(now: MonoTime) -> Self {
        KeyOrder { last_started: 0, running: false, queued: BTreeMap::new(), last_activity: now }
    }

    pub fn last_started(&self) -> u64 {
        self.last_started
    }

    /// True when nothing runs or waits: the state only remembers `last_started`.
    pub fn is_idle(&self) -> bool {
        !self.running && self.queued.is_empty()
    }

    pub fn arrive(&mut self, seq: u64, item: T, now: MonoTime) -> Arrival<T> {
        self.last_activity = now;
        if seq <= self.last_started || self.queued.contains_key(&seq) {
            return Arrival::OutOfOrder { item, last_seq: self.last_started };
        }
        if !self.running && seq == self.last_started + 1 {
            self.start(seq);
            return Arrival::Start(item);
        }
        if self.queued.len() >= MAX_QUEUED_PER_KEY {
            return Arrival::Overloaded(item);
        }
        let gap_deadline = now + ORDER_GAP_WAIT;
        self.queued.insert(seq, (gap_deadline, item));
        Arrival::Queued { gap_deadline }
    }

    /// The running call finished; returns the next one to start, if it may.
    pub fn finish(&mut self, now: MonoTime) -> Option<(u64, T)> {
        debug_assert!(self.running, "finish without a running call");
        self.running = false;
        self.last_activity = now;
        self.next(now)
    }

    /// A gap timer fired; returns a call to start if one's wait is over.
    pub fn poll_expired(&mut self, now: MonoTime) -> Option<(u64, T)> {
        self.next(now)
    }

    /// Rejects every queued call (shutdown), in sequence order.
    pub fn drain(&mut self) -> Vec<(u64, T)> {
        std::mem::take(&mut self.queued).into_iter().map(|(s, (_, t))| (s, t)).collect()
    }

    fn next(&mut self, now: MonoTime) -> Option<(u64, T)> {
        if self.running {
            return None;
        }
        let (&seq, &(deadline, _)) = self.queued.first_key_value()?;
        if seq == self.last_started + 1 || deadline <= now {
            let (_, item) = self.queued.remove(&seq).expect("just seen");
            self.start(seq);
            return Some((seq, item));
        }
        None
    }

    fn start(&mut self, seq: u64) {
        debug_assert!(!self.running && seq > self.last_started);
        self.running = true;
        self.last_started = seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: MonoTime = MonoTime(1_000);

    fn at(ms: u64) -> MonoTime {
        T0 + Duration::from_millis(ms)
    }

    #[test]
    fn in_order_arrivals_run_one_at_a_time() {
        let mut k = KeyOrder::new(T0);
        assert_eq!(k.arrive(1, "a", T0), Arrival::Start("a"));
        assert!(matches!(k.arrive(2, "b", T0), Arrival::Queued { .. }));
        assert!(matches!(k.arrive(3, "c", T0), Arrival::Queued { .. }));
        assert_eq!(k.finish(at(1)), Some((2, "b")));
        assert_eq!(k.finish(at(2)), Some((3, "c")));
        assert_eq!(k.finish(at(3)), None);
        assert!(k.is_idle());
        assert_eq!(k.last_started(), 3);
    }

    #[test]
    fn a_later_call_waits_for_its_predecessor() {
        let mut k = KeyOrder::new(T0);
        assert_eq!(k.arrive(2, "b", T0), Arrival::Queued { gap_deadline: T0 + ORDER_GAP_WAIT });
        assert_eq!(k.poll_expired(at(10)), None);
        assert_eq!(k.arrive(1, "a", at(20)), Arrival::Start("a"));
        assert_eq!(k.finish(at(30)), Some((2, "b")));
    }

    #[test]
    fn an_overtaken_call_is_rejected() {
        let mut k = KeyOrder::new(T0);
        assert_eq!(k.arrive(1, "a", T0), Arrival::Start("a"));
        assert_eq!(k.finish(at(1)), None);
        assert_eq!(k.arrive(3, "c", at(2)), Arrival::Queued { gap_deadline: at(2) + ORDER_GAP_WAIT });
        // The gap (2) never fills: 3 starts after the wait, and 2 is rejected when it shows up.
        assert_eq!(k.poll_expired(at(2) + ORDER_GAP_WAIT), Some((3, "c")));
        assert_eq!(k.arrive(2, "b", at(2000)), Arrival::OutOfOrder { item: "b", last_seq: 3 });
        assert_eq!(k.arrive(1, "a", at(2000)), Arrival::OutOfOrder { item: "a", last_seq: 3 });
    }

    #[test]
    fn an_expired_gap_waits_for_the_running_call() {
        let mut k = KeyOrder::new(T0);
        assert_eq!(k.arrive(1, "a", T0), Arrival::Start("a"));
        assert!(matches!(k.arrive(3, "c", T0), Arrival::Queued { .. }));
        assert_eq!(k.poll_expired(at(5000)), None, "1 still runs");
        assert_eq!(k.finish(at(5001)), Some((3, "c")));
    }

    #[test]
    fn duplicates_of_queued_seqs_are_rejected_and_the_queue_is_bounded() {
        let mut k = KeyOrder::new(T0);
        assert_eq!(k.arrive(1, 1u64, T0), Arrival::Start(1));
        assert!(matches!(k.arrive(2, 2, T0), Arrival::Queued { .. }));
        assert!(matches!(k.arrive(2, 22, T0), Arrival::OutOfOrder { item: 22, .. }));
        for s in 3..(MAX_QUEUED_PER_KEY as u64 + 2) {
            assert!(matches!(k.arrive(s, s, T0), Arrival::Queued { .. }));
        }
        let s = MAX_QUEUED_PER_KEY as u64 + 2;
        assert_eq!(k.arrive(s, s, T0), Arrival::Overloaded(s));
        assert_eq!(k.drain().len(), MAX_QUEUED_PER_KEY);
    }
}
