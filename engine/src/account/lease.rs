//! The coordination lease: when this server may act for its logged-in accounts.
//!
//! [`LeaseParams`] and [`Lease`] are pure arithmetic on this node's monotonic clock: the
//! manager feeds [`Lease::renewed`] the send time of every request the service answered and
//! asks [`Lease::is_valid`] before acting. The rest of the file drives them: the renewer (a
//! read every `T/6`; a new session after expiry), the on-demand renewal before a login, and
//! the watchdog that closes every link when the lease ends without a renewal. The argument
//! for why this fences logins is in the [module docs](super).
//!
//! Assertions (debug builds): the lease only extends within a session; a caller's session
//! epoch is never newer than the current one; the watchdog goes idle only with no link to
//! guard, and a link is only added while the watchdog is armed (sleeping until the lease
//! ends, or with a wake-up pending).

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::StreamExt;
use tracing::{debug, error, info, warn};

use super::{AccountError, Shared, CLOSE_COORDINATION_LOST, LOG_TARGET};
use crate::env::{Coord, MonoTime};

/// Renewals per session timeout: a read is issued every `T / RENEWALS_PER_TIMEOUT`.
pub const RENEWALS_PER_TIMEOUT: u32 = 6;

/// What a lease is derived from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseParams {
    /// The session timeout `T` the service granted (`Coord::negotiated_timeout`).
    pub session_timeout: Duration,
    /// Assumed bound `ρ` on this clock's rate error, in ppm.
    pub drift_ppm_max: u64,
    /// Subtracted from every lease (pause allowance).
    pub margin: Duration,
}

impl LeaseParams {
    /// `T·(1 − ρ) − margin`: how long after a request was *sent* the lease it earned lasts.
    /// Zero if the margin eats it all.
    pub fn length(&self) -> Duration {
        let t = self.session_timeout.as_nanos();
        let ppm = u128::from(self.drift_ppm_max.min(1_000_000));
        let scaled = t * (1_000_000 - ppm) / 1_000_000;
        let scaled = Duration::from_nanos(u64::try_from(scaled).unwrap_or(u64::MAX));
        scaled.saturating_sub(self.margin)
    }

    /// How often the manager renews: `T / 6`.
    pub fn renew_period(&self) -> Duration {
        self.session_timeout / RENEWALS_PER_TIMEOUT
    }

    /// A lease must outlive two renewal periods, or one slow round trip drops every account.
    pub fn check(&self) -> Result<(), String> {
        let (len, period) = (self.length(), self.renew_period());
        if len <= period * 2 {
            return Err(format!(
                "lease length {len:?} (session timeout {:?}, drift {} ppm, margin {:?}) must exceed two renewal \
                 periods ({period:?} each): lower lease_margin or raise the session timeout",
                self.session_timeout, self.drift_ppm_max, self.margin
            ));
        }
        Ok(())
    }
}

/// The lease of one ZooKeeper session. Starts (and restarts, for a new session) unheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lease {
    until: Option<MonoTime>,
}

impl Lease {
    /// Records that the service answered a request sent at `sent` (on this node's monotonic
    /// clock, read *before* sending). Only ever extends: an answer to an older request
    /// proves less than the newest one. Returns true if the lease moved.
    pub fn renewed(&mut self, sent: MonoTime, p: &LeaseParams) -> bool {
        let until = sent.saturating_add(p.length());
        if self.until.is_some_and(|u| u >= until) {
            return false;
        }
        debug_assert!(self.until < Some(until), "a renewal only extends the lease");
        self.until = Some(until);
        true
    }

    /// True while `now` is strictly before the end of the lease.
    pub fn is_valid(&self, now: MonoTime) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// When the lease ends (`None`: never held on this session).
    pub fn until(&self) -> Option<MonoTime> {
        self.until
    }
}

/// Most wake-ups of the watchdog pending at once. A wake-up only says "the lease was renewed
/// after it had lapsed: look at it again", and the watchdog reads the current lease when it
/// runs, so one pending wake-up stands for any number of renewals: at the limit a new one is
/// dropped as already pending.
pub(super) const WATCHDOG_WAKES_PENDING_MAX: usize = 1;

/// The watchdog's wake-up channel and what the watchdog is doing. Lives under the manager's
/// state lock, so "a wake-up is pending" and "the channel holds one" change together.
pub(super) struct Watchdog {
    wake: mpsc::Sender<()>,
    /// A wake-up was sent and not yet received.
    wake_pending: bool,
    /// Waiting for a wake-up: the lease had lapsed and every link was dropped.
    idle: bool,
}

