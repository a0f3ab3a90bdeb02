//! The invariants of `broadcast` (numbered as in the module documentation), one function per
//! rule, over a [`BroadcastHistory`] indexed once ([`Index`]). [`check_broadcast`] runs the
//! safety rules 1–4 and the coverage counters; rule 5 ([`check_liveness`]) is run apart by
//! the scenario.
//!
//! Each rule shows its first [`SHOWN_PER_CHECKER`] violations and counts the rest
//! (`violations.<checker>`).

use std::collections::{BTreeMap, BTreeSet};

use super::history::{BOp, BroadcastHistory, LoginState, Receipt, Received, Scope, SessionKey, SessionRec};
use super::{DELIVERY_BOUND, SETTLE, VIEW_MARGIN};
use crate::checker::{liveness_after_heal, Report};
use crate::history::{Outcome, ProcessId};
use crate::scenario::Phases;

/// Violations shown per checker; the rest are only counted (`violations.<checker>`).
pub const SHOWN_PER_CHECKER: u64 = 20;

/// What an invoked message operation was.
pub struct Sent<'a> {
    pub op_id: usize,
    pub process: ProcessId,
    /// The sender's account (`""` if its session is unknown).
    pub from: &'a str,
    pub server: &'a str,
    /// `None` for a send.
    pub scope: Option<Scope>,
    /// The addressee of a send.
    pub to: Option<&'a str>,
    pub invoke_ns: u64,
}

/// A receipt of a broadcast or a message (not a tick or another frame).
struct Delivery<'a> {
    kind: &'static str,
    id: &'a str,
    from: &'a str,
}

fn delivery(r: &Receipt) -> Option<Delivery<'_>> {
    match &r.what {
        Received::Broadcast { id, from } => Some(Delivery { kind: "broadcast", id, from }),
        Received::Message { id, from } => Some(Delivery { kind: "message", id, from }),
        Received::Tick { .. } | Received::Other { .. } => None,
    }
}

/// How messages name a receipt.
fn at(key: &SessionKey, r: &Receipt) -> String {
    format!("process {} session {} frame {} (t={:.3}s)", key.0, key.1, r.seq, secs(r.at_ns))
}

/// The history, indexed for the rules.
pub struct Index<'a> {
    pub sessions: BTreeMap<SessionKey, &'a SessionRec>,
    /// Every session's receipts in frame order.
    pub by_session: BTreeMap<SessionKey, Vec<&'a Receipt>>,
    /// Every message operation by id.
    pub sent: BTreeMap<&'a str, Sent<'a>>,
}

impl<'a> Index<'a> {
    /// Indexes `h`; a message id invoked twice is a workload bug, reported in the returned
    /// report (checker `workload`).
    pub fn new(h: &'a BroadcastHistory) -> (Index<'a>, Report) {
        let sessions: BTreeMap<SessionKey, &SessionRec> = h.sessions.iter().map(|s| (s.key(), s)).collect();
        let mut by_session: BTreeMap<SessionKey, Vec<&Receipt>> = BTreeMap::new();
        for r in &h.receipts {
            by_session.entry(r.key()).or_default().push(r);
        }
        for rs in by_session.values_mut() {
            rs.sort_by_key(|r| r.seq);
        }
        let from_of = |process: ProcessId, session: u32| {
            sessions.get(&(process, session)).map_or("", |s: &&SessionRec| s.account.as_str())
        };
        let mut flags = Flags::default();
        let mut sent: BTreeMap<&str, Sent<'_>> = BTreeMap::new();
        for op in &h.ops.ops {
            let (id, s) = match &op.op {
                BOp::Broadcast { server, session, scope, id } => (
                    id,
                    Sent {
                        op_id: op.id,
                        process: op.process,
                        from: from_of(op.process, *session),
                        server,
                        scope: Some(*scope),
                        to: None,
                        invoke_ns: op.invoke_ns,
                    },
                ),
                BOp::Send { server, session, to, id } => (
                    id,
                    Sent {
                        op_id: op.id,
                        process: op.process,
                        from: from_of(op.process, *session),
                        server,
                        scope: None,
                        to: Some(to),
                        invoke_ns: op.invoke_ns,
                    },
                ),
                BOp::Login { .. } | BOp::Logout { .. } => continue,
            };
            if let Some(prev) = sent.insert(id.as_str(), s) {
                flags.flag(
                    "workload",
                    format!("message id {id} invoked twice (ops {} and {})", prev.op_id, op.id),
                );
            }
        }
        (Index { sessions, by_session, sent }, flags.into_report())
    }
}

