//! Session memory in bytes: each session's outbound queue has its own byte limit
//! ([`SessionConfig::send_queue_bytes_max`](super::SessionConfig::send_queue_bytes_max)), and
//! one [`MemoryBudget`] per service counts what every session holds, so the process cannot be
//! grown without bound by many sessions that each stay under their own limit.
//!
//! # What is counted
//! - every frame queued for a client, from the moment it is queued until the writer takes
//!   it (or the queue is dropped at an immediate close or when the session is dropped);
//! - a fixed [`SESSION_BASE_BYTES`] per live connection, for the buffers the transport keeps
//!   whatever the traffic (read buffer, codec state, the connection's task): an estimate,
//!   not a measurement of each session.
//!
//! # What is not counted
//! Frames being read (bounded by `max_frame_bytes`, one per session), bytes in the kernel's
//! socket buffers, and a handler's own allocations. A backend's transport may bound its own
//! buffers further (the WebSocket port's write buffer: `real::adapters::ws`).
//!
//! # Decisions
//! - A new connection that would take the total over [`ServiceLimits::memory_max`] is refused:
//!   it gets `_error server_busy` and is closed (its own base charge is never taken).
//! - A frame that would take the total over the budget closes the session it was queued for as
//!   a slow reader, exactly as its own queue overflowing would: the sessions that hold memory
//!   are those whose clients do not read.
//!
//! The budget is an I/O-free counter (one atomic); callers pass what they charge and release.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// What a live connection is charged besides its queue: the read chunk a transport keeps per
/// connection (16 KiB on the WebSocket port) and the session's task and tables.
pub const SESSION_BASE_BYTES: usize = 20 * 1024;

/// Default [`ServiceLimits::memory_max`]: 512 MiB, about 25,000 idle sessions.
pub const DEFAULT_SESSION_MEMORY_MAX: usize = 512 * 1024 * 1024;
/// Default [`ServiceLimits::unauthenticated_max`].
pub const DEFAULT_UNAUTHENTICATED_MAX: usize = 2048;
/// Default [`ServiceLimits::unauthenticated_per_address_max`].
pub const DEFAULT_UNAUTHENTICATED_PER_ADDRESS_MAX: usize = 256;

/// Limits of a whole session service (every port), beside each port's own
/// [`SessionConfig`](super::SessionConfig).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceLimits {
    /// Most bytes all sessions may hold ([`MemoryBudget`]).
    pub memory_max: usize,
    /// Most connections at once that have not yet sent a message a handler took (see
    /// [`Unproven`](super::unproven::Unproven)); at the limit the oldest is closed to make room.
    pub unauthenticated_max: usize,
    /// The same, per client IP address.
    pub unauthenticated_per_address_max: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            memory_max: DEFAULT_SESSION_MEMORY_MAX,
            unauthenticated_max: DEFAULT_UNAUTHENTICATED_MAX,
            unauthenticated_per_address_max: DEFAULT_UNAUTHENTICATED_PER_ADDRESS_MAX,
        }
    }
}

impl ServiceLimits {
    /// An error message if a limit is unusable (zero, or a budget below one session).
    pub fn problem(&self) -> Option<String> {
        if self.memory_max < SESSION_BASE_BYTES {
            return Some(format!(
                "session_memory_max_bytes {} is below one session's {SESSION_BASE_BYTES} bytes",
                self.memory_max
            ));
        }
        if self.unauthenticated_max == 0 || self.unauthenticated_per_address_max == 0 {
            return Some("unauthenticated connection limits must be at least 1".into());
        }
        None
    }
}

/// The bytes held by a service's sessions against one maximum. Shared by the service and
/// each of its sessions.
#[derive(Debug)]
pub struct MemoryBudget {
    max: usize,
    used: AtomicUsize,
    /// Charges refused since the start (each closed a session or refused a connection).
    refused: AtomicU64,
}

impl MemoryBudget {
    pub fn new(max: usize) -> Self {
        MemoryBudget { max, used: AtomicUsize::new(0), refused: AtomicU64::new(0) }
    }

    /// Takes `n` bytes if the total stays within the maximum; false (nothing taken) if not.
    pub fn try_charge(&self, n: usize) -> bool {
        let ok = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|t| *t <= self.max)
            })
            .is_ok();
        if !ok {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Gives back `n` bytes taken by [`try_charge`](Self::try_charge).
    pub fn release(&self, n: usize) {
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "released {n} bytes of {before} charged");
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Charges refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_that_would_pass_the_maximum_takes_nothing() {
        let b = MemoryBudget::new(100);
        assert!(b.try_charge(60));
        assert!(!b.try_charge(41), "60 + 41 > 100");
        assert_eq!((b.used(), b.refused()), (60, 1));
        assert!(b.try_charge(40), "60 + 40 = 100 fits exactly");
        assert_eq!(b.used(), 100);
    }

    #[test]
    fn released_bytes_can_be_charged_again() {
        let b = MemoryBudget::new(10);
        assert!(b.try_charge(10));
        b.release(4);
        assert_eq!(b.used(), 6);
        assert!(b.try_charge(4));
        assert!(!b.try_charge(1));
    }

    #[test]
    fn limits_below_one_session_or_zero_are_refused() {
        let mut l = ServiceLimits::default();
        assert_eq!(l.problem(), None);
        l.memory_max = SESSION_BASE_BYTES - 1;
        assert!(l.problem().unwrap().contains("session_memory_max_bytes"));
        l = ServiceLimits { unauthenticated_per_address_max: 0, ..ServiceLimits::default() };
        assert!(l.problem().is_some());
    }
}
