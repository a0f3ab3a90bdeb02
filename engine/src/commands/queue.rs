//! One user's queue record: an object-store object (model [`QUEUE_MODEL`], keyed by the user)
//! that says which packs are stored and which are done, and the user's state epochs. I/O-free:
//! the decisions below are pure; the caller holds the object in a transaction and writes it
//! back with the pack rows in the same commit.
//!
//! Inputs: [`QueueRecord::on_submit`] (a pack arrives: store it, acknowledge a resend, or
//! refuse it), [`QueueRecord::next_pack`] / [`QueueRecord::on_executed`] (the worker takes the
//! head pack and records its outcome), [`QueueRecord::on_realtime`] (a real-time command
//! changed the state).
//!
//! Epochs, not clocks: `epoch` counts the user's state changes (every applied pack, every
//! failed pack, every applied real-time command), so every state handed to a client carries
//! the epoch it is at. When a pack fails, `error_epoch` becomes the new epoch: a pack built on
//! an older state (`basis < error_epoch`) was built on the bad state and is *skipped* at
//! execution, and refused at submit (`Reload`).

use serde::{Deserialize, Serialize};

use crate::orm::Model;

/// The model name of queue records.
pub const QUEUE_MODEL: &str = "cmd_queue";
/// Most packs stored and not yet executed per user; a pack beyond is refused (retry later),
/// never stored.
pub const QUEUE_PACKS_MAX: u64 = 32;

/// One user's queue record (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRecord {
    pub user: String,
    /// The highest pack id stored (ids run 1, 2, 3, ... without gaps).
    pub last_pack: u64,
    /// Packs `1..=done` are executed (applied, failed or skipped); `done+1..=last_pack` wait.
    pub done: u64,
    /// The state epoch: state changes so far.
    pub epoch: u64,
    /// The epoch right after the last failed pack (0: none failed).
    pub error_epoch: u64,
}

impl Model for QueueRecord {
    const MODEL: &'static str = QUEUE_MODEL;
    fn key(&self) -> String {
        self.user.clone()
    }
}

/// What to do with an arriving pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitDecision {
    /// Store it (the record is updated; write the pack row in the same commit).
    Store,
    /// A resend of a stored pack: acknowledge it again, store nothing.
    Resend,
    /// Built on a state older than the last error: tell the client to reload (at `epoch`).
    Reload { epoch: u64 },
    /// Not the next pack id: packs must be sent in id order (`expected` is the next one).
    Gap { expected: u64 },
    /// Built on a state this server never issued.
    FutureBasis { epoch: u64 },
    /// [`QUEUE_PACKS_MAX`] packs wait already: retry later.
    Full { waiting: u64 },
}

/// How an executed pack ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every command applied; the state changed.
    Applied,
    /// A command failed logically; nothing of the pack applied, and later stale packs skip.
    Failed,
    /// Built on a state older than the last error: not executed.
    Skipped,
}

impl QueueRecord {
    /// A user's record before any pack.
    pub fn new(user: &str) -> QueueRecord {
        QueueRecord { user: user.to_string(), last_pack: 0, done: 0, epoch: 0, error_epoch: 0 }
    }

    /// Packs stored and not executed.
    pub fn waiting(&self) -> u64 {
        self.last_pack - self.done
    }

    /// Decides an arriving pack; on `Store`, the record now counts it.
    pub fn on_submit(&mut self, pack_id: u64, basis: u64, check_stale: bool) -> SubmitDecision {
        if pack_id <= self.last_pack {
            return SubmitDecision::Resend;
        }
        if pack_id != self.last_pack + 1 {
            return SubmitDecision::Gap { expected: self.last_pack + 1 };
        }
        if basis > self.epoch {
            return SubmitDecision::FutureBasis { epoch: self.epoch };
        }
        if check_stale && self.is_stale(basis) {
            return SubmitDecision::Reload { epoch: self.epoch };
        }
        if self.waiting() >= QUEUE_PACKS_MAX {
            return SubmitDecision::Full { waiting: self.waiting() };
        }
        self.last_pack = pack_id;
        SubmitDecision::Store
    }

    /// True if a pack built on `basis` predates the last error.
    pub fn is_stale(&self, basis: u64) -> bool {
        basis < self.error_epoch
    }

    /// The pack to execute next, if any.
    pub fn next_pack(&self) -> Option<u64> {
        (self.done < self.last_pack).then_some(self.done + 1)
    }

