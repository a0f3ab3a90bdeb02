//! The object store on in-memory ZooKeeper and SQL instances ([`Harness`], [`FakeDb`]), time
//! stepped by hand. The harness has no network, so a lend request never arrives: these tests
//! cover taking, fencing, waiting out an owner, commits and their recovery; lending over a
//! network is exercised by the `object_lending` scenario.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::stored::{decision_suffix, decision_table, Decision, Pending, StoredObject};
use super::*;
use crate::account::{AccountConfig, AccountManager};
use crate::cluster::{Cluster, ClusterConfig};
use crate::env::{DbInstances, Env, Expect, SessionOptions, TableName, WriteOp};
use crate::rpc::{Rpc, RpcConfig};
use crate::shard::{ShardConfig, ShardRouter};
use crate::testing::{FakeDb, Harness};

const APP: &str = "app";
pub(crate) const SESSION: Duration = Duration::from_secs(10);
/// 4 shards over 2 instances: users "0" and "2" on db-0, "1" and "3" on db-1.
const SHARDS: u32 = 4;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Purse {
    user: String,
    gold: i64,
}

impl Model for Purse {
    const MODEL: &'static str = "purse";
    fn key(&self) -> String {
        self.user.clone()
    }
}

fn purse(user: &str, gold: i64) -> Purse {
    Purse { user: user.to_string(), gold }
}

pub(crate) struct World {
    pub h: Harness,
    pub dbs: Vec<FakeDb>,
}

impl World {
    pub fn new(seed: u64) -> World {
        World { h: Harness::new(seed), dbs: vec![FakeDb::new("db-0"), FakeDb::new("db-1")] }
    }

    pub fn env(&self, node: &str) -> Env {
        let mut env = self.h.env(node);
        let dir = self.dbs.iter().fold(DbInstances::empty(), |d, db| d.with(Arc::new(db.clone())).unwrap());
        env.db = Arc::new(dir);
        env
    }

    /// Server `game-n`: cluster member, RPC, account manager, shard router, object store.
    pub fn server(&self, n: u8, bugs: OrmBugs, observer: Option<Arc<dyn OrmObserver>>) -> Orm {
        let env = self.env(&format!("game-{n}"));
        let session = SessionOptions { session_timeout: SESSION, connect_timeout: Duration::from_secs(2) };
        let rpc_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 1, n)), 8015);
        let mut ccfg = ClusterConfig::new(APP, format!("game-{n}"), rpc_addr);
        ccfg.session = session;
        let mut acfg = AccountConfig::new(APP);
        acfg.session = session;
        let shards = ShardConfig::round_robin(&["db-0".to_string(), "db-1".to_string()], SHARDS);
        let mut ocfg = OrmConfig::new(APP);
        ocfg.bugs = bugs;
        self.h.block_on(async move {
            let cluster = Cluster::join(env.clone(), ccfg).await.expect("join");
            let rpc =
                Rpc::start(env.clone(), cluster.id(), Arc::new(cluster.clone()), RpcConfig::new(rpc_addr))
                    .await
                    .expect("rpc");
            let accounts =
                AccountManager::start(env.clone(), cluster.clone(), rpc.clone(), acfg).await.unwrap();
            let router = ShardRouter::start(env.clone(), APP, shards, session).await.unwrap();
            Orm::start(env, ocfg, accounts, router, rpc, cluster.id(), observer).await.unwrap()
        })
    }

    pub fn run<T: Send + 'static>(
        &self,
        orm: &Orm,
        f: impl FnOnce(Orm) -> futures::future::BoxFuture<'static, T> + Send + 'static,
    ) -> T {
        let orm = orm.clone();
        self.h.block_on(async move { f(orm).await })
    }

    /// The stored row of `user`'s purse and the instance it is on.
    fn row(&self, user: &str) -> Option<(StoredObject, u64, u64)> {
        let shard: u32 = user.parse::<u32>().unwrap() % SHARDS;
        let db = &self.dbs[(shard % 2) as usize];
        let key = crate::shard::key::user_key(crate::shard::ShardId(shard), user, &format!("purse.{user}"));
        db.with(|i| i.get(&TableName::new("purse").unwrap(), &key))
            .map(|r| (StoredObject::decode(&r.value).unwrap(), r.version, r.fence))
    }

    fn owner_czxid(&self, user: &str) -> Option<u64> {
        self.h.zk.get(&format!("/{APP}/objects/purse/{user}")).map(|(_, stat)| stat.czxid as u64)
    }
}