/// Collects violations, showing the first [`SHOWN_PER_CHECKER`] of each checker.
#[derive(Default)]
struct Flags {
    shown: Vec<(String, String)>,
    counts: BTreeMap<String, u64>,
}

impl Flags {
    fn flag(&mut self, checker: &str, msg: impl Into<String>) {
        let n = self.counts.entry(checker.to_string()).or_default();
        *n += 1;
        if *n <= SHOWN_PER_CHECKER {
            self.shown.push((checker.to_string(), msg.into()));
        }
    }

    fn into_report(self) -> Report {
        let mut report = Report::default();
        for (checker, msg) in self.shown {
            report.violation(&checker, msg);
        }
        for (checker, n) in self.counts {
            report.count(&format!("violations.{checker}"), n);
            if n > SHOWN_PER_CHECKER {
                report.violation(&checker, format!("... and {} more", n - SHOWN_PER_CHECKER));
            }
        }
        report
    }
}

/// Rule 1, **no duplicates**: a session receives a message id at most once, and a
/// send-to-account id is received at most once by anyone.
pub fn check_no_duplicates(ix: &Index) -> Report {
    let mut flags = Flags::default();
    let mut send_receivers: BTreeMap<&str, Vec<SessionKey>> = BTreeMap::new();
    for (key, rs) in &ix.by_session {
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for r in rs {
            let Some(d) = delivery(r) else { continue };
            if !seen.insert(d.id) {
                flags.flag(
                    "duplicate",
                    format!("{}: {} {} received again on the same session", at(key, r), d.kind, d.id),
                );
            }
            if ix.sent.get(d.id).is_some_and(|s| s.scope.is_none()) {
                send_receivers.entry(d.id).or_default().push(*key);
            }
        }
    }
    for (id, keys) in &send_receivers {
        if keys.len() > 1 {
            flags
                .flag("duplicate", format!("message {id} received {} times (sessions {keys:?})", keys.len()));
        }
    }
    flags.into_report()
}

/// Rule 2, **logged-in only**: nothing (broadcast, message or tick) arrives on a session
/// before its login reply or after its logout reply, nor on a session whose login was
/// refused (nor on a session the history does not know).
pub fn check_logged_in_only(ix: &Index) -> Report {
    let mut flags = Flags::default();
    for (key, rs) in &ix.by_session {
        let sess = ix.sessions.get(key);
        for r in rs {
            let what = match &r.what {
                Received::Broadcast { id, .. } => format!("broadcast {id}"),
                Received::Message { id, .. } => format!("message {id}"),
                Received::Tick { .. } => "a tick".to_string(),
                // Replies that came too late, `_error`s: not checked.
                Received::Other { .. } => continue,
            };
            let at = at(key, r);
            match sess.map(|s| (s.login, s.logout_reply)) {
                None => flags.flag("logged_in", format!("{at}: {what} on an unrecorded session")),
                Some((LoginState::Refused, _)) => {
                    flags.flag("logged_in", format!("{at}: {what} on a session whose login was refused"))
                }
                Some((LoginState::Ok { seq, .. }, _)) if r.seq < seq => {
                    flags.flag("logged_in", format!("{at}: {what} before the login reply (frame {seq})"))
                }
                Some((_, Some((t, seq)))) if r.seq > seq => flags.flag(
                    "logged_in",
                    format!("{at}: {what} after the logout reply (frame {seq}, t={:.3}s)", secs(t)),
                ),
                _ => {}
            }
        }
    }
    flags.into_report()
}

