//! Restarting Redis and ZooKeeper under a running cluster of `sandtable-server` processes:
//! the servers recover by themselves, without being restarted.
//!
//! - Redis: a crash (SIGKILL) of a Redis *without persistence*, a 2 s outage, and a start on
//!   the same port with an empty data set. That is the harder case for the servers: their
//!   connections break and every key is gone (the users, any auth key), so recovery must
//!   not rely on anything Redis held before.
//! - ZooKeeper, short: a crash and immediate restart, well inside the servers' session
//!   timeout (10 s): the servers' sessions survive (same session ids, reattached).
//! - ZooKeeper, long: the service is down for 2.5 session timeouts (4 s), so every server's
//!   client declares its session expired (after 7/5 of the timeout) and its accounts' links
//!   are closed by the lease watchdog. `PrivateZk` restarts on the **same data directory**,
//!   so the old sessions and their ephemeral znodes (registrations, logged-in accounts) come
//!   back with the service, which restarts their expiry clocks: they linger one session
//!   timeout after the restart, while the servers open new sessions. This is the case
//!   tested (a service that lost its data would be the easier one: no stale znodes).
//!
//! The tests run one at a time (a file-wide lock): each starts a JVM and several server
//! processes, and their bounds are about time.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::blocking;
use common::cluster::{assert_err, assert_ok, seed_flow, Client, Cluster, Server, TRANSPORTS};
use engine::session::Transport;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How long the seed flow may take to work again after Redis is back.
const REDIS_RECOVERY: Duration = Duration::from_secs(15);
/// How long Redis stays down.
const REDIS_OUTAGE: Duration = Duration::from_secs(2);
/// Session timeout of the servers in the short ZooKeeper restart test.
const ZK_SHORT_SESSION_SECS: u64 = 10;
/// How long the servers' sessions may take to reattach, and a login to work, after a short
/// ZooKeeper restart.
const ZK_SHORT_RECOVERY: Duration = Duration::from_secs(15);
/// Session timeout of the servers in the long ZooKeeper outage test.
const ZK_LONG_SESSION_SECS: u64 = 4;
/// How long ZooKeeper stays down in the long outage test: 2.5 session timeouts, well past
/// the client-side expiry (7/5 of the timeout).
const ZK_LONG_OUTAGE: Duration = Duration::from_millis(ZK_LONG_SESSION_SECS * 2500);
/// How long the servers may take to work again after a long ZooKeeper outage: the stale
/// sessions expire one timeout after the restart; new sessions are retried at most every 5 s.
const ZK_LONG_RECOVERY: Duration = Duration::from_secs(30);

/// Removes ANSI colour sequences (the servers' text logs may carry them).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The lines of a server's log that contain `needle`.
fn log_lines(s: &Server, needle: &str) -> Vec<String> {
    strip_ansi(&s.stderr_log()).lines().filter(|l| l.contains(needle)).map(str::to_string).collect()
}

/// The ids of the ZooKeeper sessions a server established so far (from its log).
fn established_sessions(s: &Server) -> Vec<String> {
    log_lines(s, "zk session established")
        .iter()
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("session=")).map(str::to_string))
        .collect()
}

/// The session ids ZooKeeper currently has connections for (`cons`).
fn connected_sessions(c: &Cluster) -> Vec<String> {
    let out = blocking(|| c.zk.four_letter("cons")).unwrap_or_default();
    out.split(|ch: char| ch == ',' || ch == '(' || ch == ')' || ch.is_whitespace())
        .filter_map(|w| w.strip_prefix("sid="))
        .filter(|sid| *sid != "0x0")
        .map(str::to_string)
        .collect()
}

/// Pids of the servers, to check later that none was restarted.
fn pids(c: &Cluster) -> Vec<(String, libc::pid_t)> {
    c.servers.iter().map(|s| (s.name.clone(), s.pid())).collect()
}