fn create(w: &World, orm: &Orm, users: &[(&str, i64)]) {
    let users: Vec<(String, i64)> = users.iter().map(|(u, g)| (u.to_string(), *g)).collect();
    w.run(orm, move |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            let keys: Vec<&str> = users.iter().map(|(u, _)| u.as_str()).collect();
            tx.lock_all::<Purse>(&keys).await.unwrap();
            for (u, g) in &users {
                tx.create(&purse(u, *g)).unwrap();
            }
            tx.commit().await.unwrap();
        })
    })
}

fn transfer(w: &World, orm: &Orm, from: &str, to: &str, amount: i64) -> Result<(), OrmError> {
    let (from, to) = (from.to_string(), to.to_string());
    w.run(orm, move |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            tx.lock_all::<Purse>(&[&from, &to]).await?;
            let mut a = tx.get::<Purse>(&from)?.expect("exists");
            let mut b = tx.get::<Purse>(&to)?.expect("exists");
            a.gold -= amount;
            b.gold += amount;
            tx.put(&a)?;
            tx.put(&b)?;
            tx.commit().await
        })
    })
}

fn gold(w: &World, orm: &Orm, user: &str) -> Option<i64> {
    let user = user.to_string();
    w.run(orm, move |orm| Box::pin(async move { orm.fetch::<Purse>(&user).await.unwrap().map(|p| p.gold) }))
}

#[test]
fn taking_an_object_creates_its_owner_record_and_raises_its_row_fence_to_the_record_zxid() {
    let w = World::new(1);
    let a = w.server(1, OrmBugs::default(), None);
    create(&w, &a, &[("0", 100)]);
    let czxid = w.owner_czxid("0").expect("owner record created");
    let (stored, version, fence) = w.row("0").expect("row written");
    assert_eq!(stored, StoredObject { value: Some(json!({"user": "0", "gold": 100})), pending: None });
    assert_eq!(fence, czxid, "the row carries the owner's fence");
    assert_eq!(version, 1, "one write after the fence-only claim");
    assert_eq!(a.owned(), vec![ObjectRef::of::<Purse>("0")]);
    assert_eq!(gold(&w, &a, "0"), Some(100), "served from the cache");
}

#[test]
fn a_transfer_across_two_instances_commits_both_objects_and_records_the_decision() {
    let w = World::new(2);
    let a = w.server(1, OrmBugs::default(), None);
    create(&w, &a, &[("0", 100), ("1", 100)]);
    transfer(&w, &a, "0", "1", 30).unwrap();
    let (s0, _, _) = w.row("0").unwrap();
    let (s1, _, _) = w.row("1").unwrap();
    assert_eq!((s0.value.unwrap()["gold"].clone(), s0.pending), (json!(70), None));
    assert_eq!((s1.value.unwrap()["gold"].clone(), s1.pending), (json!(130), None), "pending write applied");
    let decisions = w.dbs[0].with(|i| i.rows(&decision_table()));
    assert_eq!(
        decisions.len(),
        2,
        "one decision per cross-instance transaction (the create and the transfer)"
    );
    assert!(decisions.iter().all(|r| &r.value[..] == b"committed"));
    assert_eq!((gold(&w, &a, "0"), gold(&w, &a, "1")), (Some(70), Some(130)));
}