/// Rule 3, **completeness**, precisely. Let `B` be a broadcast invoked at
/// `inv ≥ heal + SETTLE` that completed ok at `ok` (the broadcaster got
/// `sc_broadcast {error: false}`), by a session on server `X`. A session `R` is *proven
/// logged in throughout `B`* if
/// - `R`'s login reply arrived before `inv` (so the server had logged it in before `B` was
///   invoked), `VIEW_MARGIN` before if `B` is global and `R` is on another server than `X`;
/// - `R` is on `X` if `B` is local (any game server if global);
/// - `R` received an `sc_tick` at or after `ok + DELIVERY_BOUND`, before any logout reply.
///   A tick is sent only to a link still logged in on a server holding its lease, and a
///   session's link is never logged in again once dropped (the client sends one login per
///   connection), so `R` was logged in, on the same server incarnation, from before `inv` to
///   that tick's sending, which (the bound exceeding any healed one-way latency) came after
///   every delivery of `B`: the server delivers locally and remote servers answer `B`'s RPC
///   only after delivering, all before `ok`. On one connection frames arrive in order, so
///   `B` had to arrive before that tick.
///
/// Then `R` must have received `B`. A send is treated alike, for the sessions of its
/// addressee's account (with the margin whenever they are on another server than the
/// sender's: the sender locates them through ZooKeeper). Counters `completeness.*` give how
/// many (session, operation) pairs were checked.
///
/// A safety rule despite its "after the heal": a miss it reports is a message proven lost
/// (a later frame of the same connection arrived), not one that is merely late.
pub fn check_completeness(h: &BroadcastHistory, ix: &Index, phases: &Phases) -> Report {
    let mut flags = Flags::default();
    let from_ns = (phases.heal_at + SETTLE).as_nanos() as u64;
    let bound = DELIVERY_BOUND.as_nanos() as u64;
    let margin = VIEW_MARGIN.as_nanos() as u64;
    // Per logged-in session: (login reply time, ticks' arrival times before any logout reply).
    let proofs: Vec<(&SessionRec, u64, Vec<u64>)> = h
        .sessions
        .iter()
        .filter_map(|s| {
            let LoginState::Ok { at_ns, seq: _ } = s.login else { return None };
            let last = s.logout_reply.map_or(u64::MAX, |(_, seq)| seq);
            let ticks = ix
                .by_session
                .get(&s.key())
                .map(|rs| {
                    rs.iter()
                        .filter(|r| matches!(r.what, Received::Tick { .. }) && r.seq < last)
                        .map(|r| r.at_ns)
                        .collect()
                })
                .unwrap_or_default();
            Some((s, at_ns, ticks))
        })
        .collect();
    let received: BTreeSet<(SessionKey, &str)> =
        h.receipts.iter().filter_map(|r| delivery(r).map(|d| (r.key(), d.id))).collect();
    let (mut pairs_b, mut pairs_s, mut ops_checked) = (0u64, 0u64, 0u64);
    for op in &h.ops.ops {
        let (server, scope, to, id) = match &op.op {
            BOp::Broadcast { server, scope, id, .. } => (server, Some(*scope), None, id),
            BOp::Send { server, to, id, .. } => (server, None, Some(to), id),
            _ => continue,
        };
        let Some((ok_ns, Outcome::Ok(_))) = &op.completion else { continue };
        if op.invoke_ns < from_ns {
            continue;
        }
        ops_checked += 1;
        let deadline = ok_ns + bound;
        for (r, login_ns, ticks) in &proofs {
            let same_server = r.server == *server;
            let in_scope = match (scope, to) {
                (Some(Scope::Local), _) => same_server,
                (Some(Scope::Global), _) => true,
                (None, Some(to)) => r.account == *to,
                (None, None) => false,
            };
            let need_before = if same_server || scope == Some(Scope::Local) { 0 } else { margin };
            if !in_scope
                || login_ns.saturating_add(need_before) >= op.invoke_ns
                || !ticks.iter().any(|&t| t >= deadline)
            {
                continue;
            }
            if scope.is_some() {
                pairs_b += 1;
            } else {
                pairs_s += 1;
            }
            if !received.contains(&(r.key(), id.as_str())) {
                flags.flag(
                    "completeness",
                    format!(
                        "{} {id} (op {}, process {}, on {server}, t={:.3}..{:.3}s) never reached process {} session {} ({} on {}, logged in at {:.3}s, ticked until {:.3}s)",
                        scope.map_or("message", Scope::wire),
                        op.id,
                        op.process,
                        secs(op.invoke_ns),
                        secs(*ok_ns),
                        r.process,
                        r.ordinal,
                        r.account,
                        r.server,
                        secs(*login_ns),
                        secs(ticks.iter().copied().max().unwrap_or(0)),
                    ),
                );
            }
        }
    }
    let mut report = flags.into_report();
    report.count("completeness.ops_checked", ops_checked);
    report.count("completeness.broadcast_pairs", pairs_b);
    report.count("completeness.send_pairs", pairs_s);
    report
}

