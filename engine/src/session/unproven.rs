//! Connections that have not yet proven anything: admitted, but no message of theirs has
//! reached a handler. Idle or half-open connections cost the server a descriptor and a task
//! each, so there may be at most [`ServiceLimits::unauthenticated_max`] of them, and at most
//! [`ServiceLimits::unauthenticated_per_address_max`] from one IP address. At a limit the
//! *oldest* unproven connection (of that address, else of all) is closed to make room, so a
//! newcomer — an honest client about to log in — is always admitted, and an attacker holding
//! connections open only ever evicts its own oldest ones.
//!
//! Inputs (the service calls each under its own lock; no I/O, no clock: age is arrival order):
//! - [`admit`](Unproven::admit) when a connection is accepted: returns whom to evict;
//! - [`prove`](Unproven::prove) when a message of the session reaches a handler registered
//!   for its type (not the unhandled-type taker, which on a gate answers every frame before
//!   the login with `gate_login_required`): it leaves the set for good;
//! - [`forget`](Unproven::forget) when the session closes.
//!
//! "Unauthenticated" is therefore "has not yet sent a message the game handles": a game whose
//! first message is its login makes the two the same. Pongs, malformed frames and unknown
//! types prove nothing, nor do frames for the unhandled-type taker.
//!
//! [`ServiceLimits::unauthenticated_max`]: super::budget::ServiceLimits::unauthenticated_max
//! [`ServiceLimits::unauthenticated_per_address_max`]: super::budget::ServiceLimits::unauthenticated_per_address_max

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::handle::SessionId;

/// The unproven connections, oldest first.
#[derive(Debug)]
pub struct Unproven {
    total_max: usize,
    per_address_max: usize,
    next_seq: u64,
    by_seq: BTreeMap<u64, (SessionId, IpAddr)>,
    seq_of: BTreeMap<SessionId, u64>,
    by_address: BTreeMap<IpAddr, BTreeSet<u64>>,
}

impl Unproven {
    /// # Panics
    /// If a limit is 0 (validated before: [`ServiceLimits::problem`](super::budget::ServiceLimits::problem)).
    pub fn new(total_max: usize, per_address_max: usize) -> Self {
        assert!(total_max >= 1 && per_address_max >= 1, "unproven limits must be at least 1");
        Unproven {
            total_max,
            per_address_max,
            next_seq: 0,
            by_seq: BTreeMap::new(),
            seq_of: BTreeMap::new(),
            by_address: BTreeMap::new(),
        }
    }

    /// Admits `id` from `ip` and returns the sessions to close to make room for it (at most
    /// one per limit, oldest first; never `id` itself). They are already forgotten here.
    pub fn admit(&mut self, id: SessionId, ip: IpAddr) -> Vec<SessionId> {
        let mut evict = Vec::new();
        let address_full = self.by_address.get(&ip).is_some_and(|s| s.len() >= self.per_address_max);
        if address_full {
            let oldest = self.by_address.get(&ip).and_then(|s| s.first().copied());
            if let Some(victim) = oldest.and_then(|seq| self.by_seq.get(&seq)).map(|(v, _)| *v) {
                self.forget(victim);
                evict.push(victim);
            }
        }
        if self.by_seq.len() >= self.total_max {
            if let Some((_, (victim, _))) = self.by_seq.first_key_value().map(|(s, v)| (*s, *v)) {
                self.forget(victim);
                evict.push(victim);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_seq.insert(seq, (id, ip));
        self.seq_of.insert(id, seq);
        self.by_address.entry(ip).or_default().insert(seq);
        evict
    }

    /// `id` had a message handled: it is no longer counted. False if it was not unproven.
    pub fn prove(&mut self, id: SessionId) -> bool {
        self.forget(id)
    }

    /// Removes `id` (closed, or proven). False if it was not there.
    pub fn forget(&mut self, id: SessionId) -> bool {
        let Some(seq) = self.seq_of.remove(&id) else { return false };
        if let Some((_, ip)) = self.by_seq.remove(&seq) {
            if let Some(set) = self.by_address.get_mut(&ip) {
                set.remove(&seq);
                if set.is_empty() {
                    self.by_address.remove(&ip);
                }
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.by_seq.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_seq.is_empty()
    }

    /// Unproven connections from `ip`.
    #[cfg(test)]
    pub fn of_address(&self, ip: IpAddr) -> usize {
        self.by_address.get(&ip).map_or(0, BTreeSet::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> SessionId {
        SessionId::from_uuid(uuid::Uuid::from_u128(n))
    }
    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_full_address_evicts_its_own_oldest_connection() {
        let mut u = Unproven::new(10, 2);
        assert!(u.admit(id(1), A).is_empty());
        assert!(u.admit(id(2), B).is_empty());
        assert!(u.admit(id(3), A).is_empty());
        assert_eq!(u.of_address(A), 2);
        assert_eq!(u.admit(id(4), A), vec![id(1)], "A's oldest goes, B's older one stays");
        assert_eq!((u.of_address(A), u.of_address(B), u.len()), (2, 1, 3));
    }

    #[test]
    fn a_full_service_evicts_the_oldest_connection_of_any_address() {
        let mut u = Unproven::new(2, 5);
        u.admit(id(1), A);
        u.admit(id(2), B);
        assert_eq!(u.admit(id(3), B), vec![id(1)]);
        assert_eq!(u.len(), 2);
        assert_eq!(u.of_address(A), 0);
    }

    #[test]
    fn a_proven_connection_is_never_evicted() {
        let mut u = Unproven::new(2, 2);
        u.admit(id(1), A);
        assert!(u.prove(id(1)));
        assert!(!u.prove(id(1)), "proving twice finds nothing");
        u.admit(id(2), A);
        u.admit(id(3), A);
        assert_eq!(u.admit(id(4), A), vec![id(2)]);
        assert!(!u.forget(id(1)));
        assert!(!u.is_empty());
    }

    #[test]
    fn both_limits_full_evict_one_connection_each() {
        let mut u = Unproven::new(3, 2);
        u.admit(id(1), B);
        u.admit(id(2), A);
        u.admit(id(3), A);
        // A is full (evict 2), then the service still holds 1 and 3 plus the newcomer: fits.
        assert_eq!(u.admit(id(4), A), vec![id(2)]);
        assert_eq!(u.len(), 3);
        // Now a newcomer from a third address: the service is full, its oldest (1) goes.
        let c = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(u.admit(id(5), c), vec![id(1)]);
        assert_eq!(u.len(), 3);
    }
}