impl Watchdog {
    /// The watchdog's state and the receiving end of its wake-up channel.
    pub(super) fn new() -> (Watchdog, mpsc::Receiver<()>) {
        // A futures channel holds `buffer` messages plus one per sender; there is one sender.
        let (wake, rx) = mpsc::channel(WATCHDOG_WAKES_PENDING_MAX - 1);
        (Watchdog { wake, wake_pending: false, idle: false }, rx)
    }

    /// Wakes the watchdog. A full channel means a wake-up is already pending; a closed one
    /// that the watchdog has stopped. Either way there is nothing more to do.
    fn wake(&mut self) {
        if let Err(e) = self.wake.try_send(()) {
            debug_assert!(e.is_full() || e.is_disconnected());
        }
        self.wake_pending = true;
    }

    /// True if a link may be open: the watchdog sleeps until the lease ends, or is about to
    /// wake up and do so.
    pub(super) fn armed(&self) -> bool {
        !self.idle || self.wake_pending
    }
}

impl Shared {
    /// True if this server may act for its accounts now. With `no_fencing` always true.
    pub(super) fn acting(&self, lease: &Lease, now: MonoTime) -> bool {
        self.cfg.bugs.no_fencing || lease.is_valid(now)
    }

    /// The service answered a request sent at `sent` on session `epoch`.
    pub(super) fn renewed(&self, epoch: u64, sent: MonoTime) {
        let mut st = self.st();
        debug_assert!(epoch <= st.epoch, "session epoch {epoch} is newer than the current {}", st.epoch);
        if st.epoch != epoch {
            return;
        }
        let was_valid = st.lease.is_valid(self.now());
        let (params, before) = (st.params, st.lease.until());
        if st.lease.renewed(sent, &params) && !was_valid {
            debug!(target: LOG_TARGET, node = %self.node(), until = ?st.lease.until(), "coordination lease acquired");
            st.watchdog.wake();
        }
        debug_assert!(st.lease.until() >= before, "the lease only extends within a session");
    }

    /// Makes sure the lease is held, renewing it with one read if needed.
    pub(super) async fn ensure_lease(&self) -> Result<(Arc<dyn Coord>, u64), AccountError> {
        let (coord, epoch) = self.current()?;
        if self.st().lease.is_valid(self.now()) {
            return Ok((coord, epoch));
        }
        let sent = self.now();
        match coord.exists(&self.accounts_path).await {
            Ok(_) => self.renewed(epoch, sent),
            Err(e) => {
                debug!(target: LOG_TARGET, node = %self.node(), error = %e, "lease renewal on demand failed");
                return Err(AccountError::CoordinationLost);
            }
        }
        let st = self.st();
        if st.epoch == epoch && st.lease.is_valid(self.now()) {
            Ok((coord, epoch))
        } else {
            Err(AccountError::CoordinationLost)
        }
    }

    /// Drops every local link if the lease has lapsed (no-op with `no_fencing`).
    fn lapse_if_due(&self) {
        if self.cfg.bugs.no_fencing {
            return;
        }
        let dropped = {
            let mut st = self.st();
            if st.lease.is_valid(self.now()) || st.links.is_empty() {
                return;
            }
            let links = st.links.take_all();
            st.dropped.extend(links.keys().cloned());
            links
        };
        self.count(|m| m.lease_lapses.inc());
        crate::probe!("account: lease lapsed with links open");
        warn!(target: LOG_TARGET, node = %self.node(), accounts = dropped.len(),
            "coordination lease lapsed: closing every local link");
        for (account, link) in dropped {
            debug!(target: LOG_TARGET, node = %self.node(), account, "link closed: coordination lost");
            link.close(CLOSE_COORDINATION_LOST);
        }
    }

