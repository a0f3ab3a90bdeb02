//! The invariants of `redirect` (numbered as in the module documentation), one function per
//! rule, over the client history, the servers' acting log and the measured spread of the
//! servers' wall-clock offsets. [`check_redirect`] runs them all and adds the counters.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::account::token::CLOCK_SKEW_ALLOWANCE;
use serde_json::Value;

use super::history::{RedirectOp, RedirectRes, TokenKind};
use super::{EXPIRY_MARGIN, TOKEN_TTL};
use crate::acting::{check_acting, Instance, Interval};
use crate::checker::{liveness_after_heal, Report};
use crate::history::{History, Outcome};
use crate::scenario::Phases;

/// A token some redirect issued.
pub struct Issued<'a> {
    /// The redirect's operation id.
    pub op: usize,
    pub account: &'a str,
    pub extra_data: &'a Value,
    pub target: &'a str,
    /// Where `_sc_redirect` pointed the client.
    pub to: &'a str,
    pub process: u64,
    /// When the client had it (true ns): the issue happened before.
    pub at_ns: u64,
}

/// A presentation of a token that a server accepted.
pub struct Accepted<'a> {
    pub op: usize,
    pub process: u64,
    pub kind: TokenKind,
    /// Where it was presented.
    pub server: &'a str,
    pub token: &'a str,
    /// Whose login and which `extra_data` the server answered with.
    pub account: &'a str,
    pub extra_data: &'a Value,
    pub invoke_ns: u64,
}

impl Accepted<'_> {
    /// How messages name the presentation.
    fn what(&self) -> String {
        format!(
            "op {} (process {}, t={:.3}s, at {})",
            self.op,
            self.process,
            secs(self.invoke_ns),
            self.server
        )
    }
}

/// Every token the history shows issued, by token.
pub fn issued_tokens(history: &History<RedirectOp, RedirectRes>) -> BTreeMap<&str, Issued<'_>> {
    let mut issued = BTreeMap::new();
    for op in &history.ops {
        if let (
            RedirectOp::Redirect { target, account, extra_data, .. },
            Some((t, Outcome::Ok(RedirectRes::Issued { token, to }))),
        ) = (&op.op, &op.completion)
        {
            let i = Issued { op: op.id, account, extra_data, target, to, process: op.process, at_ns: *t };
            issued.insert(token.as_str(), i);
        }
    }
    issued
}

/// Every accepted presentation, in history order.
pub fn accepted_presentations(history: &History<RedirectOp, RedirectRes>) -> Vec<Accepted<'_>> {
    history
        .ops
        .iter()
        .filter_map(|op| match (&op.op, op.outcome()) {
            (
                RedirectOp::Accept { kind, server, token, .. },
                Outcome::Ok(RedirectRes::Accepted { account, extra_data }),
            ) => Some(Accepted {
                op: op.id,
                process: op.process,
                kind: *kind,
                server,
                token,
                account,
                extra_data,
                invoke_ns: op.invoke_ns,
            }),
            _ => None,
        })
        .collect()
}

/// The latest a token may be presented after the client received it and still be accepted:
/// TTL + the engine's skew allowance + the measured spread of the servers' wall clocks.
pub fn expiry_limit(wall_skew: Duration) -> Duration {
    TOKEN_TTL + CLOCK_SKEW_ALLOWANCE + wall_skew + EXPIRY_MARGIN
}

/// Rule 1, **single use**: every token is accepted at most once (a replay after logout and
/// the loser of two concurrent presentations must both be refused).
pub fn check_single_use(issued: &BTreeMap<&str, Issued>, accepted: &[Accepted]) -> Report {
    let mut report = Report::default();
    let mut successes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in accepted {
        let line = format!("op {} {} at {:.3}s", a.op, a.kind.name(), secs(a.invoke_ns));
        successes.entry(a.token).or_default().push(line);
    }
    for (token, ids) in &successes {
        if ids.len() > 1 {
            report.violation(
                "single_use",
                format!(
                    "token {} (issued by op {}) accepted {} times: {}",
                    short(token),
                    issued.get(token).map_or(usize::MAX, |i| i.op),
                    ids.len(),
                    ids.join(", ")
                ),
            );
        }
    }
    report
}

