//! Which users a server's workers execute next: a round-robin of users with waiting packs,
//! each user on at most one worker at a time, a bounded number of packs per turn (a user with a
//! long queue goes to the back after each turn, so it never delays another user's: no
//! head-of-line blocking).
//! I/O-free.
//!
//! Inputs: [`Scheduler::schedule`] (a user may have waiting packs), [`Scheduler::take`] (a
//! worker is free), [`Scheduler::finish`] (a worker's turn on a user ended, saying whether
//! packs still wait).

use std::collections::{BTreeSet, VecDeque};

/// Most users waiting for a worker on one server; beyond that a schedule is dropped (the
/// sweep finds the user again: its pending row stays until its queue drains).
pub const READY_USERS_MAX: usize = 65_536;

#[derive(Debug, Default)]
pub struct Scheduler {
    ready: VecDeque<String>,
    queued: BTreeSet<String>,
    running: BTreeSet<String>,
    /// Users scheduled again while running: requeued when their turn ends.
    again: BTreeSet<String>,
    /// Two workers may take one user (the planted bug `parallel_user`).
    allow_parallel: bool,
}

impl Scheduler {
    pub fn new(allow_parallel: bool) -> Scheduler {
        Scheduler { allow_parallel, ..Scheduler::default() }
    }

    /// `user` may have waiting packs. False if dropped (over [`READY_USERS_MAX`]).
    pub fn schedule(&mut self, user: &str) -> bool {
        if self.running.contains(user) && !self.allow_parallel {
            self.again.insert(user.to_string());
            return true;
        }
        if self.queued.contains(user) {
            return true;
        }
        if self.ready.len() >= READY_USERS_MAX {
            return false;
        }
        self.queued.insert(user.to_string());
        self.ready.push_back(user.to_string());
        true
    }

    /// The next user for a free worker, now marked running.
    pub fn take(&mut self) -> Option<String> {
        let user = self.ready.pop_front()?;
        self.queued.remove(&user);
        if self.allow_parallel {
            // The bug: the user stays schedulable while a worker runs it.
            self.running.insert(user.clone());
            return Some(user);
        }
        self.running.insert(user.clone());
        Some(user)
    }

    /// A worker's turn on `user` ended; `more`: packs still wait.
    pub fn finish(&mut self, user: &str, more: bool) {
        self.running.remove(user);
        let again = self.again.remove(user);
        if more || again {
            self.schedule(user);
        }
    }

    /// True if `user` is waiting or running.
    pub fn knows(&self, user: &str) -> bool {
        self.queued.contains(user) || self.running.contains(user)
    }

    /// Users waiting for a worker.
    pub fn ready_len(&self) -> usize {
        self.ready.len()
    }

    pub fn running_len(&self) -> usize {
        self.running.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_runs_on_one_worker_at_a_time() {
        let mut s = Scheduler::new(false);
        s.schedule("a");
        assert_eq!(s.take().as_deref(), Some("a"));
        s.schedule("a");
        assert_eq!(s.take(), None, "a is running: not handed to a second worker");
        s.finish("a", false);
        assert_eq!(s.take().as_deref(), Some("a"), "scheduled while running: requeued at the end");
    }

    #[test]
    fn a_long_queue_goes_to_the_back_after_each_pack() {
        let mut s = Scheduler::new(false);
        s.schedule("long");
        s.schedule("b");
        assert_eq!(s.take().as_deref(), Some("long"));
        s.finish("long", true);
        assert_eq!(s.take().as_deref(), Some("b"), "b is not stuck behind long's queue");
        assert_eq!(s.take().as_deref(), Some("long"));
    }

    #[test]
    fn scheduling_twice_queues_once() {
        let mut s = Scheduler::new(false);
        s.schedule("a");
        s.schedule("a");
        assert_eq!(s.ready_len(), 1);
        assert!(s.knows("a"));
        s.take();
        s.finish("a", false);
        assert!(!s.knows("a"));
    }

    #[test]
    fn the_parallel_bug_hands_a_running_user_to_a_second_worker() {
        let mut s = Scheduler::new(true);
        s.schedule("a");
        assert_eq!(s.take().as_deref(), Some("a"));
        s.schedule("a");
        assert_eq!(s.take().as_deref(), Some("a"));
    }
}