/// Every server still runs as the same process, never left or restarted its game server,
/// and reports healthy.
async fn assert_never_restarted(c: &mut Cluster, before: &[(String, libc::pid_t)]) {
    assert_eq!(pids(c), before, "server pids changed");
    for s in &mut c.servers {
        let exited = s.exited();
        assert!(exited.is_none(), "{} (pid {}) exited: {exited:?}", s.name, s.pid());
        let started = log_lines(s, "server started");
        assert_eq!(
            started.len(),
            1,
            "{} started its game server {} times: {started:?}",
            s.name,
            started.len()
        );
        let health = common::cluster::health(s.ports.api).await;
        assert_eq!(health, Some(200), "{} health after recovery", s.name);
    }
}

/// Runs the seed flow on TCP JSON with a new user (`{prefix}-{n}`) and new clients until it
/// completes; panics with the last failure after `limit`. Returns how long it took and how
/// many attempts were made.
async fn seed_flow_eventually(game: &Server, pvp: &Server, prefix: &str, limit: Duration) -> (Duration, u32) {
    let t0 = Instant::now();
    let mut last = String::from("no attempt finished");
    let mut attempt = 0;
    while t0.elapsed() < limit {
        attempt += 1;
        let user = format!("{prefix}-{attempt}");
        let left = limit.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, seed_flow(game, pvp, Transport::TcpJson, &user)).await {
            Ok(Ok(())) => return (t0.elapsed(), attempt),
            Ok(Err(e)) => {
                eprintln!("{prefix}: attempt {attempt} failed after {:?}: {e}", t0.elapsed());
                last = e;
            }
            Err(_) => {
                last = format!("attempt {attempt} ({user}) was still running at the deadline; before: {last}")
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the seed flow did not complete within {limit:?} ({attempt} attempts); last failure: {last}");
}

/// Logs `user` in on `a` and `b` at the same time (a new TCP JSON client each); returns the
/// replies (or what went wrong) with the clients, in the order `a`, `b`.
async fn login_on_both(
    a: SocketAddr,
    b: SocketAddr,
    user: &str,
) -> Vec<(Result<Value, String>, Option<Client>)> {
    let one = |addr: SocketAddr| async move {
        match Client::try_connect(addr, Transport::TcpJson).await {
            Ok(mut c) => (c.try_login(user).await, Some(c)),
            Err(e) => (Err(e), None),
        }
    };
    let (ra, rb) = tokio::join!(one(a), one(b));
    vec![ra, rb]
}

/// Logs `user` in on both `a` and `b` at the same time, again and again, until one login
/// succeeds; panics at once if both do, or after `limit` if none does. Returns how long it
/// took, the index (0 = `a`, 1 = `b`) of the server that took the account, and its client.
async fn unique_login_eventually(
    a: SocketAddr,
    b: SocketAddr,
    user: &str,
    limit: Duration,
) -> (Duration, usize, Client) {
    let t0 = Instant::now();
    let mut last = Vec::new();
    let mut rounds = 0;
    while t0.elapsed() < limit {
        rounds += 1;
        let results = login_on_both(a, b, user).await;
        let ok: Vec<usize> =
            (0..2).filter(|&i| results[i].0.as_ref().is_ok_and(|r| r["error"] == json!(false))).collect();
        let replies: Vec<String> = results.iter().map(|(r, _)| format!("{r:?}")).collect();
        assert!(ok.len() < 2, "{user} logged in on both servers at once (round {rounds}): {replies:?}");
        if let [i] = ok[..] {
            let client = results.into_iter().nth(i).and_then(|(_, c)| c).expect("the winner's client");
            return (t0.elapsed(), i, client);
        }
        last = replies;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no login of {user} on either server succeeded within {limit:?} ({rounds} rounds); last replies: {last:?}");
}

/// Logs `user` in at `addr` until the server refuses it as "Already logged in" (it holds
/// elsewhere). A server still re-opening its ZooKeeper session answers "Server error" for a
/// while; that is retried until `limit`. Panics if the login ever succeeds (two servers).
async fn refused_eventually(addr: SocketAddr, user: &str, limit: Duration, what: &str) {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < limit {
        if let Ok(mut c) = Client::try_connect(addr, Transport::TcpJson).await {
            match c.try_login(user).await {
                Ok(r) if r["error"] == json!(false) => {
                    panic!("{what}: {user} logged in on a second server: {r}")
                }
                Ok(r) if r["error_message"] == json!("Already logged in") => return,
                Ok(r) => last = r.to_string(),
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: not refused as already logged in within {limit:?}; last answer: {last}");
}

/// `DBSIZE` of the Redis at `addr`.
async fn redis_dbsize(addr: SocketAddr) -> i64 {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to Redis");
    s.write_all(b"DBSIZE\r\n").await.expect("send DBSIZE");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.expect("read DBSIZE");
    let text = String::from_utf8_lossy(&buf[..n]);
    text.trim()
        .strip_prefix(':')
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("DBSIZE answer {text:?}"))
}

/// Reads from `c` until the server closes the connection; panics after `limit`.
async fn closed_within(c: &mut Client, limit: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    let mut seen = Vec::new();
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        assert!(!left.is_zero(), "{what}: the connection is still open after {limit:?}; received {seen:?}");
        match c.recv_within(left).await {
            common::client::Recv::Eof => return t0.elapsed(),
            common::client::Recv::Timeout => {}
            other => seen.push(other),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_running_servers() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new();
    c.start(&[("game-1", "game"), ("pvp-1", "pvp")]).await;
    let before = pids(&c);
    seed_flow(&c.servers[0], &c.servers[1], Transport::TcpJson, "before-redis")
        .await
        .unwrap_or_else(|e| panic!("seed flow before the Redis restart: {e}"));
    let keys_before = redis_dbsize(c.redis.addr()).await;
    assert!(keys_before > 0, "the seed flow stored nothing in Redis (DBSIZE {keys_before})");

    // Crash Redis; while it is down a login is answered with an error (not a hang, not a
    // success).
    let t_stop = Instant::now();
    blocking(|| c.redis.stop());
    let game = c.servers[0].addr(Transport::TcpJson);
    let mut during = Client::connect(game, Transport::TcpJson).await;
    let r = during
        .try_login("during-redis-outage")
        .await
        .unwrap_or_else(|e| panic!("login while Redis is down: {e}"));
    assert_err(&r, "Server error", "login while Redis is down");
    drop(during);
    let left = REDIS_OUTAGE.saturating_sub(t_stop.elapsed());
    tokio::time::sleep(left).await;
    blocking(|| c.redis.restart()).expect("Redis restarts");
    let down = t_stop.elapsed();
    assert_eq!(redis_dbsize(c.redis.addr()).await, 0, "Redis without persistence restarts empty");

    let (took, attempts) =
        seed_flow_eventually(&c.servers[0], &c.servers[1], "after-redis", REDIS_RECOVERY).await;
    eprintln!(
        "MEASURED redis: down {down:?}; seed flow works again {took:?} after Redis was back \
         ({attempts} attempts, bound {REDIS_RECOVERY:?})"
    );
    // Once Redis answers, so do the servers: the first request of each to the new Redis
    // works (a connection attempt that failed while Redis was down or dying is not reported
    // as a failed call).
    assert_eq!(
        attempts, 1,
        "the seed flow needed {attempts} attempts after Redis was back: the first failed (see above)"
    );
    for t in TRANSPORTS {
        seed_flow(&c.servers[0], &c.servers[1], t, &format!("after-redis-{}", t.name()))
            .await
            .unwrap_or_else(|e| panic!("seed flow after the Redis restart: {e}"));
    }
    // The login that failed during the outage left nothing behind.
    let mut again = Client::connect(game, Transport::TcpJson).await;
    assert_ok(&again.login("during-redis-outage").await, "login of the user refused during the outage");
    assert_never_restarted(&mut c, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_restart_within_the_session_timeout() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new();
    c.zk_session_secs = ZK_SHORT_SESSION_SECS;
    c.start(&[("game-a", "game"), ("game-b", "game"), ("pvp-1", "pvp")]).await;
    let before = pids(&c);
    let (a, b) = (c.servers[0].addr(Transport::TcpJson), c.servers[1].addr(Transport::TcpJson));
    seed_flow(&c.servers[0], &c.servers[2], Transport::TcpJson, "before-zk")
        .await
        .unwrap_or_else(|e| panic!("seed flow before the ZooKeeper restart: {e}"));
    let mut holder = Client::connect(a, Transport::TcpJson).await;
    assert_ok(&holder.login("holder").await, "login of holder on A");
    let mut other = Client::connect(b, Transport::TcpJson).await;
    assert_err(&other.login("holder").await, "Already logged in", "login of holder on B while on A");

    let sessions: Vec<Vec<String>> = c.servers.iter().map(established_sessions).collect();
    let all: Vec<String> = sessions.iter().flatten().cloned().collect();
    assert!(sessions.iter().all(|s| !s.is_empty()), "every server logged its sessions: {sessions:?}");
    let connected = connected_sessions(&c);
    assert!(
        all.iter().all(|s| connected.contains(s)),
        "ZooKeeper lists the servers' sessions {all:?}: {connected:?}"
    );

    let t_stop = Instant::now();
    blocking(|| c.zk.restart()).expect("ZooKeeper restarts");
    let down = t_stop.elapsed();
    assert!(
        down < Duration::from_secs(ZK_SHORT_SESSION_SECS) / 2,
        "the restart took {down:?}, not well inside the session timeout of {ZK_SHORT_SESSION_SECS} s"
    );

    // The very sessions reattach.
    let t_back = Instant::now();
    common::eventually(ZK_SHORT_RECOVERY, "the servers' sessions reattached", || {
        let connected = connected_sessions(&c);
        let all = &all;
        async move { all.iter().all(|s| connected.contains(s)).then_some(()) }
    })
    .await;
    let reattached = t_back.elapsed();

    let (took, attempts) =
        seed_flow_eventually(&c.servers[0], &c.servers[2], "after-zk", ZK_SHORT_RECOVERY).await;
    let mut fresh = Client::connect(b, Transport::TcpJson).await;
    assert_ok(&fresh.login("fresh-after-zk").await, "new login on B after the restart");

    // Unique login still holds: holder is still logged in on A and usable; B refuses it.
    let r = holder
        .try_call("cs_enter_pvp", json!({}), "sc_enter_pvp")
        .await
        .unwrap_or_else(|e| panic!("holder's connection on A after a {down:?} ZooKeeper restart: {e}"));
    assert_ok(&r, "holder still logged in on A: enter pvp");
    let mut other = Client::connect(b, Transport::TcpJson).await;
    assert_err(&other.login("holder").await, "Already logged in", "login of holder on B after the restart");
    // ... and the refusal is the live login, not a leftover: once A logs it out, B takes it.
    assert_ok(&holder.call("cs_logout", json!({}), "sc_logout").await, "holder logs out on A");
    let mut on_b = Client::connect(b, Transport::TcpJson).await;
    assert_ok(&on_b.login("holder").await, "login of holder on B after the logout on A");

    for (s, before) in c.servers.iter().zip(&sessions) {
        assert_eq!(
            &established_sessions(s),
            before,
            "{} opened new ZooKeeper sessions: its sessions did not survive",
            s.name
        );
        let expired: Vec<String> = strip_ansi(&s.stderr_log())
            .lines()
            .filter(|l| l.to_lowercase().contains("expired"))
            .map(str::to_string)
            .collect();
        assert!(expired.is_empty(), "{} saw a session expire: {expired:?}", s.name);
    }
    eprintln!(
        "MEASURED zk short: restart took {down:?}; sessions reattached {reattached:?} after ZooKeeper was back; \
         seed flow works {took:?} after that ({attempts} attempts, bound {ZK_SHORT_RECOVERY:?})"
    );
    assert_never_restarted(&mut c, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_outage_longer_than_the_session_timeout() {
    let _serial = SERIAL.lock().await;
    let mut c = Cluster::new();
    c.zk_session_secs = ZK_LONG_SESSION_SECS;
    c.start(&[("game-a", "game"), ("game-b", "game"), ("pvp-1", "pvp")]).await;
    let before = pids(&c);
    let (a, b) = (c.servers[0].addr(Transport::TcpJson), c.servers[1].addr(Transport::TcpJson));
    seed_flow(&c.servers[0], &c.servers[2], Transport::TcpJson, "before-outage")
        .await
        .unwrap_or_else(|e| panic!("seed flow before the ZooKeeper outage: {e}"));
    let mut early = Client::connect(a, Transport::TcpJson).await;
    assert_ok(&early.login("early").await, "login of early on A");
    let mut other = Client::connect(b, Transport::TcpJson).await;
    assert_err(&other.login("early").await, "Already logged in", "login of early on B while on A");
    drop(other);
    let sessions_before: Vec<Vec<String>> = c.servers.iter().map(established_sessions).collect();

    let t_stop = Instant::now();
    blocking(|| c.zk.stop());
    // A cannot renew its lease: it closes early's connection before the session could
    // expire at the service.
    let lease_limit = Duration::from_secs(ZK_LONG_SESSION_SECS + 2);
    let closed =
        closed_within(&mut early, lease_limit, "early's connection on A while ZooKeeper is down").await;
    drop(early);
    // No login is accepted without ZooKeeper.
    let mut during = Client::connect(b, Transport::TcpJson).await;
    match tokio::time::timeout(Duration::from_secs(3), during.try_login("during-zk-outage")).await {
        Ok(Ok(r)) => assert_eq!(r["error"], json!(true), "a login while ZooKeeper is down: {r}"),
        Ok(Err(e)) => eprintln!("login while ZooKeeper is down got no reply: {e}"),
        Err(_) => eprintln!("login while ZooKeeper is down got no reply within 3 s"),
    }
    drop(during);
    tokio::time::sleep(ZK_LONG_OUTAGE.saturating_sub(t_stop.elapsed())).await;
    blocking(|| c.zk.restart()).expect("ZooKeeper restarts");
    let down = t_stop.elapsed();
    let t_back = Instant::now();

    let (flow, attempts) =
        seed_flow_eventually(&c.servers[0], &c.servers[2], "after-outage", ZK_LONG_RECOVERY).await;
    let flow_at = t_back.elapsed();

    // Unique login holds again for a new account ...
    let left = ZK_LONG_RECOVERY.saturating_sub(t_back.elapsed());
    let (_, winner, _fresh) = unique_login_eventually(a, b, "fresh-after-outage", left).await;
    let left = ZK_LONG_RECOVERY.saturating_sub(t_back.elapsed());
    refused_eventually(
        [a, b][1 - winner],
        "fresh-after-outage",
        left,
        "login of a held account after the outage",
    )
    .await;
    // ... and for the account logged in before the outage: never on both servers.
    let left = ZK_LONG_RECOVERY.saturating_sub(t_back.elapsed());
    let (early_took, winner, _early) = unique_login_eventually(a, b, "early", left).await;
    let early_at = t_back.elapsed();
    let left = ZK_LONG_RECOVERY.saturating_sub(t_back.elapsed());
    refused_eventually([a, b][1 - winner], "early", left, "login of early on the other server").await;

    // Once the stale sessions are gone (early's login proves it), the cluster still works
    // on every transport: the servers' new registrations did not go with them.
    for t in TRANSPORTS {
        seed_flow(&c.servers[0], &c.servers[2], t, &format!("late-after-outage-{}", t.name()))
            .await
            .unwrap_or_else(|e| panic!("seed flow after the stale sessions expired: {e}"));
    }
    for t in TRANSPORTS {
        seed_flow(&c.servers[1], &c.servers[2], t, &format!("late-after-outage-b-{}", t.name()))
            .await
            .unwrap_or_else(|e| panic!("seed flow from B after the stale sessions expired: {e}"));
    }

    // The case tested is the expiry one: every server opened new sessions.
    for (i, s) in c.servers.iter().enumerate() {
        let now = established_sessions(s);
        assert!(
            now.len() > sessions_before[i].len(),
            "{} opened no new ZooKeeper session after a {down:?} outage (sessions {now:?})",
            s.name
        );
    }
    eprintln!(
        "MEASURED zk long: down {down:?} (session timeout {ZK_LONG_SESSION_SECS} s); A closed early's link \
         {closed:?} after the stop; after ZooKeeper was back: seed flow works at {flow_at:?} \
         ({flow:?} of polling, {attempts} attempts), early logged in exactly once at {early_at:?} \
         ({early_took:?} of polling); bound {ZK_LONG_RECOVERY:?}"
    );
    assert_never_restarted(&mut c, &before).await;
}