/// Rule 2, **bad tokens**: forged, tampered and wrong-server presentations never succeed,
/// nor does any token no redirect issued.
pub fn check_bad_tokens(issued: &BTreeMap<&str, Issued>, accepted: &[Accepted]) -> Report {
    let mut report = Report::default();
    for a in accepted {
        if a.kind.must_fail() {
            report.violation(
                "bad_token",
                format!("{}: {} token accepted as {}", a.what(), a.kind.name(), a.account),
            );
        }
        if !issued.contains_key(a.token) {
            report.violation(
                "bad_token",
                format!(
                    "{}: {} token {} that no redirect issued accepted as {}",
                    a.what(),
                    a.kind.name(),
                    short(a.token),
                    a.account
                ),
            );
        }
    }
    report
}

/// Rule 3, **expiry**: no presentation invoked later than [`expiry_limit`] after its token
/// reached the client is accepted.
pub fn check_expiry(issued: &BTreeMap<&str, Issued>, accepted: &[Accepted], wall_skew: Duration) -> Report {
    let mut report = Report::default();
    let limit = expiry_limit(wall_skew);
    let limit_ns = limit.as_nanos() as u64;
    for a in accepted {
        let Some(iss) = issued.get(a.token) else { continue };
        if a.invoke_ns > iss.at_ns + limit_ns {
            report.violation(
                "expiry",
                format!(
                    "{}: {} token issued by op {} (received at {:.3}s) accepted {:.3}s later, past the limit {:.3}s (ttl {:?} + allowance {:?} + wall skew {:.3}s)",
                    a.what(),
                    a.kind.name(),
                    iss.op,
                    secs(iss.at_ns),
                    secs(a.invoke_ns - iss.at_ns),
                    limit.as_secs_f64(),
                    TOKEN_TTL,
                    CLOCK_SKEW_ALLOWANCE,
                    wall_skew.as_secs_f64()
                ),
            );
        }
    }
    report
}

/// Rule 4, **right account, right place**: `_sc_redirect` points at the server the redirect
/// named, and an accepted token returns exactly the account and `extra_data` of the redirect
/// that issued it, at that server.
pub fn check_right_account_and_place(issued: &BTreeMap<&str, Issued>, accepted: &[Accepted]) -> Report {
    let mut report = Report::default();
    for iss in issued.values() {
        if iss.to != iss.target {
            report.violation(
                "redirect_target",
                format!(
                    "op {} (process {}): redirect of {} to {} sent the client to {}",
                    iss.op, iss.process, iss.account, iss.target, iss.to
                ),
            );
        }
    }
    for a in accepted {
        let Some(iss) = issued.get(a.token) else { continue };
        if iss.account != a.account || iss.extra_data != a.extra_data {
            report.violation(
                "accept_result",
                format!(
                    "{}: token issued by op {} for {} with extra_data {} accepted as {} with {}",
                    a.what(),
                    iss.op,
                    iss.account,
                    iss.extra_data,
                    a.account,
                    a.extra_data
                ),
            );
        }
        if a.server != iss.target {
            report.violation(
                "accept_server",
                format!(
                    "{}: token issued by op {} for {} accepted at {}",
                    a.what(),
                    iss.op,
                    iss.target,
                    a.server
                ),
            );
        }
    }
    report
}

/// Rule 5, **logged in once**: the acting intervals of an account's login instances never
/// overlap — the source stops acting before the target accepts, and a replay or a
/// concurrent presentation never yields a second instance.
pub fn check_logged_in_once(acts: &BTreeMap<String, BTreeMap<Instance, Interval>>) -> Report {
    check_acting(acts)
}

/// The history with only genuine accepted redirects as successes: every other operation
/// still counts as activity (an invocation) but not as progress.
fn genuine_progress(history: &History<RedirectOp, RedirectRes>) -> History<RedirectOp, RedirectRes> {
    History {
        ops: history
            .ops
            .iter()
            .map(|o| {
                let mut o = o.clone();
                let genuine_ok = matches!(
                    (&o.op, &o.completion),
                    (RedirectOp::Accept { kind, .. }, Some((_, Outcome::Ok(RedirectRes::Accepted { .. }))))
                        if kind.genuine()
                );
                if !genuine_ok {
                    o.completion = o.completion.map(|(t, _)| (t, Outcome::Fail));
                }
                o
            })
            .collect(),
    }
}

