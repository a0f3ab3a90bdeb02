//! The manager's metrics: counters of logins, logouts, redirects and lease lapses, and the
//! callback gauges of logged-in accounts and the lease. Every public operation that counts
//! runs through [`AccountManager::counted`], which records its result once it is known.

use std::future::Future;
use std::sync::Arc;

use super::{AccountError, AccountManager, LoginOutcome, RedirectAccepted};
use crate::metrics::{Counter, CounterVec, Metrics};

/// Logins by `result` (`ok`, `already_logged_in`, `error`).
pub const METRIC_LOGINS: &str = "sandtable_account_logins_total";
/// Logouts of accounts logged in here.
pub const METRIC_LOGOUTS: &str = "sandtable_account_logouts_total";
/// Redirects by `result` (`issued` here, `accepted` or `rejected` here as the target).
pub const METRIC_REDIRECTS: &str = "sandtable_account_redirects_total";
/// Times the lease lapsed while links were open (they were all closed).
pub const METRIC_LEASE_LAPSES: &str = "sandtable_account_lease_lapses_total";
/// Accounts logged in on this server (callback gauge).
pub const METRIC_LOGGED_IN: &str = "sandtable_account_logged_in";
/// 1 while this server holds its coordination lease, else 0 (callback gauge).
pub const METRIC_LEASE_HELD: &str = "sandtable_account_lease_held";

/// Counters of an account manager with metrics attached.
pub(super) struct AccountMetrics {
    logins: CounterVec,
    logouts: Counter,
    redirects: CounterVec,
    pub(super) lease_lapses: Counter,
}

impl AccountMetrics {
    fn register(metrics: &Metrics) -> Self {
        AccountMetrics {
            logins: metrics.counter_vec(
                METRIC_LOGINS,
                "Account logins on this server, by result.",
                &["result"],
            ),
            logouts: metrics.counter(METRIC_LOGOUTS, "Account logouts on this server."),
            redirects: metrics.counter_vec(
                METRIC_REDIRECTS,
                "Client redirects issued and received, by result.",
                &["result"],
            ),
            lease_lapses: metrics.counter(
                METRIC_LEASE_LAPSES,
                "Times the coordination lease lapsed with accounts logged in (their links were closed).",
            ),
        }
    }

    pub(super) fn login(&self, r: &Result<LoginOutcome, AccountError>) {
        let result = match r {
            Ok(LoginOutcome::LoggedIn) => "ok",
            Ok(LoginOutcome::AlreadyLoggedIn { .. }) => "already_logged_in",
            Err(_) => "error",
        };
        self.logins.with(&[result]).inc();
    }

    /// Counts a logout that logged an account out.
    pub(super) fn logout(&self, r: &Result<bool, AccountError>) {
        if let Ok(true) = r {
            self.logouts.inc();
        }
    }

    pub(super) fn redirect_issued(&self, r: &Result<(), AccountError>) {
        if r.is_ok() {
            self.redirects.with(&["issued"]).inc();
        }
    }

    pub(super) fn redirect_received(&self, r: &Result<RedirectAccepted, AccountError>) {
        self.redirects.with(&[if r.is_ok() { "accepted" } else { "rejected" }]).inc();
    }
}

impl AccountManager {
    /// Starts counting logins, logouts, redirects and lease lapses in `metrics`, and
    /// registers the callback gauges of logged-in accounts and the lease (see the module's
    /// "Metrics"). Only the first call has an effect. The gauges hold the manager weakly.
    pub fn attach_metrics(&self, metrics: &Metrics) {
        if self.shared.metrics.set(AccountMetrics::register(metrics)).is_err() {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        metrics.register_gauge_fn(METRIC_LOGGED_IN, "Accounts logged in on this server.", move || {
            weak.upgrade().map_or(0.0, |s| s.st().links.len() as f64)
        });
        let weak = Arc::downgrade(&self.shared);
        metrics.register_gauge_fn(
            METRIC_LEASE_HELD,
            "1 while this server holds its coordination lease.",
            move || weak.upgrade().map_or(0.0, |s| if s.st().lease.is_valid(s.now()) { 1.0 } else { 0.0 }),
        );
    }

    /// Runs `op` and, with metrics attached, lets `count` record its result.
    pub(super) async fn counted<T>(
        &self,
        op: impl Future<Output = T>,
        count: impl FnOnce(&AccountMetrics, &T),
    ) -> T {
        let r = op.await;
        self.shared.count(|m| count(m, &r));
        r
    }
}
