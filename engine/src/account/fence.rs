//! The coordination lease: when this server may act for its logged-in accounts.
//!
//! Pure arithmetic on this node's monotonic clock; the manager feeds it the send time of
//! every read the service answered ([`Lease::renewed`]) and asks [`Lease::is_valid`] before
//! acting. The argument for why this fences logins is in the [module docs](super).

use std::time::Duration;

use crate::env::MonoTime;

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
}