/// Rule 6, **liveness**: every process active after the heal completes a genuine redirect
/// within the bound. Also counts `redirect.max_recovery_ms`: per process, from the heal (or
/// its first later invocation) to its first genuine redirect.
pub fn check_liveness(history: &History<RedirectOp, RedirectRes>, phases: &Phases) -> Report {
    let progress = genuine_progress(history);
    let mut report = liveness_after_heal(&progress, phases, |_| true);
    let heal_ns = phases.heal_at.as_nanos() as u64;
    let mut recovery: BTreeMap<u64, (u64, Option<u64>)> = BTreeMap::new();
    for o in progress.ops.iter().filter(|o| o.invoke_ns >= heal_ns) {
        let e = recovery.entry(o.process).or_insert((o.invoke_ns, None));
        if let Some((t, Outcome::Ok(_))) = &o.completion {
            e.1 = Some(e.1.map_or(*t, |x| x.min(*t)));
        }
    }
    for (first, ok) in recovery.values() {
        if let Some(ok) = ok {
            let ms = ok.saturating_sub(heal_ns.max(*first)) / 1_000_000;
            report.count_max("redirect.max_recovery_ms", ms);
        }
    }
    report
}

/// Coverage: refused redirects, presentations by kind and result, presentations past the
/// expiry limit by kind, probes, issued tokens, the measured skew.
fn coverage(
    history: &History<RedirectOp, RedirectRes>,
    issued: &BTreeMap<&str, Issued>,
    wall_skew: Duration,
) -> Report {
    let mut report = Report::default();
    let limit_ns = expiry_limit(wall_skew).as_nanos() as u64;
    let mut kinds: BTreeMap<(TokenKind, &str), u64> = BTreeMap::new();
    for op in &history.ops {
        match (&op.op, op.outcome()) {
            (RedirectOp::Redirect { .. }, Outcome::Ok(RedirectRes::Issued { .. })) => {}
            (RedirectOp::Redirect { .. }, Outcome::Ok(_)) => report.count("redirect.refused", 1),
            (RedirectOp::Accept { kind, token, .. }, outcome) => {
                if issued.get(token.as_str()).is_some_and(|i| op.invoke_ns > i.at_ns + limit_ns) {
                    report.count(&format!("redirect.{}_past_limit", kind.name()), 1);
                }
                let result = match outcome {
                    Outcome::Ok(RedirectRes::Accepted { .. }) => "accepted",
                    Outcome::Ok(RedirectRes::Rejected { reason }) => reason.as_str(),
                    _ => "unknown",
                };
                *kinds.entry((*kind, result)).or_default() += 1;
            }
            (RedirectOp::Login { probe: true, .. }, Outcome::Ok(res)) => {
                let name = if *res == RedirectRes::LoggedIn { "logged_in" } else { "refused" };
                report.count(&format!("redirect.probe_{name}"), 1);
            }
            _ => {}
        }
    }
    report.count("redirect.issued", issued.len() as u64);
    report.count_max("redirect.max_wall_skew_ms", wall_skew.as_millis() as u64);
    for ((kind, result), n) in kinds {
        report.count(&format!("redirect.accept_{}_{result}", kind.name()), n);
    }
    report.count("ops", history.ops.len() as u64);
    report
}

/// Every invariant of the scenario (rules 1–6) over the history, the servers' acting log and
/// the measured spread `wall_skew` of the servers' wall-clock offsets, with coverage counters.
pub fn check_redirect(
    history: &History<RedirectOp, RedirectRes>,
    acts: &BTreeMap<String, BTreeMap<Instance, Interval>>,
    wall_skew: Duration,
    phases: &Phases,
) -> Report {
    let issued = issued_tokens(history);
    let accepted = accepted_presentations(history);
    let mut report = Report::default();
    report.merge(check_single_use(&issued, &accepted));
    report.merge(check_bad_tokens(&issued, &accepted));
    report.merge(check_expiry(&issued, &accepted, wall_skew));
    report.merge(check_right_account_and_place(&issued, &accepted));
    report.merge(check_logged_in_once(acts));
    report.merge(check_liveness(history, phases));
    report.merge(coverage(history, &issued, wall_skew));
    report
}