#[test]
fn a_transfer_within_one_instance_writes_no_decision() {
    let w = World::new(3);
    let a = w.server(1, OrmBugs::default(), None);
    create(&w, &a, &[("0", 100), ("2", 5)]);
    transfer(&w, &a, "0", "2", 5).unwrap();
    assert!(w.dbs[0].with(|i| i.rows(&decision_table())).is_empty());
    assert_eq!((gold(&w, &a, "0"), gold(&w, &a, "2")), (Some(95), Some(10)));
}

/// Plants user 1's row with a pending write of transaction `t1` (primary user "0"), as a
/// coordinator that crashed after its prepare would leave it.
fn plant_pending(w: &World, decision: Option<Decision>) {
    let table = TableName::new("purse").unwrap();
    let key = crate::shard::key::user_key(crate::shard::ShardId(1), "1", "purse.1");
    let stored = StoredObject {
        value: Some(json!({"user": "1", "gold": 100})),
        pending: Some(Pending {
            txn: "t1".into(),
            primary: "0".into(),
            value: Some(json!({"user": "1", "gold": 999})),
        }),
    };
    w.dbs[1].with(|i| i.transact(&[WriteOp::put(&table, key, stored.encode(), Expect::Absent, 1)]).unwrap());
    if let Some(d) = decision {
        let key = crate::shard::key::user_key(crate::shard::ShardId(0), "0", &decision_suffix("t1"));
        w.dbs[0].with(|i| {
            i.transact(&[WriteOp::put(&decision_table(), key, d.encode(), Expect::Absent, 0)]).unwrap()
        });
    }
}

#[test]
fn the_next_owner_aborts_an_undecided_pending_write_so_its_coordinator_can_never_commit_it() {
    let w = World::new(4);
    plant_pending(&w, None);
    let a = w.server(1, OrmBugs::default(), None);
    assert_eq!(gold(&w, &a, "1"), Some(100), "the old state");
    let (stored, _, _) = w.row("1").unwrap();
    assert_eq!(stored.pending, None, "the row is settled");
    let key = crate::shard::key::user_key(crate::shard::ShardId(0), "0", &decision_suffix("t1"));
    let decision = w.dbs[0].with(|i| i.get(&decision_table(), &key)).expect("decision created");
    assert_eq!(&decision.value[..], b"aborted");
}

#[test]
fn the_next_owner_applies_a_committed_pending_write() {
    let w = World::new(5);
    plant_pending(&w, Some(Decision::Committed));
    let a = w.server(1, OrmBugs::default(), None);
    assert_eq!(gold(&w, &a, "1"), Some(999), "redo applied");
    assert_eq!(w.row("1").unwrap().0.pending, None);
}

#[test]
fn effects_run_after_a_commit_and_never_after_an_abort() {
    let w = World::new(6);
    let a = w.server(1, OrmBugs::default(), None);
    create(&w, &a, &[("0", 100)]);
    let ran: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    let r = ran.clone();
    let seen_before_commit = w.run(&a, move |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            let mut p = tx.fetch::<Purse>("0").await.unwrap().unwrap();
            p.gold += 1;
            tx.put(&p).unwrap();
            let r2 = r.clone();
            tx.after_commit(async move { crate::env::lock(&r2).push("committed") });
            let r3 = r.clone();
            let mut aborted = orm.begin();
            aborted.after_commit(async move { crate::env::lock(&r3).push("aborted") });
            drop(aborted);
            let before = crate::env::lock(&r).len();
            tx.commit().await.unwrap();
            before
        })
    });
    w.h.run_until_stalled();
    assert_eq!(seen_before_commit, 0, "nothing ran before the commit");
    assert_eq!(*crate::env::lock(&ran), vec!["committed"]);
}

