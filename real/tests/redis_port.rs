//! The `Kv` port's semantics on a real Redis (a private server per test).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{blocking, eventually};
use engine::env::{Kv, KvError, SetCondition, SetOptions, Ttl};
use real::adapters::{RedisKv, RedisKvOptions};

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn kv(addr: std::net::SocketAddr) -> RedisKv {
    RedisKv::with_addr(addr, RedisKvOptions::default()).expect("redis client")
}

fn set(condition: SetCondition, px_ms: Option<u64>, keep_ttl: bool) -> SetOptions {
    SetOptions { condition, px: px_ms.map(Duration::from_millis), keep_ttl }
}

fn remaining(t: Ttl) -> Duration {
    match t {
        Ttl::Remaining(d) => d,
        other => panic!("expected a TTL, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_set_conditions_and_ttls() {
    use SetCondition::*;
    let redis = common::redis();
    let c = kv(redis.addr());
    c.connect().await.unwrap();

    assert_eq!(c.get("a").await, Ok(None));
    assert_eq!(c.set("a", b("1"), SetOptions::default()).await, Ok(true));
    assert_eq!(c.get("a").await, Ok(Some(b("1"))));
    assert_eq!(c.del("a").await, Ok(true));
    assert_eq!(c.del("a").await, Ok(false));

    // NX / XX.
    assert_eq!(c.set("n", b("x"), set(IfPresent, None, false)).await, Ok(false));
    assert_eq!(c.get("n").await, Ok(None));
    assert_eq!(c.set("n", b("1"), set(IfAbsent, None, false)).await, Ok(true));
    assert_eq!(c.set("n", b("2"), set(IfAbsent, None, false)).await, Ok(false));
    assert_eq!(c.get("n").await, Ok(Some(b("1"))));
    assert_eq!(c.set("n", b("3"), set(IfPresent, None, false)).await, Ok(true));
    assert_eq!(c.get("n").await, Ok(Some(b("3"))));

    // PX, KEEPTTL, and a plain SET clearing the TTL.
    assert_eq!(c.set("t", b("1"), set(Always, Some(60_000), false)).await, Ok(true));
    let left = remaining(c.pttl("t").await.unwrap());
    assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60), "{left:?}");
    assert_eq!(c.set("t", b("2"), set(Always, None, true)).await, Ok(true));
    assert!(remaining(c.pttl("t").await.unwrap()) > Duration::from_secs(58), "KEEPTTL kept it");
    assert_eq!(c.set("t", b("3"), set(Always, Some(5_000), true)).await, Ok(true));
    assert!(remaining(c.pttl("t").await.unwrap()) <= Duration::from_secs(5), "PX wins over KEEPTTL");
    assert_eq!(c.set("t", b("4"), SetOptions::default()).await, Ok(true));
    assert_eq!(c.pttl("t").await, Ok(Ttl::NoExpiry));
    assert_eq!(c.pttl("none").await, Ok(Ttl::NoKey));
    assert_eq!(
        c.set("t", b("5"), set(Always, Some(0), false)).await,
        Err(KvError::Server("ERR invalid expire time in 'set' command".into()))
    );
    assert_eq!(c.get("t").await, Ok(Some(b("4"))));

    // PEXPIRE.
    assert_eq!(c.pexpire("none", Duration::from_secs(1)).await, Ok(false));
    assert_eq!(c.pexpire("t", Duration::from_secs(30)).await, Ok(true));
    assert!(remaining(c.pttl("t").await.unwrap()) > Duration::from_secs(29));
    assert_eq!(c.pexpire("t", Duration::ZERO).await, Ok(true));
    assert_eq!(c.get("t").await, Ok(None), "a zero TTL deletes");

    // Expiry by the server's clock: gone for GET, NX may write again.
    assert_eq!(c.set("e", b("1"), set(Always, Some(150), false)).await, Ok(true));
    assert_eq!(c.set("e", b("2"), set(IfAbsent, None, false)).await, Ok(false));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.get("e").await, Ok(None));
    assert_eq!(c.pttl("e").await, Ok(Ttl::NoKey));
    assert_eq!(c.set("e", b("2"), set(IfAbsent, None, false)).await, Ok(true));
    assert_eq!(c.set("x", b("1"), set(Always, Some(100), false)).await, Ok(true));
    assert_eq!(c.pexpire("x", Duration::from_millis(100)).await, Ok(true));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(c.del("x").await, Ok(false), "DEL never sees an expired key");
    assert_eq!(c.pexpire("x", Duration::from_secs(1)).await, Ok(false));

    // Binary values.
    let bin = Bytes::from_static(&[0, 159, 146, 150, 255, b'\r', b'\n']);
    assert_eq!(c.set("bin", bin.clone(), SetOptions::default()).await, Ok(true));
    assert_eq!(c.get("bin").await, Ok(Some(bin)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_and_take() {
    let redis = common::redis();
    let c = kv(redis.addr());

    // Absent -> value.
    assert_eq!(c.compare_and_set("k", Some(b("x")), Some(b("1")), None).await, Ok(false));
    assert_eq!(c.get("k").await, Ok(None));
    assert_eq!(c.compare_and_set("k", None, Some(b("1")), None).await, Ok(true));
    assert_eq!(c.compare_and_set("k", None, Some(b("9")), None).await, Ok(false));
    assert_eq!(c.get("k").await, Ok(Some(b("1"))));
    // Mismatch changes nothing; a match replaces with the new TTL (or none).
    assert_eq!(c.compare_and_set("k", Some(b("2")), Some(b("3")), None).await, Ok(false));
    assert_eq!(
        c.compare_and_set("k", Some(b("1")), Some(b("2")), Some(Duration::from_secs(30))).await,
        Ok(true)
    );
    assert_eq!(c.get("k").await, Ok(Some(b("2"))));
    assert!(remaining(c.pttl("k").await.unwrap()) > Duration::from_secs(29));
    assert_eq!(c.compare_and_set("k", Some(b("2")), Some(b("3")), None).await, Ok(true));
    assert_eq!(c.pttl("k").await, Ok(Ttl::NoExpiry));
    // Value -> absent.
    assert_eq!(c.compare_and_set("k", Some(b("3")), None, None).await, Ok(true));
    assert_eq!(c.get("k").await, Ok(None));
    // Binary-safe comparison (a prefix or an empty value is not a match for absence).
    let v = Bytes::from_static(&[0, 1, 2, 255]);
    assert_eq!(c.compare_and_set("bin", None, Some(v.clone()), None).await, Ok(true));
    assert_eq!(c.compare_and_set("bin", Some(Bytes::from_static(&[0, 1, 2])), None, None).await, Ok(false));
    assert_eq!(c.compare_and_set("bin", Some(v.clone()), Some(Bytes::new()), None).await, Ok(true));
    assert_eq!(c.get("bin").await, Ok(Some(Bytes::new())));
    assert_eq!(c.compare_and_set("bin", None, Some(b("x")), None).await, Ok(false), "empty is not absent");
    // A bad TTL is refused before anything is compared.
    assert_eq!(
        c.compare_and_set("bin", Some(Bytes::new()), Some(b("y")), Some(Duration::ZERO)).await,
        Err(KvError::Server("ERR invalid expire time in 'set' command".into()))
    );
    assert_eq!(c.get("bin").await, Ok(Some(Bytes::new())));

    // take = GETDEL.
    c.set("once", b("token"), SetOptions::default()).await.unwrap();
    assert_eq!(c.take("once").await, Ok(Some(b("token"))));
    assert_eq!(c.take("once").await, Ok(None));
    assert_eq!(c.get("once").await, Ok(None));

    // Lists are the wrong type for string commands.
    c.rpush("list", vec![b("a")]).await.unwrap();
    assert_eq!(c.get("list").await, Err(KvError::WrongType));
    assert_eq!(c.take("list").await, Err(KvError::WrongType));
    assert_eq!(c.compare_and_set("list", None, Some(b("x")), None).await, Err(KvError::WrongType));
    assert_eq!(c.llen("list").await, Ok(1), "nothing changed");

    // CAS is atomic: concurrent increments through CAS loops lose nothing.
    let c = Arc::new(c);
    c.set("ctr", b("0"), SetOptions::default()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                loop {
                    let cur = c.get("ctr").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur).unwrap().parse().unwrap();
                    let next = Bytes::from((n + 1).to_string());
                    if c.compare_and_set("ctr", Some(cur), Some(next), None).await.unwrap() {
                        break;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get("ctr").await, Ok(Some(b("200"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists() {
    let redis = common::redis();
    let c = kv(redis.addr());
    assert_eq!(c.llen("q").await, Ok(0));
    assert_eq!(c.lpop("q").await, Ok(None));
    assert_eq!(c.lrange("q", 0, -1).await, Ok(vec![]));
    assert_eq!(c.rpush("q", vec![b("a"), b("b")]).await, Ok(2));
    assert_eq!(c.rpush("q", vec![b("c"), b("d"), b("e")]).await, Ok(5));
    assert_eq!(c.llen("q").await, Ok(5));
    assert_eq!(c.lrange("q", 0, -1).await, Ok(vec![b("a"), b("b"), b("c"), b("d"), b("e")]));
    assert_eq!(c.lrange("q", 1, 2).await, Ok(vec![b("b"), b("c")]));
    assert_eq!(c.lrange("q", -2, -1).await, Ok(vec![b("d"), b("e")]));
    assert_eq!(c.lrange("q", -100, 0).await, Ok(vec![b("a")]));
    assert_eq!(c.lrange("q", 3, 1).await, Ok(vec![]));
    assert_eq!(c.lrange("q", 10, 20).await, Ok(vec![]));
    for want in ["a", "b", "c", "d", "e"] {
        assert_eq!(c.lpop("q").await, Ok(Some(b(want))));
    }
    assert_eq!(c.lpop("q").await, Ok(None));
    assert_eq!(c.pttl("q").await, Ok(Ttl::NoKey), "an emptied list disappears");
    // An existing list keeps its TTL when pushed to.
    c.rpush("t", vec![b("1")]).await.unwrap();
    assert_eq!(c.pexpire("t", Duration::from_secs(30)).await, Ok(true));
    c.rpush("t", vec![b("2")]).await.unwrap();
    assert!(remaining(c.pttl("t").await.unwrap()) > Duration::from_secs(29));
    // Wrong types and bad arguments.
    c.set("s", b("x"), SetOptions::default()).await.unwrap();
    assert_eq!(c.rpush("s", vec![b("1")]).await, Err(KvError::WrongType));
    assert_eq!(c.lpop("s").await, Err(KvError::WrongType));
    assert_eq!(c.llen("s").await, Err(KvError::WrongType));
    assert_eq!(c.lrange("s", 0, -1).await, Err(KvError::WrongType));
    assert_eq!(
        c.rpush("q", vec![]).await,
        Err(KvError::Server("ERR wrong number of arguments for 'rpush' command".into()))
    );
    // DEL, PEXPIRE and a plain SET work on any type.
    assert_eq!(c.set("t", b("now a string"), SetOptions::default()).await, Ok(true));
    assert_eq!(c.get("t").await, Ok(Some(b("now a string"))));
    c.rpush("l2", vec![b("1")]).await.unwrap();
    assert_eq!(c.del("l2").await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_a_connected_client_recovers() {
    let mut redis = common::redis();
    let c = kv(redis.addr());
    c.set("k", b("v"), SetOptions::default()).await.unwrap();

    blocking(|| redis.stop());
    // Down: refused connections fail at once and were not sent.
    let t0 = Instant::now();
    let e = eventually(Duration::from_secs(5), "a refused call", || async {
        match c.get("k").await {
            Err(e @ KvError::ConnectionLoss { maybe_applied: false }) => Some(e),
            Err(KvError::ConnectionLoss { maybe_applied: true }) => None, // the call that met the dying connection
            other => panic!("unexpected {other:?}"),
        }
    })
    .await;
    assert!(!e.maybe_applied());
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    assert_eq!(
        c.set("k", b("w"), SetOptions::default()).await,
        Err(KvError::ConnectionLoss { maybe_applied: false })
    );

    blocking(|| redis.restart()).expect("restart Redis");
    // The client reconnects by itself; without persistence every key is gone.
    let got = eventually(Duration::from_secs(5), "the client to recover", || async {
        match c.get("k").await {
            Ok(v) => Some(v),
            Err(e) => {
                assert!(matches!(e, KvError::ConnectionLoss { .. } | KvError::Timeout { .. }), "{e:?}");
                None
            }
        }
    })
    .await;
    assert_eq!(got, None);
    assert_eq!(c.set("k", b("again"), SetOptions::default()).await, Ok(true));
    assert_eq!(
        c.compare_and_set("k", Some(b("again")), Some(b("cas")), None).await,
        Ok(true),
        "script reloaded"
    );
}

/// The manager's background reconnect after a crash can reach a socket that accepts and then
/// resets (here a relay whose upstream is gone; in production the dying server itself). The
/// failed attempt must neither count as a maybe-applied call nor fail the first call after
/// Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_reconnect_attempt_does_not_fail_the_next_call() {
    let mut redis = common::redis();
    let link = common::Link::to(redis.addr()).await;
    let c = kv(link.addr());
    c.set("k", b("v"), SetOptions::default()).await.unwrap();
    assert_eq!(link.accepted(), 1);

    blocking(|| redis.stop());
    // The client sees the connection close and reconnects through the relay, which accepts
    // and then drops it (its upstream refuses).
    eventually(Duration::from_secs(5), "the background reconnect attempt", || async {
        (link.accepted() >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        c.get("k").await,
        Err(KvError::ConnectionLoss { maybe_applied: false }),
        "a call while no connection can be made was not sent"
    );

    blocking(|| redis.restart()).expect("restart Redis");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.get("k").await, Ok(None), "the first call after Redis is back");
    assert_eq!(c.set("k", b("w"), SetOptions::default()).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_redis_keeps_acknowledged_writes_across_a_crash() {
    let mut redis = common::redis_persistent();
    let c = kv(redis.addr());
    c.set("k", b("v"), SetOptions::default()).await.unwrap();
    c.rpush("q", vec![b("1"), b("2")]).await.unwrap();
    blocking(|| redis.restart()).expect("restart Redis");
    let got =
        eventually(Duration::from_secs(5), "the client to recover", || async { c.get("k").await.ok() }).await;
    assert_eq!(got, Some(b("v")));
    assert_eq!(c.lrange("q", 0, -1).await, Ok(vec![b("1"), b("2")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_calls_time_out_and_may_have_applied() {
    let redis = common::redis();
    let c = RedisKv::with_addr(
        redis.addr(),
        RedisKvOptions {
            command_timeout: Duration::from_millis(400),
            connect_timeout: Duration::from_millis(400),
        },
    )
    .unwrap();
    c.set("k", b("1"), SetOptions::default()).await.unwrap();

    redis.pause();
    let t0 = Instant::now();
    assert_eq!(
        c.set("k", b("2"), SetOptions::default()).await,
        Err(KvError::Timeout { maybe_applied: true })
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "took {:?}", t0.elapsed());
    redis.resume();
    // The write was in Redis's socket buffer: it applied after all.
    let got = eventually(Duration::from_secs(5), "answers again", || async { c.get("k").await.ok() }).await;
    assert_eq!(got, Some(b("2")));

    // Nothing listening: the call fails at once and nothing was sent.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dead = RedisKv::with_addr(port, RedisKvOptions::default()).unwrap();
    assert_eq!(dead.get("k").await, Err(KvError::ConnectionLoss { maybe_applied: false }));
    assert_eq!(
        dead.set("k", b("v"), SetOptions::default()).await,
        Err(KvError::ConnectionLoss { maybe_applied: false })
    );
}
