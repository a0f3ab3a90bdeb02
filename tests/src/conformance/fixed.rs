//! The fixed, scripted cases: the semantics every generated case relies on, written out once,
//! plus the time-dependent behaviour generated cases leave out (session expiry, close on
//! drop, partitions, key expiry). Timing steps are chosen with wide margins around both
//! backends' thresholds (see each case) so that both follow the same script deterministically.

use engine::env::{CreateMode, SetCondition};

use super::ops::{AnyOp, Case, KvOp, MultiOp, RelPath, Service, Step, ZkOp};

use CreateMode::{Ephemeral as E, EphemeralSequential as ES, Persistent as P, PersistentSequential as PS};

fn z(client: usize, op: ZkOp) -> Step {
    Step { client, op: AnyOp::Zk(op) }
}

fn k(op: KvOp) -> Step {
    Step { client: 0, op: AnyOp::Kv(op) }
}

fn p(s: &str) -> RelPath {
    RelPath::new(s)
}

fn create(c: usize, path: &str, data: &str, mode: CreateMode) -> Step {
    z(c, ZkOp::Create { path: p(path), data: data.into(), mode })
}

fn delete(c: usize, path: &str, version: Option<i32>) -> Step {
    z(c, ZkOp::Delete { path: p(path), version })
}

fn set(c: usize, path: &str, data: &str, version: Option<i32>) -> Step {
    z(c, ZkOp::SetData { path: p(path), data: data.into(), version })
}

fn get(c: usize, path: &str, watch: bool) -> Step {
    z(c, ZkOp::GetData { path: p(path), watch })
}

fn exists(c: usize, path: &str, watch: bool) -> Step {
    z(c, ZkOp::Exists { path: p(path), watch })
}

fn children(c: usize, path: &str, watch: bool) -> Step {
    z(c, ZkOp::GetChildren { path: p(path), watch })
}

fn zk_case(name: &str, clients: &[u64], steps: Vec<Step>) -> Case {
    Case { name: name.into(), service: Service::Zk, clients: clients.to_vec(), steps }
}

fn kv_set(key: &str, value: &str, cond: SetCondition, px_ms: Option<u64>, keep_ttl: bool) -> Step {
    k(KvOp::Set { key: key.into(), value: value.into(), cond, px_ms, keep_ttl })
}

fn kv_get(key: &str) -> Step {
    k(KvOp::Get { key: key.into() })
}

fn kv_pttl(key: &str) -> Step {
    k(KvOp::PTtl { key: key.into() })
}

/// Every fixed case.
pub fn cases() -> Vec<Case> {
    vec![
        zk_basics(),
        zk_sequential(),
        zk_multi(),
        zk_watches(),
        zk_close(),
        zk_drop_closes(),
        zk_session_bounds(),
        zk_disconnected_client(),
        zk_expiry(),
        kv_basics(),
        kv_ttl_expiry(),
    ]
}

/// Create in every mode, versions, and every error of the port.
fn zk_basics() -> Case {
    zk_case(
        "zk-basics",
        &[10_000],
        vec![
            create(0, "a", "root", P),
            create(0, "a", "", P),
            create(0, "m/x", "", P),
            get(0, "a", false),
            set(0, "a", "v1", Some(0)),
            set(0, "a", "v2", Some(0)),
            set(0, "a", "v2", None),
            create(0, "a/e", "x", E),
            get(0, "a/e", false),
            create(0, "a/e/k", "", P),
            z(0, ZkOp::Create { path: p("a/e/"), data: "".into(), mode: PS }),
            delete(0, "a", Some(9)),
            delete(0, "a", None),
            exists(0, "nope", false),
            exists(0, "a", false),
            get(0, "nope", false),
            set(0, "nope", "", None),
            children(0, "nope", false),
            delete(0, "nope", None),
            delete(0, "a/e", Some(0)),
            delete(0, "a/e", None),
            get(0, "!rel", false),
            get(0, "a/", false),
            get(0, "!//x", false),
            get(0, "a/./b", false),
            create(0, "a/", "", P),
            create(0, "!/", "", P),
            delete(0, "!/", None),
            children(0, "", false),
        ],
    )
}

/// Sequential numbering follows the parent's child counter, across deletes.
fn zk_sequential() -> Case {
    zk_case(
        "zk-sequential",
        &[10_000, 10_000],
        vec![
            create(0, "q", "", P),
            create(0, "q/job-", "1", PS),
            create(0, "q/plain", "", P),
            create(1, "q/job-", "2", ES),
            delete(0, "q/plain", None),
            create(0, "q/", "e", ES),
            get(0, "q", false),
            delete(1, "q/job-0000000000", None),
            create(1, "q/job-", "", PS),
            delete(1, "q/job-0000000003", None),
            create(0, "q/job-", "", PS),
            create(0, "q/job-", "", PS),
            children(1, "q", false),
            get(1, "q", false),
        ],
    )
}

