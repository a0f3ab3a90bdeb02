//! Acting intervals: when each server *acted* for an account, and the check that two logins
//! of one account never act at the same time (the fencing invariant of the account manager).
//!
//! A **login instance** is one account logged in on one connection (`link`) of one server
//! incarnation (`server`, a process id). The game server reports the instant of the login
//! and every tick it sends the account (see [`game::GameObserver`]); both are taken in
//! true simulated time, at the instant the server decided (no await between its lease check
//! and the report). The instance's acting interval runs from its login to its last tick. A
//! killed server simply stops reporting, so its interval ends at its last act: exactly when
//! it stopped acting.
//!
//! Invariant: for every account, the intervals of different instances are disjoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use game::GameObserver;

use crate::checker::Report;
use crate::evidence::{Evidence, EvidenceTap};
use crate::history::{ProcessId, TimeSource};
use crate::roles::LatestActor;

/// One login instance: (server incarnation, link id).
pub type Instance = (ProcessId, String);

/// First and last act of an instance, true ns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start_ns: u64,
    pub end_ns: u64,
    /// Ticks sent in it.
    pub ticks: u64,
}

/// Everything the servers of one run reported. Shared by all nodes of the run.
#[derive(Clone, Default)]
pub struct ActLog {
    inner: Arc<Mutex<BTreeMap<String, BTreeMap<Instance, Interval>>>>,
    /// The server incarnation that acted last (for faults aimed at it).
    actors: LatestActor,
}

impl ActLog {
    fn record(&self, account: &str, inst: Instance, t: u64, tick: bool) {
        let server = inst.0;
        let mut m = engine::env::lock(&self.inner);
        let iv = m.entry(account.to_string()).or_default().entry(inst).or_insert(Interval {
            start_ns: t,
            end_ns: t,
            ticks: 0,
        });
        iv.start_ns = iv.start_ns.min(t);
        iv.end_ns = iv.end_ns.max(t);
        iv.ticks += u64::from(tick);
        drop(m);
        self.actors.acted(server);
    }

    /// The servers and which one reported the latest act (a login or a tick).
    pub fn actors(&self) -> &LatestActor {
        &self.actors
    }

    /// The observer a server incarnation `server` reports through; each report also goes to
    /// `tap` (see [`crate::ServerCtx::tap`]).
    pub fn observer(
        &self,
        server: ProcessId,
        now: TimeSource,
        tap: Option<EvidenceTap>,
    ) -> Arc<dyn GameObserver> {
        Arc::new(Observer { log: self.clone(), server, now, tap })
    }

    /// Takes an act reported by an out-of-process server; `false` for other evidence.
    pub fn absorb(&self, evidence: &Evidence) -> bool {
        match evidence {
            Evidence::Act { account, server, link, t_ns, tick } => {
                self.record(account, (*server, link.clone()), *t_ns, *tick);
                true
            }
            Evidence::WallRead { .. }
            | Evidence::ObjectAct { .. }
            | Evidence::PackExecuting { .. }
            | Evidence::PackExecuted { .. }
            | Evidence::GateHandling { .. }
            | Evidence::PeerRegistered { .. }
            | Evidence::PeerPublished { .. }
            | Evidence::PeerView { .. }
            | Evidence::RpcInvoked { .. }
            | Evidence::RpcCompleted { .. }
            | Evidence::RpcHandled { .. }
            | Evidence::RpcBeats { .. }
            | Evidence::SqlInvoked { .. }
            | Evidence::SqlCompleted { .. } => false,
        }
    }

    /// account -> instance -> interval.
    pub fn snapshot(&self) -> BTreeMap<String, BTreeMap<Instance, Interval>> {
        engine::env::lock(&self.inner).clone()
    }

    /// Records an interval directly (checker tests).
    pub fn insert(&self, account: &str, inst: Instance, iv: Interval) {
        engine::env::lock(&self.inner).entry(account.to_string()).or_default().insert(inst, iv);
    }
}

struct Observer {
    log: ActLog,
    server: ProcessId,
    now: TimeSource,
    tap: Option<EvidenceTap>,
}

impl Observer {
    fn report(&self, account: &str, link: &str, tick: bool) {
        let t_ns = (self.now)();
        self.log.record(account, (self.server, link.to_string()), t_ns, tick);
        if let Some(tap) = &self.tap {
            tap(&Evidence::Act {
                account: account.into(),
                server: self.server,
                link: link.into(),
                t_ns,
                tick,
            });
        }
    }
}