/// Rule 4, **no phantoms**: every received message matches an invoked operation: same kind,
/// same sender account, the addressee's account for a send, the broadcaster's server for a
/// local broadcast, and not before its invocation.
pub fn check_no_phantoms(ix: &Index) -> Report {
    let mut flags = Flags::default();
    for (key, rs) in &ix.by_session {
        let sess = ix.sessions.get(key);
        for r in rs {
            let Some(d) = delivery(r) else { continue };
            let at = at(key, r);
            let what = format!("{} {}", d.kind, d.id);
            let Some(s) = ix.sent.get(d.id) else {
                flags.flag("phantom", format!("{at}: {what} was never invoked"));
                continue;
            };
            let mut wrong = Vec::new();
            if (d.kind == "broadcast") != s.scope.is_some() {
                wrong.push("kind".to_string());
            }
            if d.from != s.from {
                wrong.push(format!("from {:?} (sent by {:?})", d.from, s.from));
            }
            if r.at_ns < s.invoke_ns {
                wrong.push(format!("arrived before its invocation at {:.3}s", secs(s.invoke_ns)));
            }
            if let Some(sess) = sess {
                if let Some(to) = s.to {
                    if sess.account != to {
                        wrong.push(format!("received by {} (sent to {to})", sess.account));
                    }
                }
                if s.scope == Some(Scope::Local) && sess.server != s.server {
                    wrong.push(format!("local broadcast of {} received on {}", s.server, sess.server));
                }
            }
            if !wrong.is_empty() {
                flags.flag(
                    "phantom",
                    format!(
                        "{at}: {what} does not match op {} (process {}): {}",
                        s.op_id,
                        s.process,
                        wrong.join("; ")
                    ),
                );
            }
        }
    }
    flags.into_report()
}

/// Rule 5, **liveness**: after the heal every client completes an operation within the bound.
pub fn check_liveness(h: &BroadcastHistory, phases: &Phases) -> Report {
    liveness_after_heal(&h.ops, phases, |_| true)
}

/// Coverage: operations by kind and outcome, receipts by kind, sessions and refusals.
fn coverage(h: &BroadcastHistory) -> Report {
    let mut report = Report::default();
    for op in &h.ops.ops {
        let outcome = match &op.completion {
            Some((_, Outcome::Ok(_))) => "ok",
            Some((_, Outcome::Fail)) => "fail",
            _ => "info",
        };
        let name = match &op.op {
            BOp::Broadcast { scope: Scope::Local, .. } => "broadcast_local",
            BOp::Broadcast { scope: Scope::Global, .. } => "broadcast_global",
            BOp::Send { .. } => "send",
            BOp::Login { .. } => "login",
            BOp::Logout { .. } => "logout",
        };
        report.count(&format!("broadcast.{name}_{outcome}"), 1);
    }
    for r in &h.receipts {
        let kind = match &r.what {
            Received::Broadcast { .. } => "broadcast".to_string(),
            Received::Message { .. } => "message".to_string(),
            Received::Tick { .. } => "tick".to_string(),
            Received::Other { msg_type } => format!("other_{}", msg_type.trim_start_matches('_')),
        };
        report.count(&format!("broadcast.received_{kind}"), 1);
    }
    for s in &h.sessions {
        if let Some(why) = &s.refusal {
            let name: String = why
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
                .collect();
            report.count(&format!("broadcast.login_refused_{name}"), 1);
        }
    }
    report.count("broadcast.sessions", h.sessions.len() as u64);
    report.count(
        "broadcast.sessions_refused",
        h.sessions.iter().filter(|s| s.login == LoginState::Refused).count() as u64,
    );
    report.count("ops", h.ops.ops.len() as u64);
    report
}