/// All-or-nothing transactions: results, the failing index, no partial effects, no watches.
fn zk_multi() -> Case {
    let c = |path: &str, mode| MultiOp::Create { path: p(path), data: "".into(), mode };
    zk_case(
        "zk-multi",
        &[10_000, 10_000],
        vec![
            create(0, "m", "", P),
            z(
                0,
                ZkOp::Multi(vec![
                    c("m/a", P),
                    c("m/s-", PS),
                    MultiOp::SetData { path: p("m"), data: "x".into(), version: Some(0) },
                    MultiOp::Check { path: p("m/a"), version: Some(0) },
                    MultiOp::Check { path: p("m"), version: None },
                    MultiOp::Delete { path: p("m/a"), version: Some(0) },
                ]),
            ),
            children(1, "m", true),
            get(1, "m", true),
            z(
                0,
                ZkOp::Multi(vec![
                    c("m/b", P),
                    MultiOp::SetData { path: p("m"), data: "y".into(), version: None },
                    MultiOp::Check { path: p("m"), version: Some(7) },
                ]),
            ),
            z(0, ZkOp::Multi(vec![c("m/c", P), MultiOp::Delete { path: p("m/zzz"), version: None }])),
            z(0, ZkOp::Multi(vec![c("m/d", P), c("m/d", P)])),
            z(0, ZkOp::Multi(vec![MultiOp::Check { path: p("m"), version: None }, c("!bad", P)])),
            z(0, ZkOp::Multi(vec![c("m/e", E), c("m/e/x", P)])),
            z(0, ZkOp::Multi(vec![])),
            exists(1, "m/b", false),
            z(0, ZkOp::Multi(vec![MultiOp::SetData { path: p("m"), data: "z".into(), version: None }])),
            get(1, "m", false),
            z(0, ZkOp::Multi(vec![MultiOp::Delete { path: p("m/s-0000000001"), version: None }])),
            children(1, "m", false),
        ],
    )
}

/// One-shot data, exists and child watches of two clients; every event is seen before the
/// watcher's next answer reflects the change.
fn zk_watches() -> Case {
    zk_case(
        "zk-watches",
        &[10_000, 10_000],
        vec![
            create(0, "w", "0", P),
            get(0, "w", true),
            get(0, "w", true),
            create(1, "unrelated", "", P),
            set(1, "w", "1", None),
            set(1, "w", "2", None),
            get(0, "w", false),
            get(0, "w", true),
            exists(0, "w", false),
            delete(1, "w", None),
            exists(0, "w", false),
            get(0, "w", true),
            children(0, "w", true),
            exists(0, "x", true),
            create(1, "x", "x", P),
            exists(0, "x", false),
            exists(0, "x", true),
            set(1, "x", "y", None),
            get(0, "x", false),
            create(1, "x/b", "", P),
            create(1, "x/a", "", P),
            children(0, "x", true),
            set(1, "x", "z", None),
            get(0, "x", false),
            create(1, "x/c", "", E),
            children(0, "x", false),
            children(0, "x/a", true),
            delete(1, "x/a", None),
            exists(0, "x/a", false),
            // A client's own writes fire its own watches before their replies.
            get(1, "x/b", true),
            set(1, "x/b", "own", None),
        ],
    )
}

/// close(): ephemerals go at once, other clients' watches fire, the closed handle's own
/// watches fire Session(Closed), later calls fail Closed; a new session gets a new id.
fn zk_close() -> Case {
    zk_case(
        "zk-close",
        &[10_000, 10_000],
        vec![
            create(0, "p", "", P),
            create(0, "eph", "", E),
            exists(1, "eph", true),
            get(0, "p", true),
            z(0, ZkOp::Close),
            z(0, ZkOp::State),
            get(0, "p", false),
            create(0, "q", "", P),
            z(0, ZkOp::Multi(vec![])),
            get(0, "!bad", false),
            z(0, ZkOp::Close),
            exists(1, "eph", false),
            z(0, ZkOp::Reconnect { timeout_ms: 10_000 }),
            create(0, "eph", "", E),
            get(1, "eph", false),
        ],
    )
}

/// Dropping the last handle closes the session (both the real client and the simulator's
/// send closeSession): the ephemeral is gone well before the 10 s timeout.
fn zk_drop_closes() -> Case {
    zk_case(
        "zk-drop-closes",
        &[10_000, 10_000],
        vec![
            create(0, "eph", "", E),
            exists(1, "eph", true),
            z(0, ZkOp::Drop),
            z(1, ZkOp::Sleep { ms: 1_000 }),
            exists(1, "eph", false),
        ],
    )
}