/// A token for messages: its last 16 hex digits (MAC bits: its start, the version, account
/// and target, is shared by many tokens).
fn short(token: &str) -> String {
    let tail: String = token.chars().rev().take(16).collect::<Vec<_>>().into_iter().rev().collect();
    format!("..{tail}")
}

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::acting::ActLog;
    use crate::history::Operation;

    fn phases() -> Phases {
        Phases {
            now: Arc::new(|| 0),
            heal_at: Duration::from_secs(100),
            end_at: Duration::from_secs(200),
            liveness_bound: Duration::from_secs(10),
        }
    }

    fn op(id: usize, op: RedirectOp, t: f64, res: Option<RedirectRes>) -> Operation<RedirectOp, RedirectRes> {
        let ns = (t * 1e9) as u64;
        Operation {
            id,
            process: 1,
            op,
            invoke_ns: ns,
            completion: Some((ns + 1_000, res.map(Outcome::Ok).unwrap_or(Outcome::Info))),
        }
    }

    fn extra() -> Value {
        json!({ "n": 7, "from": "game-0", "to": "game-1" })
    }

    fn redirect(id: usize, token: &str, t: f64) -> Operation<RedirectOp, RedirectRes> {
        op(
            id,
            RedirectOp::Redirect {
                server: "game-0".into(),
                target: "game-1".into(),
                account: "r1".into(),
                extra_data: extra(),
            },
            t,
            Some(RedirectRes::Issued { token: token.into(), to: "game-1".into() }),
        )
    }

    fn accept_at(
        id: usize,
        token: &str,
        kind: TokenKind,
        server: &str,
        t: f64,
        res: RedirectRes,
    ) -> Operation<RedirectOp, RedirectRes> {
        let acc =
            RedirectOp::Accept { kind, server: server.into(), token: token.into(), account: "r1".into() };
        op(id, acc, t, Some(res))
    }

    fn ok() -> RedirectRes {
        RedirectRes::Accepted { account: "r1".into(), extra_data: extra() }
    }

    fn rejected(reason: &str) -> RedirectRes {
        RedirectRes::Rejected { reason: reason.into() }
    }

    fn accept(
        id: usize,
        token: &str,
        kind: TokenKind,
        t: f64,
        res: RedirectRes,
    ) -> Operation<RedirectOp, RedirectRes> {
        accept_at(id, token, kind, "game-1", t, res)
    }

    fn check(ops: Vec<Operation<RedirectOp, RedirectRes>>) -> Report {
        check_redirect(&History { ops }, &BTreeMap::new(), Duration::ZERO, &phases())
    }

    fn assert_caught(r: &Report, checker: &str) {
        assert!(
            r.violations.iter().any(|v| v.checker == checker),
            "expected a {checker} violation: {:?}",
            r.violations
        );
    }

    #[test]
    fn good_history_passes() {
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept(1, "bad", TokenKind::Forged, 1.1, rejected("bad_signature")),
            accept(2, "k", TokenKind::Genuine, 1.2, ok()),
            accept(3, "k", TokenKind::Replay, 2.0, rejected("replayed")),
            redirect(4, "k2", 3.0),
            accept(5, "k2", TokenKind::Expired, 3.0 + 12.0, rejected("expired")),
        ]);
        assert!(r.ok(), "{:?}", r.violations);
        assert_eq!(r.counter("redirect.accept_genuine_accepted"), 1);
        assert_eq!(r.counter("redirect.accept_replay_replayed"), 1);
        assert_eq!(r.counter("redirect.expired_past_limit"), 1);
    }

    #[test]
    fn replayed_token_accepted_twice_is_caught() {
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept(1, "k", TokenKind::Genuine, 1.2, ok()),
            accept(2, "k", TokenKind::Replay, 2.0, ok()),
        ]);
        assert_caught(&r, "single_use");
        // Two concurrent presentations both winning is the same violation.
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept(1, "k", TokenKind::Genuine, 1.2, ok()),
            accept(2, "k", TokenKind::Concurrent, 1.2, ok()),
        ]);
        assert_caught(&r, "single_use");
    }

    #[test]
    fn forged_and_tampered_acceptance_is_caught() {
        for kind in [TokenKind::Forged, TokenKind::Tampered] {
            let r = check(vec![redirect(0, "k", 1.0), accept(1, "x", kind, 1.1, ok())]);
            assert_caught(&r, "bad_token");
        }
        // Whatever the client called it: a token nobody issued.
        let r = check(vec![redirect(0, "k", 1.0), accept(1, "x", TokenKind::Genuine, 1.1, ok())]);
        assert_caught(&r, "bad_token");
    }

    #[test]
    fn wrong_server_acceptance_is_caught() {
        let r = check(vec![
            redirect(0, "k", 1.0),
            accept_at(1, "k", TokenKind::WrongServer, "game-2", 1.1, ok()),
        ]);
        assert_caught(&r, "bad_token");
        assert_caught(&r, "accept_server");
        // A "genuine" presentation at a server the redirect did not name, too.
        let r =
            check(vec![redirect(0, "k", 1.0), accept_at(1, "k", TokenKind::Genuine, "game-2", 1.1, ok())]);
        assert_caught(&r, "accept_server");
    }

    #[test]
    fn expired_acceptance_is_caught_and_measured_skew_is_allowed() {
        let late = vec![redirect(0, "k", 1.0), accept(1, "k", TokenKind::Expired, 1.0 + 9.2, ok())];
        assert_caught(&check(late.clone()), "expiry");
        // 4 s ttl + 5 s allowance + 1 s of measured skew: 9.2 s is within the limit.
        let r = check_redirect(&History { ops: late }, &BTreeMap::new(), Duration::from_secs(1), &phases());
        assert!(r.ok(), "{:?}", r.violations);
    }

    #[test]
    fn wrong_account_or_extra_data_is_caught() {
        let other = RedirectRes::Accepted { account: "r2".into(), extra_data: extra() };
        let r = check(vec![redirect(0, "k", 1.0), accept(1, "k", TokenKind::Genuine, 1.1, other)]);
        assert_caught(&r, "accept_result");
        let other = RedirectRes::Accepted { account: "r1".into(), extra_data: json!({ "n": 8 }) };
        let r = check(vec![redirect(0, "k", 1.0), accept(1, "k", TokenKind::Genuine, 1.1, other)]);
        assert_caught(&r, "accept_result");
    }

    #[test]
    fn redirect_to_the_wrong_host_is_caught() {
        let mut bad = redirect(0, "k", 1.0);
        bad.completion =
            Some((1, Outcome::Ok(RedirectRes::Issued { token: "k".into(), to: "game-2".into() })));
        assert_caught(&check(vec![bad]), "redirect_target");
    }

    #[test]
    fn overlapping_logins_are_caught() {
        let acts = ActLog::default();
        acts.insert("r1", (1, "a".into()), Interval { start_ns: 0, end_ns: 10, ticks: 3 });
        acts.insert("r1", (2, "b".into()), Interval { start_ns: 5, end_ns: 20, ticks: 3 });
        let r = check_redirect(&History::default(), &acts.snapshot(), Duration::ZERO, &phases());
        assert_caught(&r, "acting");
    }

    #[test]
    fn no_genuine_redirect_after_the_heal_is_caught() {
        let r = check(vec![
            redirect(0, "k", 101.0),
            accept(1, "k", TokenKind::Replay, 101.5, ok()),
            accept(2, "k", TokenKind::Genuine, 102.0, rejected("coordination_lost")),
        ]);
        assert_caught(&r, "liveness");
        let r = check(vec![redirect(0, "k", 101.0), accept(1, "k", TokenKind::Genuine, 101.2, ok())]);
        assert!(r.ok(), "{:?}", r.violations);
    }
}