    /// Opens a new session after expiry (retrying until it works or the manager stops).
    async fn new_session(&self) {
        let links = {
            let mut st = self.st();
            st.lease = Lease::default();
            st.links.take_all()
        };
        if !links.is_empty() {
            if self.cfg.bugs.no_fencing {
                warn!(target: LOG_TARGET, node = %self.node(), accounts = links.len(),
                    "session expired: closing links (no_fencing)");
            } else {
                error!(target: LOG_TARGET, node = %self.node(), accounts = links.len(),
                    "session expired while links were open: the fencing assumptions were violated");
            }
        }
        for link in links.values() {
            link.close("coordination session expired");
        }
        let mut attempt = 0u32;
        loop {
            if self.st().stopped {
                return;
            }
            if attempt > 0 {
                self.env.clock.sleep(self.backoff(attempt)).await;
            }
            attempt = attempt.saturating_add(1);
            let coord = match self.env.coord.connect(self.cfg.session).await {
                Ok(c) => c,
                Err(e) => {
                    info!(target: LOG_TARGET, node = %self.node(), error = %e, attempt,
                        "account manager: new session failed");
                    continue;
                }
            };
            if let Err(e) = self.ensure_dirs(&*coord).await {
                info!(target: LOG_TARGET, node = %self.node(), error = %e, "account manager: new session unusable");
                coord.close().await;
                continue;
            }
            let installed = {
                let mut st = self.st();
                if !st.stopped {
                    st.params.session_timeout = coord.negotiated_timeout();
                    st.coord = coord.clone();
                    let before = st.epoch;
                    st.epoch += 1;
                    debug_assert!(st.epoch > before, "the session epoch only grows");
                    st.lease = Lease::default();
                    st.dropped.clear(); // the old session's ephemerals are gone with it
                    info!(target: LOG_TARGET, node = %self.node(), epoch = st.epoch,
                        "account manager: new coordination session");
                }
                !st.stopped
            };
            if !installed {
                coord.close().await;
            }
            return;
        }
    }

    /// Renews the lease every `T/6`; on expiry opens a new session; cleans up dropped accounts.
    pub(super) async fn renew_loop(self: Arc<Self>) {
        loop {
            let Ok((coord, epoch)) = self.current() else { return };
            let period = self.st().params.renew_period();
            let sent = self.now();
            match coord.exists(&self.accounts_path).await {
                Ok(_) => {
                    self.renewed(epoch, sent);
                    if !self.st().dropped.is_empty() {
                        self.cleanup_dropped().await;
                    }
                }
                Err(crate::env::CoordError::SessionExpired | crate::env::CoordError::Closed) => {
                    if self.st().stopped {
                        return;
                    }
                    crate::probe!("account: coordination session expired");
                    info!(target: LOG_TARGET, node = %self.node(), "account manager: session expired");
                    self.new_session().await;
                    continue;
                }
                Err(e) => debug!(target: LOG_TARGET, node = %self.node(), error = %e, "lease renewal failed"),
            }
            self.env.clock.sleep_until(sent.saturating_add(period)).await;
        }
    }

