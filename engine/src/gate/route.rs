//! One player's route on its gate: which backend gets the player's frames now, and the
//! switch from one backend to another without the client reconnecting.
//!
//! ```text
//!             bound                    begin_move            released / release_failed
//! Binding ───────────▶ Bound ─────────────────────▶ Releasing ───────────────────────▶ Binding (to the target)
//!    ▲                   │ backend_lost / refused        │ backend_lost (from); released after the target was lost
//!    │ begin_rebind      ▼                               ▼
//!    └──────────────── Recovering ◀──────────────────────┘   (also from Binding on bind_failed)
//! ```
//!
//! Losing the *target* of a move does not end the release: the old backend is alive and
//! still handling the frames it has, and its replies must still go out, so the route stays
//! `Releasing` (the target marked lost) until the release is over, and only then needs a new
//! backend.
//!
//! Frames flow only in `Bound`; in every other phase the gate holds them (its reader waits,
//! so they stay in the client's connection, bounded by TCP). A binding is named by its
//! `epoch`, which grows with every bind; answers for an older epoch are stale and change
//! nothing. The order argument: the release travels on the player's RPC order key behind
//! every forward of the binding, and the old backend answers it only once it handled those
//! and delivered their replies; the target is bound only after that answer (or after the
//! old backend is known gone, when the target's take of the player's anchor object waits it
//! out); held frames go to the target only once it is bound. So no frame is handled by two
//! backends, none after a later one, and replies leave in handling order.
//!
//! Inputs: [`Route::new`] (the first bind), [`Route::on_bound`], [`Route::on_bind_failed`],
//! [`Route::begin_move`], [`Route::on_released`], [`Route::on_backend_lost`],
//! [`Route::begin_rebind`]. Queries: [`Route::target`], [`Route::phase`]. `now` is passed in;
//! no I/O, no clock.

use std::time::Duration;

use crate::cluster::PeerId;
use crate::env::MonoTime;

/// Where a player's frames go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A bind to `to` is in flight; frames are held.
    Binding { to: PeerId, recovered: bool },
    /// Frames go to `backend`.
    Bound { backend: PeerId },
    /// `from` is finishing the player's frames before the player goes to `to`; frames are held.
    /// `to_lost`: the target left meanwhile; once released, another backend is chosen.
    Releasing { from: PeerId, to: PeerId, to_lost: bool },
    /// `lost` is gone or refused the player; a new backend must be chosen; frames are held.
    Recovering { lost: PeerId },
}

/// Send this bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind {
    pub to: PeerId,
    pub epoch: u64,
}

/// Send this release (on the player's order key, to the backend the player leaves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub from: PeerId,
    pub epoch: u64,
}

/// A bind completed: frames flow to `backend` again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switched {
    pub backend: PeerId,
    /// False for the player's first bind (the client gets its login answer, not `sc_moved`).
    pub moved: bool,
    /// True if the previous backend was lost rather than released.
    pub recovered: bool,
    /// How long frames were held (from the start of the switch to now).
    pub pause: Duration,
}

/// Why a move was not started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MoveRefused {
    #[error("the player is already on that backend")]
    AlreadyThere,
    #[error("the player is switching backends already")]
    Switching,
    #[error("the move names an older binding")]
    StaleBinding,
}

/// One player's route. See the module docs.
#[derive(Debug)]
pub struct Route {
    phase: Phase,
    /// The current binding (the one `phase` is about).
    epoch: u64,
    /// When frames began to be held (the start of the switch in progress), if they are.
    held_since: Option<MonoTime>,
    /// Completed switches (moves and recoveries), for metrics.
    switches: u64,
    /// True once any bind completed: later binds are switches the client is told about.
    ever_bound: bool,
}