/// The safety rules 1–4 of the scenario, with coverage counters (rule 5, liveness, is
/// [`check_liveness`]).
pub fn check_broadcast(h: &BroadcastHistory, phases: &Phases) -> Report {
    let (ix, mut report) = Index::new(h);
    report.merge(check_no_duplicates(&ix));
    report.merge(check_logged_in_only(&ix));
    report.merge(check_completeness(h, &ix, phases));
    report.merge(check_no_phantoms(&ix));
    report.merge(coverage(h));
    report
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::history::BRes;
    use super::*;
    use crate::history::Operation;

    const S: u64 = 1_000_000_000;

    fn phases() -> Phases {
        Phases {
            now: Arc::new(|| 0),
            heal_at: Duration::from_secs(20),
            end_at: Duration::from_secs(60),
            liveness_bound: Duration::from_secs(10),
        }
    }

    /// Builds histories: processes 1..=3 with accounts b1..b3, one session each.
    struct H(BroadcastHistory);

    impl H {
        fn new() -> H {
            H(BroadcastHistory::default())
        }
        fn session(mut self, p: ProcessId, server: &str, login: LoginState) -> H {
            self.0.sessions.push(SessionRec {
                process: p,
                ordinal: 1,
                server: server.into(),
                account: format!("b{p}"),
                connected_ns: 0,
                login,
                refusal: None,
                logout_invoked_ns: None,
                logout_reply: None,
                end: None,
            });
            self
        }
        fn logout(mut self, p: ProcessId, at: f64, seq: u64) -> H {
            let s = self.0.sessions.iter_mut().find(|s| s.process == p).unwrap();
            s.logout_invoked_ns = Some((at * 1e9) as u64 - 1);
            s.logout_reply = Some(((at * 1e9) as u64, seq));
            self
        }
        fn op(mut self, p: ProcessId, op: BOp, t: f64, done: f64, res: Option<BRes>) -> H {
            let id = self.0.ops.ops.len();
            let outcome = res.map_or(Outcome::Fail, Outcome::Ok);
            let completion = Some(((done * 1e9) as u64, outcome));
            self.0.ops.ops.push(Operation { id, process: p, op, invoke_ns: (t * 1e9) as u64, completion });
            self
        }
        fn broadcast(self, p: ProcessId, server: &str, scope: Scope, id: &str, t: f64) -> H {
            let op = BOp::Broadcast { server: server.into(), session: 1, scope, id: id.into() };
            self.op(p, op, t, t + 0.01, Some(BRes::Broadcast { delivered: 1 }))
        }
        fn send(self, p: ProcessId, server: &str, to: &str, id: &str, t: f64) -> H {
            let op = BOp::Send { server: server.into(), session: 1, to: to.into(), id: id.into() };
            self.op(p, op, t, t + 0.01, Some(BRes::Send { delivered: true }))
        }
        fn recv(mut self, p: ProcessId, seq: u64, t: f64, what: Received) -> H {
            self.0.receipts.push(Receipt { process: p, session: 1, seq, at_ns: (t * 1e9) as u64, what });
            self
        }
        fn bcast_msg(self, p: ProcessId, seq: u64, t: f64, id: &str, from: &str) -> H {
            self.recv(p, seq, t, Received::Broadcast { id: id.into(), from: from.into() })
        }
        fn tick(self, p: ProcessId, seq: u64, t: f64) -> H {
            self.recv(p, seq, t, Received::Tick { seq })
        }
        fn check(&self) -> Report {
            check_broadcast(&self.0, &phases())
        }
    }

    fn logged(seq: u64) -> LoginState {
        LoginState::Ok { at_ns: 25 * S, seq }
    }

    /// b1 on game-0 broadcasts globally at 30 s; b2 (game-1) and b1 get it; both tick after.
    fn good() -> H {
        H::new()
            .session(1, "game-0", logged(1))
            .session(2, "game-1", logged(1))
            .broadcast(1, "game-0", Scope::Global, "p1-1", 30.0)
            .send(1, "game-0", "b2", "p1-2", 31.0)
            .bcast_msg(1, 2, 30.005, "p1-1", "b1")
            .tick(1, 3, 32.0)
            .bcast_msg(2, 2, 30.006, "p1-1", "b1")
            .recv(2, 3, 31.005, Received::Message { id: "p1-2".into(), from: "b1".into() })
            .tick(2, 4, 33.0)
    }

    fn violations_of(r: &Report, checker: &str) -> usize {
        r.violations.iter().filter(|v| v.checker == checker).count()
    }

    #[test]
    fn good_history_passes_and_counts_pairs() {
        let r = good().check();
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(r.counter("completeness.broadcast_pairs"), 2);
        assert_eq!(r.counter("completeness.send_pairs"), 1);
    }

    #[test]
    fn rule1_duplicate_on_a_session_fails() {
        let r = good().bcast_msg(2, 5, 33.5, "p1-1", "b1").check();
        assert_eq!(violations_of(&r, "duplicate"), 1, "{:?}", r.violations);
        // A send received by two sessions (of its addressee) is a duplicate too.
        let r = good()
            .session(4, "game-2", logged(1))
            .recv(4, 2, 31.01, Received::Message { id: "p1-2".into(), from: "b1".into() })
            .check();
        assert!(violations_of(&r, "duplicate") >= 1, "{:?}", r.violations);
    }

    #[test]
    fn rule2_receipts_outside_the_login_fail() {
        // Before the login reply.
        let r = good().session(3, "game-0", logged(2)).bcast_msg(3, 1, 30.005, "p1-1", "b1").check();
        assert_eq!(violations_of(&r, "logged_in"), 1, "{:?}", r.violations);
        // After the logout reply.
        let r = good().logout(2, 32.5, 5).tick(2, 6, 33.1).check();
        assert_eq!(violations_of(&r, "logged_in"), 1, "{:?}", r.violations);
        // On a refused session.
        let r = good().session(3, "game-0", LoginState::Refused).tick(3, 1, 31.0).check();
        assert_eq!(violations_of(&r, "logged_in"), 1, "{:?}", r.violations);
    }

    #[test]
    fn rule3_missed_broadcast_fails_only_when_proven() {
        let mut h = good();
        h.0.receipts.retain(|r| !(r.process == 2 && matches!(&r.what, Received::Broadcast { .. })));
        let r = h.check();
        assert_eq!(violations_of(&r, "completeness"), 1, "{:?}", r.violations);
        // Not proven: the last tick is before the delivery bound.
        let mut h = good();
        h.0.receipts.retain(|r| r.process != 2 || matches!(&r.what, Received::Message { .. }));
        let h = h.tick(2, 4, 30.5);
        assert!(h.check().ok(), "{:?}", h.check().violations);
        // Not proven: logged in after the invocation.
        let h = good().session(3, "game-0", LoginState::Ok { at_ns: 30 * S + 1, seq: 1 }).tick(3, 2, 33.0);
        assert!(h.check().ok());
        // Not checked: invoked before heal + settle.
        let h = good().broadcast(2, "game-1", Scope::Global, "p2-1", 21.0);
        assert!(h.check().ok());
        // A local broadcast does not concern other servers' sessions.
        let h =
            good().broadcast(2, "game-1", Scope::Local, "p2-2", 30.0).bcast_msg(2, 5, 30.01, "p2-2", "b2");
        let r = h.check();
        assert!(r.ok(), "{:?}", r.violations);
        // A missed send to a proven session fails.
        let mut h = good();
        h.0.receipts.retain(|r| !matches!(&r.what, Received::Message { .. }));
        assert_eq!(violations_of(&h.check(), "completeness"), 1);
    }

    #[test]
    fn rule4_phantom_or_mismatched_messages_fail() {
        let r = good().bcast_msg(2, 5, 33.5, "p9-9", "b9").check();
        assert_eq!(violations_of(&r, "phantom"), 1, "{:?}", r.violations);
        // Wrong sender.
        let r = good().session(3, "game-1", logged(1)).bcast_msg(3, 2, 30.01, "p1-1", "b2").check();
        assert_eq!(violations_of(&r, "phantom"), 1, "{:?}", r.violations);
        // A send received by another account.
        let r = good()
            .session(3, "game-1", logged(1))
            .recv(3, 2, 31.01, Received::Message { id: "p1-2".into(), from: "b1".into() })
            .check();
        assert!(violations_of(&r, "phantom") >= 1, "{:?}", r.violations);
        // A local broadcast received on another server.
        let r = good()
            .broadcast(1, "game-0", Scope::Local, "p1-3", 32.0)
            .bcast_msg(1, 4, 32.005, "p1-3", "b1")
            .bcast_msg(2, 5, 33.5, "p1-3", "b1")
            .check();
        assert_eq!(violations_of(&r, "phantom"), 1, "{:?}", r.violations);
        // A broadcast id arriving as a message.
        let r = good()
            .session(3, "game-1", logged(1))
            .recv(3, 2, 30.01, Received::Message { id: "p1-1".into(), from: "b1".into() })
            .check();
        assert!(violations_of(&r, "phantom") >= 1, "{:?}", r.violations);
    }
}