    /// Wakes when the lease ends and drops the links if it was not extended; then waits idle
    /// for a wake-up (the lease renewed after lapsing).
    pub(super) async fn watchdog(self: Arc<Self>, mut wake: mpsc::Receiver<()>) {
        loop {
            if self.st().stopped {
                return;
            }
            let until = self.st().lease.until();
            match until {
                Some(u) if self.now() < u => self.env.clock.sleep_until(u).await,
                _ => {
                    self.lapse_if_due();
                    {
                        let mut st = self.st();
                        debug_assert!(
                            self.cfg.bugs.no_fencing || st.links.is_empty() || st.watchdog.wake_pending,
                            "the watchdog goes idle with links open and no wake-up pending"
                        );
                        st.watchdog.idle = true;
                    }
                    let woke = wake.next().await;
                    let mut st = self.st();
                    // Wake-ups are only sent under this lock: drained here, none is pending.
                    while wake.try_recv().is_ok() {}
                    st.watchdog.idle = false;
                    st.watchdog.wake_pending = false;
                    if woke.is_none() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> MonoTime {
        MonoTime::from_nanos(n * 1_000_000)
    }

    fn params() -> LeaseParams {
        LeaseParams {
            session_timeout: Duration::from_secs(10),
            drift_ppm_max: 50_000,
            margin: Duration::from_millis(500),
        }
    }

    #[test]
    fn length_is_timeout_less_drift_less_margin() {
        let p = params();
        assert_eq!(p.length(), Duration::from_millis(9_000)); // 10 s · 0.95 − 0.5 s
        assert_eq!(p.renew_period(), Duration::from_millis(1_666) + Duration::from_nanos(666_666));
        assert!(p.check().is_ok());
        let no_drift = LeaseParams { drift_ppm_max: 0, margin: Duration::ZERO, ..p };
        assert_eq!(no_drift.length(), Duration::from_secs(10));
        let eaten = LeaseParams { margin: Duration::from_secs(20), ..p };
        assert_eq!(eaten.length(), Duration::ZERO);
        assert!(eaten.check().is_err());
        let tight = LeaseParams { margin: Duration::from_millis(6_200), ..p };
        assert!(tight.check().is_err(), "3.3 s lease < two 1.67 s periods");
    }

    #[test]
    fn lease_only_extends_and_ends_strictly() {
        let p = params();
        let mut l = Lease::default();
        assert!(!l.is_valid(ms(0)));
        assert!(l.renewed(ms(1_000), &p));
        assert_eq!(l.until(), Some(ms(10_000)));
        assert!(l.is_valid(ms(9_999)));
        assert!(!l.is_valid(ms(10_000)));
        // A late answer to an earlier request does not move it back.
        assert!(!l.renewed(ms(500), &p));
        assert_eq!(l.until(), Some(ms(10_000)));
        assert!(l.renewed(ms(2_000), &p));
        assert_eq!(l.until(), Some(ms(11_000)));
    }

    /// The fencing inequality, in numbers: with the clock running slow by the full ρ the
    /// lease still ends (in true time) before the service's earliest possible expiry.
    #[test]
    fn lease_ends_before_service_expiry_at_max_drift() {
        let p = params();
        let t_send_true_ms = 1_000.0;
        // A slow clock (rate 1 − ρ) needs length / (1 − ρ) of true time to count `length`.
        let rate = 1.0 - p.drift_ppm_max as f64 / 1e6;
        let lease_end_true_ms = t_send_true_ms + p.length().as_secs_f64() * 1e3 / rate;
        let expiry_earliest_ms = t_send_true_ms + p.session_timeout.as_secs_f64() * 1e3;
        assert!(lease_end_true_ms < expiry_earliest_ms, "{lease_end_true_ms} < {expiry_earliest_ms}");
        // Without the margin it is exactly at the limit; the margin is the pause allowance.
        let slack_ms = expiry_earliest_ms - lease_end_true_ms;
        assert!(slack_ms >= p.margin.as_secs_f64() * 1e3 - 1e-6);
    }

    proptest::proptest! {
        /// Whatever order answers arrive in, the lease ends at the newest send time plus one
        /// length: an older answer never moves it back.
        #[test]
        fn the_lease_ends_one_length_after_the_newest_answered_send(
            sends in proptest::collection::vec(0u64..100_000, 1..20),
        ) {
            let p = params();
            let mut l = Lease::default();
            let mut newest = 0;
            for (i, &at) in sends.iter().enumerate() {
                let before = l.until();
                let moved = l.renewed(ms(at), &p);
                newest = if i == 0 { at } else { newest.max(at) };
                proptest::prop_assert!(l.until() >= before);
                proptest::prop_assert_eq!(moved, l.until() != before);
                proptest::prop_assert_eq!(l.until(), Some(ms(newest).saturating_add(p.length())));
            }
        }

        /// The fencing inequality in integers, for any timeout, drift bound and non-zero
        /// margin: a clock running slow by the full ρ counts the lease length in
        /// `length / (1 − ρ)` true time, strictly less than the session timeout.
        #[test]
        fn the_lease_ends_strictly_before_the_service_can_expire_the_session(
            timeout_ms in 1u64..120_000,
            drift_ppm_max in 0u64..=super::super::DRIFT_PPM_LIMIT,
            margin_ns in 1u64..2_000_000_000,
        ) {
            let p = LeaseParams {
                session_timeout: Duration::from_millis(timeout_ms),
                drift_ppm_max,
                margin: Duration::from_nanos(margin_ns),
            };
            let length_ns = p.length().as_nanos();
            let timeout_ns = p.session_timeout.as_nanos();
            // length / (1 − ρ) < T  ⇔  length · 10⁶ < T · (10⁶ − ppm)
            proptest::prop_assert!(length_ns * 1_000_000 < timeout_ns * u128::from(1_000_000 - drift_ppm_max));
        }
    }

    #[test]
    fn a_full_wake_channel_means_a_wake_up_is_already_pending() {
        let (mut w, mut rx) = Watchdog::new();
        assert!(w.armed(), "a new watchdog is not idle");
        w.idle = true;
        assert!(!w.armed());
        w.wake();
        w.wake(); // dropped: one is pending
        assert!(w.armed(), "idle with a wake-up pending");
        assert_eq!(rx.try_recv().ok(), Some(()));
        assert!(rx.try_recv().is_err(), "only one wake-up was queued");
        w.wake();
        assert_eq!(rx.try_recv().ok(), Some(()), "room again once the pending one was taken");
    }

    #[test]
    fn waking_a_stopped_watchdog_is_harmless() {
        let (mut w, rx) = Watchdog::new();
        drop(rx);
        w.wake();
        assert!(w.wake_pending);
    }
}