impl Route {
    /// The route of a player just logged in on this gate, first bound to `to`. Its epochs are
    /// `base + 1`, `base + 2`, ...: the gate gives each login a `base` no earlier login's
    /// epochs reach, so a binding's (gate, epoch) names it for the gate's whole life.
    pub fn new(to: PeerId, base: u64, now: MonoTime) -> (Route, Bind) {
        let epoch = base + 1;
        let route = Route {
            phase: Phase::Binding { to, recovered: false },
            epoch,
            held_since: Some(now),
            switches: 0,
            ever_bound: false,
        };
        (route, Bind { to, epoch })
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The current binding's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Completed switches.
    pub fn switches(&self) -> u64 {
        self.switches
    }

    /// Where frames go now (backend and binding), or `None` while they are held.
    pub fn target(&self) -> Option<(PeerId, u64)> {
        match self.phase {
            Phase::Bound { backend } => Some((backend, self.epoch)),
            _ => None,
        }
    }

    /// Whether frames from `backend` under `epoch` are this route's to deliver: the current
    /// binding, while it is bound or releasing (the release waits for its deliveries).
    pub fn delivers(&self, backend: PeerId, epoch: u64) -> bool {
        epoch == self.epoch
            && match self.phase {
                Phase::Bound { backend: b } | Phase::Releasing { from: b, .. } => b == backend,
                Phase::Binding { .. } | Phase::Recovering { .. } => false,
            }
    }

    /// The bind of `epoch` succeeded. `None` if it is stale (a later switch began meanwhile).
    pub fn on_bound(&mut self, epoch: u64, now: MonoTime) -> Option<Switched> {
        let Phase::Binding { to, recovered } = self.phase else { return None };
        if epoch != self.epoch {
            return None;
        }
        let moved = self.ever_bound;
        self.ever_bound = true;
        let pause = self.held_since.map(|t| now.saturating_since(t)).unwrap_or_default();
        self.phase = Phase::Bound { backend: to };
        self.held_since = None;
        if moved {
            self.switches += 1;
        }
        Some(Switched { backend: to, moved, recovered, pause })
    }

    /// The bind of `epoch` failed (the backend refused or did not answer): choose again.
    /// Returns whether the route changed.
    pub fn on_bind_failed(&mut self, epoch: u64, now: MonoTime) -> bool {
        let Phase::Binding { to, .. } = self.phase else { return false };
        if epoch != self.epoch {
            return false;
        }
        self.phase = Phase::Recovering { lost: to };
        self.held_since.get_or_insert(now);
        true
    }

    /// Starts moving the player to `to` (asked by the backend of binding `epoch`): from now
    /// on frames are held; send the returned release.
    pub fn begin_move(&mut self, to: PeerId, epoch: u64, now: MonoTime) -> Result<Release, MoveRefused> {
        let Phase::Bound { backend } = self.phase else { return Err(MoveRefused::Switching) };
        if epoch != self.epoch {
            return Err(MoveRefused::StaleBinding);
        }
        if backend == to {
            return Err(MoveRefused::AlreadyThere);
        }
        self.phase = Phase::Releasing { from: backend, to, to_lost: false };
        self.held_since = Some(now);
        Ok(Release { from: backend, epoch })
    }

    /// The release of `epoch` is over: answered, or failed (then the target's take of the
    /// anchor waits the old backend out). Returns whether the route changed: it is then
    /// `Binding` the target, or `Recovering` if the target was lost during the release (choose
    /// another with [`Route::begin_rebind`]). False if stale.
    pub fn on_released(&mut self, epoch: u64) -> bool {
        let Phase::Releasing { to, to_lost, .. } = self.phase else { return false };
        if epoch != self.epoch {
            return false;
        }
        if to_lost {
            self.phase = Phase::Recovering { lost: to };
        } else {
            self.epoch += 1;
            self.phase = Phase::Binding { to, recovered: false };
        }
        true
    }

    /// `peer` left the cluster, or refused a frame of the current binding: if the route
    /// depends on it, it now needs a new backend. Returns whether it does now (the route is
    /// `Recovering`). The target of a move in progress being lost only marks it: the release
    /// goes on, and [`Route::on_released`] then asks for another backend.
    pub fn on_backend_lost(&mut self, peer: PeerId, now: MonoTime) -> bool {
        let depends = match self.phase {
            Phase::Bound { backend } => backend == peer,
            Phase::Releasing { from, .. } if from == peer => true,
            Phase::Releasing { from, to, .. } if to == peer => {
                self.phase = Phase::Releasing { from, to, to_lost: true };
                false
            }
            Phase::Releasing { .. } => false,
            Phase::Binding { to, .. } => to == peer,
            Phase::Recovering { .. } => false,
        };
        if depends {
            self.phase = Phase::Recovering { lost: peer };
            self.held_since.get_or_insert(now);
        }
        depends
    }

    /// From `Recovering`: bind the player to `to` (chosen by the caller, not the lost one
    /// unless it is the only backend). `None` if not recovering.
    pub fn begin_rebind(&mut self, to: PeerId) -> Option<Bind> {
        let Phase::Recovering { .. } = self.phase else { return None };
        self.epoch += 1;
        self.phase = Phase::Binding { to, recovered: true };
        Some(Bind { to, epoch: self.epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u128) -> PeerId {
        PeerId(uuid::Uuid::from_u128(n))
    }
    fn at(ms: u64) -> MonoTime {
        MonoTime::from_nanos(ms * 1_000_000)
    }
    fn bound_to(b: PeerId) -> Route {
        let (mut r, bind) = Route::new(b, 0, at(0));
        assert!(r.on_bound(bind.epoch, at(1)).is_some());
        r
    }

    #[test]
    fn a_first_bind_holds_frames_until_bound_and_is_not_a_move() {
        let (mut r, bind) = Route::new(peer(1), 0, at(0));
        assert_eq!(bind, Bind { to: peer(1), epoch: 1 });
        assert_eq!(r.target(), None);
        let s = r.on_bound(1, at(5)).unwrap();
        assert_eq!(
            s,
            Switched { backend: peer(1), moved: false, recovered: false, pause: Duration::from_millis(5) }
        );
        assert_eq!(r.target(), Some((peer(1), 1)));
        assert_eq!(r.switches(), 0);
    }

    #[test]
    fn a_move_holds_frames_from_its_start_until_the_target_is_bound() {
        let mut r = bound_to(peer(1));
        let rel = r.begin_move(peer(2), 1, at(10)).unwrap();
        assert_eq!(rel, Release { from: peer(1), epoch: 1 });
        assert_eq!(r.target(), None, "held while the old backend finishes");
        assert!(r.delivers(peer(1), 1), "the old backend's replies still go out during the release");
        assert!(r.on_released(1));
        assert_eq!(r.phase(), Phase::Binding { to: peer(2), recovered: false });
        assert_eq!(r.epoch(), 2);
        assert!(!r.delivers(peer(1), 1), "after the release the old binding's frames are stale");
        assert_eq!(r.target(), None, "still held until the target owns the player");
        let s = r.on_bound(2, at(25)).unwrap();
        assert_eq!(
            s,
            Switched { backend: peer(2), moved: true, recovered: false, pause: Duration::from_millis(15) }
        );
        assert_eq!(r.target(), Some((peer(2), 2)));
        assert_eq!(r.switches(), 1);
    }

    #[test]
    fn a_second_move_during_a_switch_and_a_move_to_the_same_backend_are_refused() {
        let mut r = bound_to(peer(1));
        assert_eq!(r.begin_move(peer(1), 1, at(2)), Err(MoveRefused::AlreadyThere));
        assert_eq!(r.target(), Some((peer(1), 1)), "a refused move changes nothing");
        r.begin_move(peer(2), 1, at(3)).unwrap();
        assert_eq!(r.begin_move(peer(3), 1, at(4)), Err(MoveRefused::Switching));
    }

    #[test]
    fn a_move_asked_under_an_older_binding_is_refused() {
        let mut r = bound_to(peer(1));
        r.begin_move(peer(2), 1, at(2)).unwrap();
        assert!(r.on_released(1));
        r.on_bound(r.epoch(), at(3)).unwrap();
        assert_eq!(r.begin_move(peer(3), 1, at(4)), Err(MoveRefused::StaleBinding));
        assert_eq!(r.target(), Some((peer(2), 2)));
    }

    #[test]
    fn answers_for_an_older_binding_change_nothing() {
        let mut r = bound_to(peer(1));
        assert_eq!(r.on_bound(1, at(2)), None, "a repeated bind answer");
        r.begin_move(peer(2), 1, at(3)).unwrap();
        assert!(r.on_released(1));
        assert!(!r.on_released(1), "a repeated release answer");
        assert!(!r.on_bind_failed(r.epoch() - 1, at(4)));
        assert_eq!(r.phase(), Phase::Binding { to: peer(2), recovered: false });
    }

    #[test]
    fn losing_the_backend_holds_frames_and_the_rebind_is_a_recovery() {
        let mut r = bound_to(peer(1));
        assert!(!r.on_backend_lost(peer(9), at(2)), "another backend's loss is not ours");
        assert!(r.on_backend_lost(peer(1), at(3)));
        assert_eq!(r.target(), None);
        assert_eq!(r.phase(), Phase::Recovering { lost: peer(1) });
        let b = r.begin_rebind(peer(2)).unwrap();
        assert_eq!(b, Bind { to: peer(2), epoch: 2 });
        let s = r.on_bound(2, at(40)).unwrap();
        assert!(s.moved && s.recovered);
        assert_eq!(s.pause, Duration::from_millis(37));
    }

    #[test]
    fn losing_the_old_backend_of_a_move_turns_it_into_a_recovery() {
        let mut r = bound_to(peer(1));
        r.begin_move(peer(2), 1, at(2)).unwrap();
        assert!(r.on_backend_lost(peer(1), at(3)));
        assert_eq!(r.phase(), Phase::Recovering { lost: peer(1) });
        assert!(!r.on_released(1), "the release answer no longer matters");
        assert_eq!(r.begin_rebind(peer(3)).unwrap().epoch, 2);
    }

    #[test]
    fn losing_the_target_of_a_move_lets_the_release_finish_before_choosing_again() {
        let mut r = bound_to(peer(1));
        r.begin_move(peer(2), 1, at(2)).unwrap();
        assert!(!r.on_backend_lost(peer(2), at(3)), "nothing to rebind while the old backend finishes");
        assert_eq!(r.phase(), Phase::Releasing { from: peer(1), to: peer(2), to_lost: true });
        assert!(r.delivers(peer(1), 1), "the old backend's replies still go out");
        assert_eq!(r.begin_rebind(peer(3)), None, "no rebind before the release is over");
        assert!(r.on_released(1));
        assert_eq!(r.phase(), Phase::Recovering { lost: peer(2) });
        assert!(!r.delivers(peer(1), 1), "after the release the old binding's frames are stale");
        let b = r.begin_rebind(peer(3)).unwrap();
        assert_eq!(b, Bind { to: peer(3), epoch: 2 });
        let s = r.on_bound(2, at(9)).unwrap();
        assert!(s.moved && s.recovered);
        assert_eq!(s.pause, Duration::from_millis(7), "held from the start of the move");
    }

    #[test]
    fn a_failed_bind_is_recovered_and_the_pause_counts_from_the_first_hold() {
        let (mut r, b) = Route::new(peer(1), 0, at(0));
        assert!(r.on_bind_failed(b.epoch, at(50)));
        assert_eq!(r.begin_rebind(peer(1)).unwrap().epoch, 2, "the only backend may be tried again");
        let s = r.on_bound(2, at(70)).unwrap();
        assert_eq!(s.pause, Duration::from_millis(70));
        assert!(!s.moved, "never bound before: the client gets its login answer, not sc_moved");
    }

    #[test]
    fn epochs_start_after_the_logins_base() {
        let (mut r, b) = Route::new(peer(1), 7 << 32, at(0));
        assert_eq!(b.epoch, (7 << 32) + 1);
        r.on_bound(b.epoch, at(1)).unwrap();
        r.begin_move(peer(2), b.epoch, at(2)).unwrap();
        assert!(r.on_released(b.epoch));
        assert_eq!(r.epoch(), (7 << 32) + 2);
    }

    #[test]
    fn rebind_is_only_possible_while_recovering() {
        let mut r = bound_to(peer(1));
        assert_eq!(r.begin_rebind(peer(2)), None);
        assert_eq!(r.target(), Some((peer(1), 1)));
    }
}