impl GameObserver for Observer {
    fn logged_in(&self, account: &str, link: &str) {
        self.report(account, link, false);
    }
    fn acted(&self, account: &str, link: &str) {
        self.report(account, link, true);
    }
}

/// Checks that no two instances of an account act at overlapping times. Counters:
/// `login_instances`, `ticks`, `max_instances_per_account`.
pub fn check_acting(log: &BTreeMap<String, BTreeMap<Instance, Interval>>) -> Report {
    let mut report = Report::default();
    for (account, instances) in log {
        report.count("login_instances", instances.len() as u64);
        report.count_max("max_instances_per_account", instances.len() as u64);
        let mut ivs: Vec<(&Instance, &Interval)> = instances.iter().collect();
        ivs.sort_by_key(|(inst, iv)| (iv.start_ns, iv.end_ns, (*inst).clone()));
        // The instance whose interval reaches furthest so far.
        let mut reach: Option<(&Instance, &Interval)> = None;
        for (inst, iv) in ivs {
            report.count("ticks", iv.ticks);
            if let Some((pinst, piv)) = reach {
                if iv.start_ns < piv.end_ns {
                    report.violation(
                        "acting",
                        format!(
                            "account {account}: server process {} (link {}) acted {:.3}s..{:.3}s while server process {} (link {}) acted {:.3}s..{:.3}s",
                            inst.0, inst.1, secs(iv.start_ns), secs(iv.end_ns),
                            pinst.0, pinst.1, secs(piv.start_ns), secs(piv.end_ns),
                        ),
                    );
                }
                if iv.end_ns > piv.end_ns {
                    reach = Some((inst, iv));
                }
            } else {
                reach = Some((inst, iv));
            }
        }
    }
    report
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(s: u64, e: u64) -> Interval {
        Interval { start_ns: s, end_ns: e, ticks: 1 }
    }

    #[test]
    fn disjoint_intervals_pass() {
        let log = ActLog::default();
        log.insert("a", (1, "l1".into()), iv(0, 10));
        log.insert("a", (2, "l2".into()), iv(11, 20));
        log.insert("a", (1, "l3".into()), iv(25, 30));
        log.insert("b", (2, "l4".into()), iv(0, 30));
        let r = check_acting(&log.snapshot());
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(r.counters["login_instances"], 4);
    }

    #[test]
    fn overlap_is_caught_even_behind_a_short_interval() {
        let log = ActLog::default();
        log.insert("a", (1, "l1".into()), iv(0, 100));
        log.insert("a", (2, "l2".into()), iv(10, 20));
        log.insert("a", (3, "l3".into()), iv(30, 40));
        let r = check_acting(&log.snapshot());
        assert_eq!(r.violations.len(), 2, "{:?}", r.violations);
    }

    #[test]
    fn observer_reports_extend_intervals() {
        let log = ActLog::default();
        let t = Arc::new(std::sync::atomic::AtomicU64::new(5));
        let t2 = t.clone();
        let now: TimeSource = Arc::new(move || t2.load(std::sync::atomic::Ordering::SeqCst));
        let tapped = Arc::new(Mutex::new(Vec::new()));
        let t3 = tapped.clone();
        let tap: EvidenceTap = Arc::new(move |e: &Evidence| t3.lock().expect("lock").push(e.clone()));
        let o = log.observer(7, now, Some(tap));
        o.logged_in("a", "l");
        t.store(9, std::sync::atomic::Ordering::SeqCst);
        o.acted("a", "l");
        let want = Interval { start_ns: 5, end_ns: 9, ticks: 1 };
        assert_eq!(log.snapshot()["a"][&(7, "l".to_string())], want);
        // The tapped reports, absorbed by another process's log, give the same interval.
        let other = ActLog::default();
        let tapped = tapped.lock().expect("lock").clone();
        assert_eq!(tapped.len(), 2);
        for e in &tapped {
            assert!(other.absorb(e));
        }
        assert_eq!(other.snapshot(), log.snapshot());
        assert!(!other.absorb(&Evidence::WallRead { wall_ms: 1, t_ns: 1 }));
    }
}