/// The service clamps requested timeouts to [minSessionTimeout, maxSessionTimeout].
fn zk_session_bounds() -> Case {
    zk_case(
        "zk-session-bounds",
        &[100, 120_000, 4_000],
        vec![z(0, ZkOp::Close), z(1, ZkOp::Close), z(2, ZkOp::State)],
    )
}

/// A partitioned client: Disconnected, calls fail at once (ConnectionLoss without
/// "maybe applied"; malformed paths are refused locally as BadArguments); after the heal it
/// reconnects within the session timeout and keeps its session, ephemerals and watches.
///
/// Timing (10 s session, a round trip just before the cut so both backends count from
/// there): the real client gives up the connection after 2/5 of the timeout of silence (4 s),
/// the simulated one after 2/3 (6.7 s), so at 7.5 s both are Disconnected; the service
/// expires the session at 10 s, and both clients are back within 1 s of the heal at 7.5 s.
fn zk_disconnected_client() -> Case {
    zk_case(
        "zk-disconnected-client",
        &[10_000, 10_000],
        vec![
            create(0, "eph", "", E),
            get(0, "eph", true),
            z(0, ZkOp::Cut),
            z(0, ZkOp::Sleep { ms: 7_500 }),
            z(0, ZkOp::State),
            get(0, "eph", false),
            get(0, "!rel", false),
            create(0, "a/", "", P),
            z(0, ZkOp::Multi(vec![MultiOp::Check { path: p(""), version: None }])),
            set(1, "eph", "changed", None),
            z(0, ZkOp::Heal),
            z(0, ZkOp::Sleep { ms: 1_500 }),
            z(0, ZkOp::State),
            get(0, "eph", false),
            exists(1, "eph", false),
        ],
    )
}

/// Session expiry: a client cut off past its timeout loses its ephemerals (other clients'
/// watches fire), and learns Expired once it can reach the service again; its watches fire
/// Session(Expired). The partitioned client's state is looked at only while both backends
/// agree: at 1.5 s of a 1 s session (Disconnected) and after the heal (Expired) — see the
/// README for the real client's own expiry at 7/5 of the timeout.
fn zk_expiry() -> Case {
    zk_case(
        "zk-expiry",
        &[1_000, 10_000],
        vec![
            create(0, "p", "", P),
            create(0, "e", "", E),
            exists(1, "e", true),
            // The last round trip before the cut: both backends count silence from here.
            get(0, "p", true),
            z(0, ZkOp::Cut),
            z(0, ZkOp::Sleep { ms: 900 }),
            z(0, ZkOp::State),
            // Long past the service's expiry (1 s + a tick) on both backends.
            z(1, ZkOp::Sleep { ms: 2_500 }),
            exists(1, "e", false),
            z(0, ZkOp::Heal),
            z(0, ZkOp::AwaitTerminal { max_ms: 5_000 }),
            z(0, ZkOp::State),
            get(0, "p", false),
            z(0, ZkOp::Reconnect { timeout_ms: 10_000 }),
            exists(0, "e", false),
        ],
    )
}