#[test]
fn taking_an_object_that_sorts_before_a_held_one_is_refused() {
    let w = World::new(7);
    let a = w.server(1, OrmBugs::default(), None);
    create(&w, &a, &[("0", 1), ("1", 1)]);
    let err = w.run(&a, |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            tx.fetch::<Purse>("1").await.unwrap();
            tx.fetch::<Purse>("0").await.unwrap_err()
        })
    });
    assert!(matches!(err, OrmError::LockOrder { .. }), "{err:?}");
    // lock_all sorts, whatever the argument order.
    transfer(&w, &a, "1", "0", 1).unwrap();
    assert_eq!((gold(&w, &a, "0"), gold(&w, &a, "1")), (Some(2), Some(0)));
}

#[test]
fn an_object_unused_for_the_cache_expiry_is_released() {
    let w = World::new(8);
    let a = w.server(1, OrmBugs::default(), None);
    create(&w, &a, &[("0", 1)]);
    assert!(w.owner_czxid("0").is_some());
    w.h.advance(Duration::from_secs(5));
    assert!(a.owned().is_empty(), "forgotten");
    assert_eq!(w.owner_czxid("0"), None, "owner record deleted");
    assert_eq!(gold(&w, &a, "0"), Some(1), "taken again on next use, from SQL");
}

#[derive(Default)]
struct Acts(Mutex<Vec<(String, u64)>>);

impl OrmObserver for Acts {
    fn acted(&self, object: &ObjectRef, fence: u64) {
        crate::env::lock(&self.0).push((object.to_string(), fence));
    }
}

/// Acts and releases, in order: `"acted purse/0"`, `"released purse/0"`.
#[derive(Default)]
struct Holds(Mutex<Vec<String>>);

impl OrmObserver for Holds {
    fn acted(&self, object: &ObjectRef, _fence: u64) {
        crate::env::lock(&self.0).push(format!("acted {object}"));
    }
    fn released(&self, object: &ObjectRef) {
        crate::env::lock(&self.0).push(format!("released {object}"));
    }
}

#[test]
fn a_transaction_releases_every_object_it_took_once_when_it_commits_is_refused_or_is_dropped() {
    let w = World::new(11);
    let holds = Arc::new(Holds::default());
    let a = w.server(1, OrmBugs::default(), Some(holds.clone()));
    create(&w, &a, &[("0", 10), ("1", 10)]);
    let (p0, p1) = (ObjectRef::of::<Purse>("0"), ObjectRef::of::<Purse>("1"));
    let events = |h: &Holds| std::mem::take(&mut *crate::env::lock(&h.0));
    let all = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        events(&holds),
        all(&[
            &format!("acted {p0}"),
            &format!("acted {p1}"),
            &format!("acted {p0}"),
            &format!("acted {p1}"),
            &format!("released {p0}"),
            &format!("released {p1}")
        ]),
        "created: taken (two acts), committed (two acts), then released"
    );

    transfer(&w, &a, "0", "1", 3).unwrap();
    let e = events(&holds);
    assert_eq!(e.len(), 6, "{e:?}");
    assert_eq!(
        e[4..],
        all(&[&format!("released {p0}"), &format!("released {p1}")]),
        "released after the commit's acts"
    );

    // Dropped without a commit: released, nothing written.
    w.run(&a, |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            tx.fetch::<Purse>("1").await.unwrap();
        })
    });
    assert_eq!(events(&holds), all(&[&format!("acted {p1}"), &format!("released {p1}")]));

    // Refused half way (lock order): the object it did take is released, once.
    w.run(&a, |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            tx.fetch::<Purse>("1").await.unwrap();
            tx.fetch::<Purse>("0").await.unwrap_err();
        })
    });
    assert_eq!(events(&holds), all(&[&format!("acted {p1}"), &format!("released {p1}")]));
}

