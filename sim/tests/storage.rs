//! `engine::storage` (iFun's `CrossServerStorage`) against the simulated Redis: round trips,
//! expiry on the Redis node's clock, TTL-keeping updates, versions, single-use `take` under
//! concurrency, corrupt data and partitions.
//!
//! Nodes of every test:
//!
//! | node | address | what |
//! |---|---|---|
//! | `redis` | 10.0.0.2:6379 | simulated Redis (not persistent) |
//! | `game-1` | 10.0.1.1 | a server with a `CrossServerStorage` client |
//! | `pvp-1` | 10.0.1.2 | another server with its own client |
//!
//! Each simulation runs on a fresh OS thread (std's `HashMap` seeding must happen on a thread
//! that has not built one yet, or two runs of one seed could differ).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::env::{Clock, Kv, SetOptions, Ttl};
use engine::storage::{CrossServerStorage, Key, StorageConfig, StorageError, TTL_MAX};
use madsim::runtime::{Handle, NodeHandle};
use serde_json::{json, Value};
use sim::adapters::{ClockControl, SimClock, SimNet, SimRand, SimSpawn};
use sim::redis::{RedisOptions, SimKv};
use sim::runner::{KV_COMMAND_TIMEOUT, REDIS_ADDR};
use sim::testkit::sleep_ms;

const GAME: (&str, [u8; 4]) = ("game-1", [10, 0, 1, 1]);
const PVP: (&str, [u8; 4]) = ("pvp-1", [10, 0, 1, 2]);
const SEC: Duration = Duration::from_secs(1);

/// One server node and its storage client (and the raw `Kv` under it, to plant bad data).
struct Server {
    node: NodeHandle,
    storage: CrossServerStorage,
    kv: Arc<dyn Kv>,
}

impl Server {
    /// Runs `f` as a task of this node, so its Redis traffic comes from this node.
    async fn run<T, Fut>(&self, f: impl FnOnce(CrossServerStorage, Arc<dyn Kv>) -> Fut) -> T
    where
        T: Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        self.node.spawn(f(self.storage.clone(), self.kv.clone())).await.expect("server task")
    }
}

struct World {
    handle: Handle,
    clocks: ClockControl,
    redis: madsim::task::NodeId,
}

impl World {
    fn new(handle: Handle) -> World {
        let clocks = ClockControl::new();
        let redis = sim::testkit::start_redis(&handle, &clocks, RedisOptions::default());
        World { handle, clocks, redis }
    }

    fn server(&self, (name, ip): (&str, [u8; 4]), cfg: StorageConfig) -> Server {
        let ip = IpAddr::V4(Ipv4Addr::from(ip));
        let node = self.handle.create_node().name(name).ip(ip).build();
        let clock: Arc<dyn Clock> = Arc::new(SimClock::new(name, self.clocks.clone()));
        let kv: Arc<dyn Kv> = Arc::new(SimKv::new(
            Arc::new(SimNet::new(ip)),
            clock,
            Arc::new(SimSpawn),
            REDIS_ADDR,
            KV_COMMAND_TIMEOUT,
        ));
        let storage = CrossServerStorage::new(kv.clone(), Arc::new(SimRand), cfg).expect("valid config");
        Server { node, storage, kv }
    }

    fn game(&self) -> Server {
        self.server(GAME, StorageConfig::enabled())
    }

    fn pvp(&self) -> Server {
        self.server(PVP, StorageConfig::enabled())
    }
}

/// Runs one simulation of `seed` (see `sim::testkit::simulate`).
fn simulate<T: Send + 'static, Fut: Future<Output = T>>(
    seed: u64,
    f: impl FnOnce(World) -> Fut + Send + 'static,
) -> T {
    sim::testkit::simulate(seed, World::new, f)
}

fn user() -> Value {
    json!({"user_name": "alice", "level": 7})
}

/// Remaining TTL in ms, as Redis reports it.
async fn pttl_ms(kv: &Arc<dyn Kv>, s: &CrossServerStorage, key: &Key) -> Option<u128> {
    match kv.pttl(&s.redis_key(key)).await.expect("pttl") {
        Ttl::Remaining(d) => Some(d.as_millis()),
        Ttl::NoKey => None,
        Ttl::NoExpiry => panic!("storage keys always expire"),
    }
}

#[test]
fn the_seed_flow_create_on_game_read_on_pvp() {
    simulate(1, |w| async move {
        let (game, pvp) = (w.game(), w.pvp());
        let key =
            game.run(|s, _| async move { s.create(&user(), Duration::from_secs(10)).await }).await.unwrap();
        // The key travels to the client as text and comes back to another server.
        let text = key.to_string();
        let got = pvp
            .run(|s, _| async move {
                let key: Key = text.parse().expect("a key we printed parses");
                s.read(&key).await
            })
            .await;
        assert_eq!(got, Ok(user()));
    });
}