fn kv_basics() -> Case {
    use SetCondition::*;
    let mut steps = vec![
        kv_get("a"),
        kv_set("a", "1", Always, None, false),
        kv_get("a"),
        k(KvOp::Del { key: "a".into() }),
        k(KvOp::Del { key: "a".into() }),
        kv_set("b", "x", IfPresent, None, false),
        kv_set("b", "1", IfAbsent, None, false),
        kv_set("b", "2", IfAbsent, None, false),
        kv_set("b", "3", IfPresent, None, false),
        kv_get("b"),
        kv_set("t", "1", Always, Some(60_500), false),
        kv_pttl("t"),
        kv_set("t", "2", Always, None, true),
        kv_pttl("t"),
        kv_set("t", "3", Always, Some(5_500), true),
        kv_pttl("t"),
        kv_set("t", "4", Always, None, false),
        kv_pttl("t"),
        kv_pttl("none"),
        kv_set("t", "5", Always, Some(0), false),
        kv_get("t"),
        k(KvOp::PExpire { key: "none".into(), ms: 1_000 }),
        k(KvOp::PExpire { key: "t".into(), ms: 30_500 }),
        kv_pttl("t"),
        k(KvOp::PExpire { key: "t".into(), ms: 0 }),
        kv_get("t"),
        k(KvOp::Cas { key: "c".into(), expected: None, new: Some("1".into()), px_ms: None }),
        k(KvOp::Cas { key: "c".into(), expected: None, new: Some("2".into()), px_ms: None }),
        k(KvOp::Cas { key: "c".into(), expected: Some("9".into()), new: Some("2".into()), px_ms: None }),
        k(KvOp::Cas {
            key: "c".into(),
            expected: Some("1".into()),
            new: Some("2".into()),
            px_ms: Some(50_500),
        }),
        kv_pttl("c"),
        k(KvOp::Cas { key: "c".into(), expected: Some("2".into()), new: Some("3".into()), px_ms: None }),
        kv_pttl("c"),
        k(KvOp::Cas { key: "c".into(), expected: Some("3".into()), new: None, px_ms: None }),
        k(KvOp::Cas { key: "c".into(), expected: None, new: None, px_ms: None }),
        k(KvOp::Cas { key: "c".into(), expected: None, new: Some("1".into()), px_ms: Some(0) }),
        kv_get("c"),
        kv_set("tok", "secret", Always, None, false),
        k(KvOp::Take { key: "tok".into() }),
        k(KvOp::Take { key: "tok".into() }),
        k(KvOp::LLen { key: "l".into() }),
        k(KvOp::LPop { key: "l".into() }),
        k(KvOp::RPush { key: "l".into(), values: vec!["a".into(), "b".into()] }),
        k(KvOp::RPush { key: "l".into(), values: vec!["c".into()] }),
        k(KvOp::RPush { key: "l".into(), values: vec![] }),
        k(KvOp::LRange { key: "l".into(), start: 0, stop: -1 }),
        k(KvOp::LRange { key: "l".into(), start: -2, stop: 100 }),
        k(KvOp::LRange { key: "l".into(), start: 3, stop: 2 }),
        k(KvOp::LLen { key: "l".into() }),
        kv_get("l"),
        k(KvOp::Take { key: "l".into() }),
        k(KvOp::Cas { key: "l".into(), expected: None, new: Some("1".into()), px_ms: None }),
        kv_set("l", "x", IfAbsent, None, false),
        kv_pttl("l"),
        k(KvOp::PExpire { key: "l".into(), ms: 40_500 }),
        kv_pttl("l"),
        k(KvOp::RPush { key: "l".into(), values: vec!["d".into()] }),
        kv_pttl("l"),
        k(KvOp::LPop { key: "l".into() }),
        k(KvOp::LPop { key: "l".into() }),
        k(KvOp::LPop { key: "l".into() }),
        k(KvOp::LPop { key: "l".into() }),
        k(KvOp::LPop { key: "l".into() }),
        kv_pttl("l"),
        k(KvOp::RPush { key: "a".into(), values: vec!["x".into()] }),
        k(KvOp::RPush { key: "b".into(), values: vec!["x".into()] }),
        kv_set("a", "s", Always, None, false),
        kv_get("a"),
    ];
    for s in &mut steps {
        s.client = 0;
    }
    Case { name: "kv-basics".into(), service: Service::Redis, clients: vec![0], steps }
}

/// Keys expire by the server's clock: gone for GET/PTTL, NX may write again; KEEPTTL and
/// PEXPIRE keep or set a TTL, a plain SET clears it. TTLs of 1.5 s, checked at once (a real
/// run would need to stall over a second to see it gone) and after 2.5 s (gone on both).
fn kv_ttl_expiry() -> Case {
    use SetCondition::*;
    let steps = vec![
        kv_set("a", "1", Always, Some(1_500), false),
        kv_get("a"),
        kv_set("a", "2", IfAbsent, None, false),
        kv_set("b", "1", Always, None, false),
        k(KvOp::PExpire { key: "b".into(), ms: 1_500 }),
        kv_set("b", "2", Always, None, true),
        kv_pttl("b"),
        kv_set("l", "x", Always, Some(1_500), false),
        kv_set("l", "y", Always, None, false),
        k(KvOp::RPush { key: "q".into(), values: vec!["1".into()] }),
        k(KvOp::PExpire { key: "q".into(), ms: 1_500 }),
        k(KvOp::Sleep { ms: 2_500 }),
        kv_get("a"),
        kv_pttl("a"),
        kv_set("a", "3", IfAbsent, None, false),
        kv_get("a"),
        kv_get("b"),
        kv_pttl("b"),
        kv_get("l"),
        kv_pttl("l"),
        k(KvOp::LLen { key: "q".into() }),
        k(KvOp::PExpire { key: "b".into(), ms: 1_000 }),
    ];
    Case { name: "kv-ttl-expiry".into(), service: Service::Redis, clients: vec![0], steps }
}