#[test]
fn a_cut_off_owner_is_waited_out_and_then_fenced_at_the_database() {
    let w = World::new(9);
    let acts = Arc::new(Acts::default());
    let a = w.server(1, OrmBugs::default(), Some(acts.clone()));
    create(&w, &a, &[("0", 100)]);
    let old_fence = w.owner_czxid("0").unwrap();
    // Server 1 is cut from ZooKeeper: its record stays until the session expires, and the
    // harness has no network, so no lend request reaches it either.
    let sid = w.h.zk.get(&format!("/{APP}/objects/purse/0")).unwrap().1.ephemeral_owner;
    w.h.zk.disconnect(sid);
    let b = w.server(2, OrmBugs::default(), Some(acts.clone()));
    let started = w.h.now();
    assert_eq!(gold(&w, &b, "0"), Some(100), "taken after the wait");
    assert!(
        w.h.now().saturating_since(started) >= Duration::from_secs(5),
        "waited for the session to expire"
    );
    let new_fence = w.owner_czxid("0").unwrap();
    assert!(new_fence > old_fence, "a new owner, a newer fence");
    assert_eq!(w.row("0").unwrap().2, new_fence, "the row's fence was raised before the read");
    // Server 1, whatever it believes, can no longer write: its lease lapsed, and the database
    // refuses its fence.
    let err = w.run(&a, |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            tx.fetch::<Purse>("0").await.map(|_| ())
        })
    });
    assert!(err.is_err(), "server 1 cannot take it back while server 2 owns it: {err:?}");
    let table = TableName::new("purse").unwrap();
    let key = crate::shard::key::user_key(crate::shard::ShardId(0), "0", "purse.0");
    let stale = StoredObject { value: Some(json!({"user": "0", "gold": 1_000_000})), pending: None };
    let refused =
        w.dbs[0].with(|i| i.transact(&[WriteOp::put(&table, key, stale.encode(), Expect::Any, old_fence)]));
    assert!(matches!(refused, Err(crate::env::DbError::Fenced { .. })), "{refused:?}");
    // Acts by fence never interleave: every act of the old fence comes before the new fence's.
    let acts = crate::env::lock(&acts.0).clone();
    let first_new = acts.iter().position(|(_, f)| *f == new_fence).unwrap();
    assert!(acts[first_new..].iter().all(|(_, f)| *f == new_fence), "{acts:?}");
}

#[test]
fn the_no_fence_bug_lets_a_deposed_owner_write() {
    let w = World::new(10);
    let a = w.server(1, OrmBugs { no_fence: true, ..OrmBugs::default() }, None);
    create(&w, &a, &[("0", 100)]);
    assert_eq!(w.row("0").unwrap().2, 0, "rows carry fence 0");
}

/// Adds `amount` to each of `users`' purses, one transaction per user, all at once.
fn add_concurrently(w: &World, orm: &Orm, users: &[&str], amount: i64) -> Vec<Result<(), OrmError>> {
    let users: Vec<String> = users.iter().map(|u| u.to_string()).collect();
    w.run(orm, move |orm| {
        Box::pin(async move {
            let txns = users.iter().map(|u| {
                let orm = orm.clone();
                async move {
                    let mut tx = orm.begin();
                    let mut p = tx.fetch::<Purse>(u).await?.expect("exists");
                    p.gold += amount;
                    tx.put(&p)?;
                    tx.commit().await
                }
            });
            futures::future::join_all(txns).await
        })
    })
}