#[test]
fn create_read_write_refresh_delete_round_trip() {
    simulate(2, |w| async move {
        let game = w.game();
        game.run(|s, _| async move {
            let key = s.create(&json!({"n": 1}), Duration::from_secs(30)).await.unwrap();
            assert_eq!(s.read_versioned(&key).await, Ok((json!({"n": 1}), 1)));
            s.write(&key, &json!({"n": 2})).await.unwrap();
            s.write(&key, &json!([1, "two", null])).await.unwrap();
            assert_eq!(s.read_versioned(&key).await, Ok((json!([1, "two", null]), 3)));
            s.refresh(&key, Duration::from_secs(60)).await.unwrap();
            assert_eq!(
                s.read_versioned(&key).await,
                Ok((json!([1, "two", null]), 3)),
                "refresh keeps version"
            );
            s.delete(&key).await.unwrap();
            assert_eq!(s.read(&key).await, Err(StorageError::NotFound));
            assert_eq!(s.delete(&key).await, Err(StorageError::NotFound));
            assert_eq!(s.write(&key, &json!(1)).await, Err(StorageError::NotFound), "write does not create");
            assert_eq!(s.refresh(&key, SEC).await, Err(StorageError::NotFound));
            assert_eq!(s.take(&key).await, Err(StorageError::NotFound));
            assert_eq!(s.compare_and_write(&key, 3, &json!(1)).await, Err(StorageError::NotFound));
            // Created keys are distinct random v4 UUIDs.
            let other = s.create(&Value::Null, SEC).await.unwrap();
            assert_ne!(other, key);
            assert_eq!(other.uuid().get_version_num(), 4);
            assert_eq!(s.read(&other).await, Ok(Value::Null));
        })
        .await;
    });
}

#[test]
fn values_expire_on_time_and_with_a_redis_clock_jump() {
    simulate(3, |w| async move {
        let game = w.game();
        let clocks = w.clocks.clone();
        game.run(|s, _| async move {
            let key = s.create(&user(), Duration::from_secs(10)).await.unwrap();
            sleep_ms(9_800).await;
            assert_eq!(s.read(&key).await, Ok(user()), "alive just before its ttl");
            sleep_ms(400).await;
            assert_eq!(s.read(&key).await, Err(StorageError::NotFound), "gone after its ttl");
            assert_eq!(s.take(&key).await, Err(StorageError::NotFound));

            // The Redis node's clock decides: a jump forward there expires keys early.
            let key = s.create(&user(), Duration::from_secs(60)).await.unwrap();
            assert_eq!(s.read(&key).await, Ok(user()));
            clocks.jump("redis", 61_000);
            assert_eq!(s.read(&key).await, Err(StorageError::NotFound));
        })
        .await;
    });
}

#[test]
fn refresh_extends_and_shortens() {
    simulate(4, |w| async move {
        let game = w.game();
        game.run(|s, kv| async move {
            let key = s.create(&user(), Duration::from_secs(2)).await.unwrap();
            sleep_ms(1_500).await;
            s.refresh(&key, Duration::from_secs(5)).await.unwrap();
            let left = pttl_ms(&kv, &s, &key).await.unwrap();
            assert!((4_900..=5_000).contains(&left), "ttl restarted at 5 s, left {left} ms");
            sleep_ms(1_500).await; // 3 s after create: past the original ttl
            assert_eq!(s.read(&key).await, Ok(user()));
            s.refresh(&key, Duration::from_millis(200)).await.unwrap();
            sleep_ms(300).await;
            assert_eq!(s.read(&key).await, Err(StorageError::NotFound), "refresh can shorten too");
        })
        .await;
    });
}

#[test]
fn write_and_compare_and_write_keep_the_ttl() {
    simulate(5, |w| async move {
        let game = w.game();
        game.run(|s, kv| async move {
            let key = s.create(&json!(1), Duration::from_secs(3)).await.unwrap();
            sleep_ms(1_000).await;
            s.write(&key, &json!(2)).await.unwrap();
            let left = pttl_ms(&kv, &s, &key).await.unwrap();
            assert!((1_800..=2_050).contains(&left), "write kept the ttl: {left} ms left");
            sleep_ms(1_000).await;
            assert_eq!(s.compare_and_write(&key, 2, &json!(3)).await, Ok(3));
            let left = pttl_ms(&kv, &s, &key).await.unwrap();
            assert!((800..=1_100).contains(&left), "compare_and_write kept the ttl: {left} ms left");
            sleep_ms(1_200).await;
            assert_eq!(s.read(&key).await, Err(StorageError::NotFound), "expired at the original time");
        })
        .await;
    });
}