    /// Records the head pack's outcome; returns the epoch the state is at after it.
    pub fn on_executed(&mut self, outcome: Outcome) -> u64 {
        assert!(self.done < self.last_pack, "no pack waits");
        self.done += 1;
        match outcome {
            Outcome::Applied => self.epoch += 1,
            Outcome::Failed => {
                self.epoch += 1;
                self.error_epoch = self.epoch;
            }
            Outcome::Skipped => {}
        }
        self.epoch
    }

    /// Records an applied real-time command; returns the new epoch.
    pub fn on_realtime(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(q: &mut QueueRecord, ids: std::ops::RangeInclusive<u64>, basis: u64) {
        for id in ids {
            assert_eq!(q.on_submit(id, basis, true), SubmitDecision::Store);
        }
    }

    #[test]
    fn packs_are_stored_in_id_order_and_executed_in_that_order() {
        let mut q = QueueRecord::new("u1");
        stored(&mut q, 1..=3, 0);
        assert_eq!((q.last_pack, q.waiting()), (3, 3));
        assert_eq!(q.next_pack(), Some(1));
        assert_eq!(q.on_executed(Outcome::Applied), 1);
        assert_eq!(q.next_pack(), Some(2));
        assert_eq!(q.on_executed(Outcome::Applied), 2);
        assert_eq!(q.on_executed(Outcome::Applied), 3);
        assert_eq!((q.next_pack(), q.waiting()), (None, 0));
    }

    #[test]
    fn a_resent_pack_is_acknowledged_without_being_counted_twice() {
        let mut q = QueueRecord::new("u1");
        stored(&mut q, 1..=2, 0);
        assert_eq!(q.on_submit(2, 0, true), SubmitDecision::Resend);
        assert_eq!(q.on_submit(1, 0, true), SubmitDecision::Resend);
        assert_eq!(q.last_pack, 2);
        q.on_executed(Outcome::Applied);
        q.on_executed(Outcome::Applied);
        assert_eq!(q.on_submit(1, 0, true), SubmitDecision::Resend, "also once executed");
    }

    #[test]
    fn a_pack_id_gap_is_refused_and_names_the_expected_id() {
        let mut q = QueueRecord::new("u1");
        stored(&mut q, 1..=1, 0);
        assert_eq!(q.on_submit(3, 0, true), SubmitDecision::Gap { expected: 2 });
        assert_eq!(q.last_pack, 1);
    }

    #[test]
    fn after_a_failure_packs_built_on_older_states_skip_and_new_ones_reload() {
        let mut q = QueueRecord::new("u1");
        stored(&mut q, 1..=4, 0);
        assert_eq!(q.on_executed(Outcome::Applied), 1);
        assert_eq!(q.on_executed(Outcome::Failed), 2);
        assert_eq!(q.error_epoch, 2);
        assert!(q.is_stale(0), "packs 3 and 4 were built on epoch 0");
        assert_eq!(q.on_executed(Outcome::Skipped), 2, "a skip changes no state");
        assert_eq!(q.on_executed(Outcome::Skipped), 2);
        assert_eq!(q.on_submit(5, 0, true), SubmitDecision::Reload { epoch: 2 });
        assert_eq!(q.last_pack, 4, "a refused pack is not stored");
        assert_eq!(q.on_submit(5, 2, true), SubmitDecision::Store, "built on the reloaded state");
        assert!(!q.is_stale(2));
    }

    #[test]
    fn a_basis_the_server_never_issued_is_refused() {
        let mut q = QueueRecord::new("u1");
        assert_eq!(q.on_submit(1, 7, true), SubmitDecision::FutureBasis { epoch: 0 });
        assert_eq!(q.last_pack, 0);
    }

    #[test]
    fn a_full_queue_refuses_the_next_pack_until_one_is_executed() {
        let mut q = QueueRecord::new("u1");
        stored(&mut q, 1..=QUEUE_PACKS_MAX, 0);
        assert_eq!(
            q.on_submit(QUEUE_PACKS_MAX + 1, 0, true),
            SubmitDecision::Full { waiting: QUEUE_PACKS_MAX }
        );
        q.on_executed(Outcome::Applied);
        assert_eq!(q.on_submit(QUEUE_PACKS_MAX + 1, 0, true), SubmitDecision::Store);
    }

    #[test]
    fn real_time_commands_advance_the_epoch_without_touching_the_queue() {
        let mut q = QueueRecord::new("u1");
        stored(&mut q, 1..=1, 0);
        assert_eq!(q.on_realtime(), 1);
        assert_eq!((q.waiting(), q.error_epoch), (1, 0));
        assert!(!q.is_stale(0), "a purchase is no error: packs built before it still apply");
    }
}