#[test]
fn concurrent_commits_to_one_instance_share_transactions_and_a_refused_one_fails_alone() {
    let w = World::new(11);
    let a = w.server(1, OrmBugs::default(), None);
    let users = ["0", "2", "4", "6", "8", "10", "12", "14"];
    create(&w, &a, &users.map(|u| (u, 10)));
    let before = w.dbs[0].with(|i| i.commits());
    let results = add_concurrently(&w, &a, &users, 1);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let used = w.dbs[0].with(|i| i.commits()) - before;
    assert!(used < users.len() as u64, "8 commits in {used} transactions");
    for u in users {
        assert_eq!(gold(&w, &a, u), Some(11));
    }

    // Someone bumps user 4's row behind the owner's back (same fence: as a bug would): its
    // next commit is refused, the others in its batch are not.
    let table = TableName::new("purse").unwrap();
    let key = crate::shard::key::user_key(crate::shard::ShardId(0), "4", "purse.4");
    let fence = w.row("4").unwrap().2;
    let stale = StoredObject { value: Some(json!({"user": "4", "gold": 0})), pending: None };
    w.dbs[0].with(|i| i.transact(&[WriteOp::put(&table, key, stale.encode(), Expect::Any, fence)]).unwrap());
    let results = add_concurrently(&w, &a, &users, 1);
    for (u, r) in users.iter().zip(&results) {
        if *u == "4" {
            assert!(matches!(r, Err(OrmError::Conflict(_))), "{r:?}");
        } else {
            assert!(r.is_ok(), "{u}: {r:?}");
        }
    }
    assert_eq!(gold(&w, &a, "4"), Some(0), "evicted, reloaded from SQL");
    assert_eq!(gold(&w, &a, "6"), Some(12));
}

/// Starts commits adding 1 to each of `users`' purses one after another, each once the one
/// before it reached the instance or its queue; returns their results' slot.
fn add_one_by_one(w: &World, orm: &Orm, users: &[&str]) -> Arc<Mutex<Vec<Result<(), OrmError>>>> {
    let results = Arc::new(Mutex::new(Vec::new()));
    let env = w.env("game-1");
    for u in users {
        let (orm, u, results) = (orm.clone(), u.to_string(), results.clone());
        let commit = async move {
            let mut tx = orm.begin();
            let mut p = tx.fetch::<Purse>(&u).await?.expect("exists");
            p.gold += 1;
            tx.put(&p)?;
            tx.commit().await
        };
        let task = async move {
            let r = commit.await;
            crate::env::lock(&results).push(r);
        };
        drop(env.spawn.spawn("test-commit", futures::FutureExt::boxed(task)));
        w.h.run_until_stalled();
    }
    results
}

#[test]
fn group_commit_keeps_as_many_batches_in_flight_as_the_instance_takes_writes_at_once() {
    let users = ["0", "2", "4", "6", "8", "10"];
    for (writers, in_flight) in [(Some(1), 1), (Some(3), 3), (None, crate::env::WRITE_CONCURRENCY_DEFAULT)] {
        let w = World::new(13);
        if let Some(n) = writers {
            w.dbs[0].set_write_concurrency(n);
        }
        let a = w.server(1, OrmBugs::default(), None);
        create(&w, &a, &users.map(|u| (u, 10)));
        let before = w.dbs[0].with(|i| i.commits());

        w.dbs[0].hold_transacts(true);
        let results = add_one_by_one(&w, &a, &users);
        assert_eq!(w.dbs[0].transacts_held(), in_flight, "writers {writers:?}: one batch per flusher");
        assert!(crate::env::lock(&results).is_empty(), "nothing answered while the instance holds them");

        w.dbs[0].hold_transacts(false);
        w.h.run_until_stalled();
        assert_eq!(w.dbs[0].transacts_held(), 0);
        let results = std::mem::take(&mut *crate::env::lock(&results));
        assert_eq!(results.len(), users.len());
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // The commits that waited for a flusher went together once one was free.
        let used = w.dbs[0].with(|i| i.commits()) - before;
        assert!(
            used <= in_flight as u64 + 1,
            "writers {writers:?}: {} commits in {used} transactions",
            users.len()
        );
        for u in users {
            assert_eq!(gold(&w, &a, u), Some(11), "writers {writers:?}, user {u}");
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Hero {
    id: String,
    name: String,
}

impl Model for Hero {
    const MODEL: &'static str = "hero";
    fn key(&self) -> String {
        self.id.clone()
    }
    fn unique_fields(&self) -> Vec<(&'static str, String)> {
        vec![("name", self.name.clone())]
    }
}

/// Creates (or renames to `name`) hero `id`, holding the entries of its old and new names.
fn name_hero(w: &World, orm: &Orm, id: &str, old: Option<&str>, name: &str) -> Result<(), OrmError> {
    let (id, old, name) = (id.to_string(), old.map(str::to_string), name.to_string());
    w.run(orm, move |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            let mut objs = vec![ObjectRef::of::<Hero>(&id), ObjectRef::unique::<Hero>("name", &name)];
            objs.extend(old.iter().map(|o| ObjectRef::unique::<Hero>("name", o)));
            tx.lock(&objs).await?;
            tx.put(&Hero { id: id.clone(), name: name.clone() })?;
            tx.commit().await
        })
    })
}