#[test]
fn create_with_key_conflicts_until_the_key_is_gone() {
    simulate(6, |w| async move {
        let game = w.game();
        game.run(|s, _| async move {
            let key: Key = "0b6c5f1e-8d0a-4c8e-9f1e-2a3b4c5d6e7f".parse().unwrap();
            s.create_with_key(&key, &json!("first"), SEC).await.unwrap();
            assert_eq!(
                s.create_with_key(&key, &json!("second"), SEC).await,
                Err(StorageError::AlreadyExists)
            );
            assert_eq!(s.read_versioned(&key).await, Ok((json!("first"), 1)), "nothing changed");
            sleep_ms(1_100).await;
            s.create_with_key(&key, &json!("third"), SEC).await.unwrap();
            assert_eq!(s.read_versioned(&key).await, Ok((json!("third"), 1)));
        })
        .await;
    });
}

#[test]
fn compare_and_write_admits_one_of_many_racers() {
    for seed in 10..15 {
        let winners = simulate(seed, |w| async move {
            let (game, pvp) = (w.game(), w.pvp());
            let key = game
                .run(|s, _| async move { s.create(&json!(0), Duration::from_secs(30)).await })
                .await
                .unwrap();
            assert_eq!(
                game.run(|s, _| async move { s.compare_and_write(&key, 7, &json!(1)).await }).await,
                Err(StorageError::VersionMismatch { current: 1 })
            );
            let mut tasks = Vec::new();
            for i in 0..10u64 {
                let server = if i % 2 == 0 { &game } else { &pvp };
                let s = server.storage.clone();
                tasks.push(
                    server.node.spawn(async move { (i, s.compare_and_write(&key, 1, &json!(i)).await) }),
                );
            }
            let mut winners = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    (i, Ok(2)) => winners.push(i),
                    (_, Err(StorageError::VersionMismatch { current: 2 })) => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            let (value, version) =
                game.run(|s, _| async move { s.read_versioned(&key).await }).await.unwrap();
            assert_eq!((value, version), (json!(winners[0]), 2));
            winners
        });
        assert_eq!(winners.len(), 1, "seed {seed}: exactly one compare_and_write wins: {winners:?}");
    }
}