fn hero_named(w: &World, orm: &Orm, name: &str) -> Option<String> {
    let name = name.to_string();
    w.run(orm, move |orm| {
        Box::pin(async move {
            let mut tx = orm.begin();
            tx.fetch_by::<Hero>("name", &name).await.unwrap().map(|h| h.id)
        })
    })
}

#[test]
fn a_unique_field_finds_its_object_and_a_taken_value_is_refused_atomically() {
    let w = World::new(12);
    let a = w.server(1, OrmBugs::default(), None);
    name_hero(&w, &a, "1", None, "kim").unwrap();
    assert_eq!(hero_named(&w, &a, "kim").as_deref(), Some("1"));
    assert_eq!(hero_named(&w, &a, "lee"), None);

    let err = name_hero(&w, &a, "2", None, "kim").unwrap_err();
    assert_eq!(err, OrmError::UniqueTaken("hero.name.kim".into()));
    let absent = w.run(&a, |orm| Box::pin(async move { orm.fetch::<Hero>("2").await.unwrap() }));
    assert_eq!(absent, None, "the refused create wrote nothing");

    // A rename frees the old value in the same transaction.
    name_hero(&w, &a, "1", Some("kim"), "lee").unwrap();
    assert_eq!(hero_named(&w, &a, "lee").as_deref(), Some("1"));
    assert_eq!(hero_named(&w, &a, "kim"), None);
    name_hero(&w, &a, "2", None, "kim").unwrap();
    assert_eq!(hero_named(&w, &a, "kim").as_deref(), Some("2"));

    // Changing a unique field without holding the old value's entry is refused.
    let err = name_hero(&w, &a, "2", None, "park").unwrap_err();
    assert!(matches!(err, OrmError::NotLocked(ref e) if e.contains("hero.name.kim")), "{err:?}");
}

#[test]
fn objects_keyed_by_ids_with_any_characters_get_encoded_owner_records_and_rows() {
    let w = World::new(13);
    let a = w.server(1, OrmBugs::default(), None);
    // The longest account id of characters that all need escaping: 16 emoji, 64 bytes.
    let longest = "😀".repeat(crate::signed::ACCOUNT_BYTES_MAX / 4);
    let users = ["alice", "a/b", ".", "100%", "a\0b", longest.as_str()];
    create(&w, &a, &users.map(|u| (u, 7)));
    for user in users {
        let name = crate::keyname::encode(user);
        assert!(
            w.h.zk.get(&format!("/{APP}/objects/purse/{name}")).is_some(),
            "{user:?}: the owner record is at the encoded name {name:?}"
        );
        let shard = crate::shard::key::shard_of(user, SHARDS);
        let key = crate::shard::key::user_key(shard, user, &format!("purse.{name}"));
        assert!(key.len() <= crate::env::DB_KEY_BYTES_MAX, "{key:?}");
        let purse = TableName::new("purse").unwrap();
        let rows = w.dbs.iter().filter(|db| db.with(|i| i.get(&purse, &key)).is_some()).count();
        assert_eq!(rows, 1, "{user:?}: one row, at {key:?}");
        assert_eq!(gold(&w, &a, user), Some(7), "{user:?}");
    }
    assert!(w.h.zk.get(&format!("/{APP}/objects/purse/alice")).is_some(), "a plain key is its own name");
}