#[test]
fn take_is_single_use_under_twenty_concurrent_takers() {
    for seed in 20..25 {
        let got = simulate(seed, |w| async move {
            let (game, pvp) = (w.game(), w.pvp());
            let key = game
                .run(|s, _| async move { s.create(&user(), Duration::from_secs(10)).await })
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for i in 0..20 {
                let server = if i % 2 == 0 { &game } else { &pvp };
                let s = server.storage.clone();
                tasks.push(server.node.spawn(async move { s.take(&key).await }));
            }
            let mut got = Vec::new();
            for t in tasks {
                match t.await.unwrap() {
                    Ok(v) => got.push(v),
                    Err(StorageError::NotFound) => {}
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            assert_eq!(game.run(|s, _| async move { s.read(&key).await }).await, Err(StorageError::NotFound));
            got
        });
        assert_eq!(got, vec![user()], "seed {seed}: exactly one taker gets the value");
    }
}

#[test]
fn concurrent_writes_all_count_and_never_undo_a_refresh() {
    for seed in 30..33 {
        simulate(seed, |w| async move {
            let (game, pvp) = (w.game(), w.pvp());
            let key = game
                .run(|s, _| async move { s.create(&json!(0), Duration::from_secs(5)).await })
                .await
                .unwrap();
            let mut tasks = Vec::new();
            for i in 0..8u64 {
                let server = if i % 2 == 0 { &game } else { &pvp };
                let s = server.storage.clone();
                tasks.push(server.node.spawn(async move {
                    let mut ok = 0u64;
                    for j in 0..5 {
                        match s.write(&key, &json!(i * 100 + j)).await {
                            Ok(()) => ok += 1,
                            Err(StorageError::Contended { .. }) => {}
                            Err(e) => panic!("unexpected {e:?}"),
                        }
                    }
                    ok
                }));
            }
            // A refresh in the middle of the writes must survive them.
            let refreshed = pvp
                .run(|s, _| async move {
                    sleep_ms(1).await;
                    s.refresh(&key, Duration::from_secs(600)).await
                })
                .await;
            assert_eq!(refreshed, Ok(()));
            let mut writes = 0;
            for t in tasks {
                writes += t.await.unwrap();
            }
            assert!(writes > 0);
            game.run(move |s, kv| async move {
                let (_, version) = s.read_versioned(&key).await.unwrap();
                assert_eq!(version, 1 + writes, "every successful write bumped the version once");
                let left = pttl_ms(&kv, &s, &key).await.unwrap();
                assert!(left > 590_000, "a write undid the refresh: {left} ms left");
            })
            .await;
        });
    }
}

#[test]
fn garbage_under_a_key_is_corrupt_not_a_panic() {
    simulate(7, |w| async move {
        let game = w.game();
        game.run(|s, kv| async move {
            let key: Key = "00000000-0000-4000-8000-000000000001".parse().unwrap();
            let name = s.redis_key(&key);
            for garbage in [&b"\xff not json"[..], b"{\"v\":0,\"d\":1}", b"[]", b"{\"d\":1}"] {
                kv.set(&name, Bytes::copy_from_slice(garbage), SetOptions::default()).await.unwrap();
                assert!(matches!(s.read(&key).await, Err(StorageError::Corrupt(_))));
                assert!(matches!(s.write(&key, &json!(1)).await, Err(StorageError::Corrupt(_))));
                assert!(matches!(
                    s.compare_and_write(&key, 1, &json!(1)).await,
                    Err(StorageError::Corrupt(_))
                ));
                assert!(matches!(s.refresh(&key, SEC).await, Err(StorageError::Corrupt(_))));
                assert_eq!(s.create_with_key(&key, &json!(1), SEC).await, Err(StorageError::AlreadyExists));
                assert!(matches!(s.take(&key).await, Err(StorageError::Corrupt(_))), "take reports it");
                assert_eq!(s.read(&key).await, Err(StorageError::NotFound), "and has removed it");
            }
            // A list under the key: WRONGTYPE from Redis is reported as Corrupt too.
            kv.rpush(&name, vec![Bytes::from_static(b"x")]).await.unwrap();
            assert!(matches!(s.read(&key).await, Err(StorageError::Corrupt(_))));
            assert!(matches!(s.take(&key).await, Err(StorageError::Corrupt(_))));
            s.delete(&key).await.unwrap();
            assert_eq!(s.read(&key).await, Err(StorageError::NotFound));
        })
        .await;
    });
}

#[test]
fn bad_arguments_and_disabled_storage_never_reach_redis() {
    simulate(8, |w| async move {
        let small = w.server(GAME, StorageConfig { max_value_bytes: 16, ..StorageConfig::enabled() });
        let off = w.server(PVP, StorageConfig::default());
        // Cut both servers from Redis: any call that reached it would fail with Backend.
        let net = madsim::net::NetSim::current();
        for id in [small.node.id(), off.node.id()] {
            net.clog_link(id, w.redis);
            net.clog_link(w.redis, id);
        }
        small
            .run(|s, _| async move {
                let big = json!("this is longer than sixteen bytes");
                assert_eq!(s.create(&big, SEC).await, Err(StorageError::TooLarge { len: 35, max: 16 }));
                assert_eq!(
                    s.create(&json!(1), Duration::ZERO).await,
                    Err(StorageError::InvalidTtl { ttl: Duration::ZERO })
                );
                let over = TTL_MAX + SEC;
                assert_eq!(s.create(&json!(1), over).await, Err(StorageError::InvalidTtl { ttl: over }));
                // A well-formed call does reach Redis, and fails there.
                let e = s.create(&json!(1), SEC).await.unwrap_err();
                assert!(matches!(e, StorageError::Backend(_)), "{e:?}");
            })
            .await;
        off.run(|s, _| async move {
            let key = Key::from_uuid(Default::default());
            assert_eq!(s.create(&json!(1), SEC).await, Err(StorageError::Disabled));
            assert_eq!(s.take(&key).await, Err(StorageError::Disabled));
        })
        .await;
    });
}

#[test]
fn a_partition_is_a_backend_error_and_heals() {
    simulate(9, |w| async move {
        let game = w.game();
        let key =
            game.run(|s, _| async move { s.create(&user(), Duration::from_secs(60)).await }).await.unwrap();
        let net = madsim::net::NetSim::current();
        net.clog_link(game.node.id(), w.redis);
        net.clog_link(w.redis, game.node.id());
        let e = game.run(|s, _| async move { s.write(&key, &json!(2)).await }).await.unwrap_err();
        assert!(matches!(e, StorageError::Backend(_)), "{e:?}");
        net.unclog_link(game.node.id(), w.redis);
        net.unclog_link(w.redis, game.node.id());
        sleep_ms(2_000).await;
        // The write failed at its first command, a GET, so nothing changed.
        let got = game.run(|s, _| async move { s.read_versioned(&key).await }).await;
        assert_eq!(got, Ok((user(), 1)));
    });
}

#[test]
fn same_seed_same_keys() {
    let keys = |seed| {
        simulate(seed, |w| async move {
            let game = w.game();
            game.run(|s, _| async move {
                let mut keys = Vec::new();
                for _ in 0..3 {
                    keys.push(s.create(&json!(1), SEC).await.unwrap().to_string());
                }
                keys
            })
            .await
        })
    };
    assert_eq!(keys(42), keys(42));
    assert_ne!(keys(42), keys(43));
}
