//! Command queues on the object store's test world (in-memory ZooKeeper and SQL, time
//! stepped by hand, no network): the submit/execute/read/real-time paths, the staleness rule,
//! exactly-once across a crashed server, and why wall-clock staleness breaks under skew.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::*;
use crate::env::TableName;
use crate::orm::tests::World;
use crate::orm::{Model, Orm, OrmBugs};
use crate::shard::key::user_key;
use crate::shard::ShardId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Farm {
    user: String,
    gold: i64,
    farms: u32,
}

impl Model for Farm {
    const MODEL: &'static str = "farm";
    fn key(&self) -> String {
        self.user.clone()
    }
}

#[derive(Deserialize)]
struct Earn {
    amount: i64,
}

impl Command<Farm> for Earn {
    const NAME: &'static str = "earn";
    fn validate(&self) -> Result<(), String> {
        if (1..=50).contains(&self.amount) {
            Ok(())
        } else {
            Err("amount is 1 to 50".into())
        }
    }
    fn apply(&self, f: &mut Farm) -> Result<(), String> {
        f.gold += self.amount;
        Ok(())
    }
}

#[derive(Deserialize)]
struct Build {
    cost: i64,
}

impl Command<Farm> for Build {
    const NAME: &'static str = "build";
    fn apply(&self, f: &mut Farm) -> Result<(), String> {
        if f.gold < self.cost {
            return Err(format!("{} gold, the farm costs {}", f.gold, self.cost));
        }
        f.gold -= self.cost;
        f.farms += 1;
        Ok(())
    }
}

#[derive(Deserialize)]
struct BuyNow {
    gold: i64,
}

impl Command<Farm> for BuyNow {
    const NAME: &'static str = "buy_now";
    fn apply(&self, f: &mut Farm) -> Result<(), String> {
        f.gold += self.gold;
        Ok(())
    }
}

fn set() -> CommandSet<Farm> {
    CommandSet::new(|u| Farm { user: u.to_string(), gold: 100, farms: 0 })
        .queued::<Earn>()
        .queued::<Build>()
        .realtime::<BuyNow>()
}

/// One recorded execution event: (user, pack, `None` at the start of an execution, `Some(committed)` at its end).
type ExecEvent = (String, u64, Option<Option<(Outcome, u64)>>);

/// Records executions.
#[derive(Default)]
struct Execs(Mutex<Vec<ExecEvent>>);

impl CommandsObserver for Execs {
    fn executing(&self, user: &str, pack_id: u64) {
        crate::env::lock(&self.0).push((user.to_string(), pack_id, None));
    }
    fn executed(&self, user: &str, pack_id: u64, committed: Option<(Outcome, u64)>) {
        crate::env::lock(&self.0).push((user.to_string(), pack_id, Some(committed)));
    }
}

fn start(w: &World, n: u8, bugs: CommandsBugs, observer: Option<Arc<Execs>>) -> (Orm, Commands<Farm>) {
    let orm = w.server(n, OrmBugs::default(), None);
    let cfg = CommandsConfig { workers: 2, sweep_period: Duration::from_millis(500), bugs };
    let env = w.env(&format!("game-{n}"));
    let cmds =
        Commands::start(env, orm.clone(), set(), cfg, observer.map(|o| o as Arc<dyn CommandsObserver>))
            .unwrap();
    (orm, cmds)
}

fn pack(c: &Commands<Farm>, id: u64, basis: u64, commands: Value) -> Pack {
    c.parse(&json!({"pack_id": id, "basis": basis, "commands": commands})).unwrap()
}

fn submit(w: &World, c: &Commands<Farm>, user: &str, p: Pack) -> Result<Submitted, CommandsError> {
    let (c, user) = (c.clone(), user.to_string());
    w.h.block_on(async move { c.submit(&user, p).await })
}

/// Submits `packs` at once: they queue on the user's objects in order, ahead of the worker
/// the first one schedules, so all are stored before any executes.
fn submit_together(
    w: &World,
    c: &Commands<Farm>,
    user: &str,
    packs: Vec<Pack>,
) -> Vec<Result<Submitted, CommandsError>> {
    let (c, user) = (c.clone(), user.to_string());
    w.h.block_on(
        async move { futures::future::join_all(packs.into_iter().map(|p| c.submit(&user, p))).await },
    )
}

fn read(w: &World, c: &Commands<Farm>, user: &str) -> StateRead<Farm> {
    let (c, user) = (c.clone(), user.to_string());
    w.h.block_on(async move { c.read(&user).await.unwrap() })
}

/// Reads until no pack waits: the state, its epoch and the next pack id.
fn drained(w: &World, c: &Commands<Farm>, user: &str) -> (Farm, u64, u64) {
    let (c, user) = (c.clone(), user.to_string());
    let clock = w.h.env("probe").clock;
    w.h.block_on(async move {
        for _ in 0..200 {
            match c.read(&user).await {
                Ok(StateRead::State { state, epoch, next_pack }) => return (state, epoch, next_pack),
                Ok(StateRead::RetryAfter { after, .. }) => clock.sleep(after).await,
                Err(_) => clock.sleep(Duration::from_millis(200)).await,
            }
        }
        panic!("{user}'s queue never drained");
    })
}

/// The stored pack row (users "0".."3" over 4 shards on db-0, db-1).
fn pack_row(w: &World, user: &str, id: u64) -> Option<PackRow> {
    let shard: u32 = user.parse::<u32>().unwrap() % 4;
    let key = user_key(ShardId(shard), user, &stored::pack_suffix(id));
    w.dbs[(shard % 2) as usize]
        .with(|i| i.get(&TableName::new(PACK_TABLE).unwrap(), &key))
        .map(|r| stored::decode(&r.value).unwrap())
}

fn outcome(w: &World, user: &str, id: u64) -> Option<Outcome> {
    pack_row(w, user, id).and_then(|r| r.executed).map(|e| e.outcome)
}

#[test]
fn an_acknowledged_pack_is_stored_then_executed_once_in_order() {
    let w = World::new(1);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    assert_eq!(
        submit(&w, &c, "0", pack(&c, 1, 0, json!([{"op": "earn", "amount": 10}]))),
        Ok(Submitted::Stored)
    );
    assert!(pack_row(&w, "0", 1).is_some(), "durable when acknowledged");
    assert_eq!(
        submit(
            &w,
            &c,
            "0",
            pack(&c, 2, 0, json!([{"op": "build", "cost": 50}, {"op": "earn", "amount": 5}]))
        ),
        Ok(Submitted::Stored)
    );
    let (farm, epoch, next) = drained(&w, &c, "0");
    assert_eq!((farm.gold, farm.farms), (100 + 10 - 50 + 5, 1));
    assert_eq!((epoch, next), (2, 3));
    assert_eq!((outcome(&w, "0", 1), outcome(&w, "0", 2)), (Some(Outcome::Applied), Some(Outcome::Applied)));
    assert_eq!(pack_row(&w, "0", 2).unwrap().executed.unwrap().epoch, 2);
}

#[test]
fn a_resent_pack_is_acknowledged_again_and_applied_once() {
    let w = World::new(2);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    let p = pack(&c, 1, 0, json!([{"op": "earn", "amount": 7}]));
    assert_eq!(submit(&w, &c, "0", p.clone()), Ok(Submitted::Stored));
    assert_eq!(submit(&w, &c, "0", p.clone()), Ok(Submitted::Resent));
    let (farm, epoch, _) = drained(&w, &c, "0");
    assert_eq!((farm.gold, epoch), (107, 1));
    assert_eq!(submit(&w, &c, "0", p), Ok(Submitted::Resent), "also after execution");
    assert_eq!(drained(&w, &c, "0").0.gold, 107);
}

#[test]
fn after_a_failed_pack_the_stale_ones_skip_and_a_stale_submit_must_reload() {
    let w = World::new(3);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    // The client plays ahead on epoch 0: pack 2 buys what it cannot afford (a cheat), packs 3
    // and 4 build on it.
    let packs = [
        json!([{"op": "earn", "amount": 10}]),
        json!([{"op": "build", "cost": 500}]),
        json!([{"op": "earn", "amount": 1}]),
        json!([{"op": "build", "cost": 5}]),
    ];
    let packs: Vec<Pack> = packs.into_iter().enumerate().map(|(i, p)| pack(&c, i as u64 + 1, 0, p)).collect();
    assert_eq!(submit_together(&w, &c, "0", packs), vec![Ok(Submitted::Stored); 4]);
    let (farm, epoch, next) = drained(&w, &c, "0");
    let outcomes: Vec<_> = (1..=4).map(|i| outcome(&w, "0", i).unwrap()).collect();
    assert_eq!(outcomes, [Outcome::Applied, Outcome::Failed, Outcome::Skipped, Outcome::Skipped]);
    assert_eq!((farm.gold, farm.farms), (110, 0), "only pack 1 applied");
    assert_eq!((epoch, next), (2, 5));
    assert!(pack_row(&w, "0", 2).unwrap().executed.unwrap().error.unwrap().contains("costs 500"));
    // A pack still built on epoch 0 is refused: the client must reload.
    let stale = pack(&c, 5, 0, json!([{"op": "earn", "amount": 1}]));
    assert_eq!(submit(&w, &c, "0", stale), Ok(Submitted::Reload { epoch: 2 }));
    assert_eq!(pack_row(&w, "0", 5), None, "a refused pack is not stored");
    let fresh = pack(&c, 5, 2, json!([{"op": "earn", "amount": 1}]));
    assert_eq!(submit(&w, &c, "0", fresh), Ok(Submitted::Stored));
    assert_eq!(drained(&w, &c, "0").0.gold, 111);
}

#[test]
fn the_no_stale_skip_bug_applies_packs_built_on_the_bad_state() {
    let w = World::new(4);
    let (_orm, c) = start(&w, 1, CommandsBugs { no_stale_skip: true, ..CommandsBugs::default() }, None);
    let packs = vec![
        pack(&c, 1, 0, json!([{"op": "build", "cost": 500}])),
        pack(&c, 2, 0, json!([{"op": "earn", "amount": 3}])),
    ];
    assert_eq!(submit_together(&w, &c, "0", packs), vec![Ok(Submitted::Stored); 2]);
    drained(&w, &c, "0");
    assert_eq!(outcome(&w, "0", 2), Some(Outcome::Applied), "pack 2 predates the error, yet applied");
}

#[test]
fn malformed_packs_get_typed_errors_and_are_never_stored() {
    let c = set();
    let parse = |v: Value| Pack::parse(&v, &c);
    assert_eq!(parse(json!([1])), Err(PackError::NotAnObject));
    assert_eq!(
        parse(json!({"pack_id": 0, "basis": 0, "commands": [{"op": "earn", "amount": 1}]})),
        Err(PackError::ZeroPackId)
    );
    assert!(matches!(
        parse(json!({"basis": 0, "commands": []})),
        Err(PackError::BadField { field: "pack_id", .. })
    ));
    assert!(matches!(
        parse(json!({"pack_id": -1, "basis": 0, "commands": []})),
        Err(PackError::BadField { field: "pack_id", .. })
    ));
    assert!(matches!(
        parse(json!({"pack_id": 1, "basis": 0, "commands": []})),
        Err(PackError::CommandCount { count: 0, .. })
    ));
    let many: Vec<Value> = (0..=PACK_COMMANDS_MAX).map(|_| json!({"op": "earn", "amount": 1})).collect();
    assert!(matches!(
        parse(json!({"pack_id": 1, "basis": 0, "commands": many})),
        Err(PackError::CommandCount { .. })
    ));
    let big = "x".repeat(PACK_BYTES_MAX);
    assert!(matches!(
        parse(json!({"pack_id": 1, "basis": 0, "commands": [{"op": "earn", "amount": 1, "pad": big}]})),
        Err(PackError::TooLarge { .. })
    ));
    let bad = |cmd: Value| match parse(json!({"pack_id": 1, "basis": 0, "commands": [cmd]})) {
        Err(PackError::BadCommand { index: 0, why }) => why,
        other => panic!("{other:?}"),
    };
    assert!(bad(json!({"op": "fly"})).contains("unknown command"));
    assert!(bad(json!({"op": "earn", "amount": 51})).contains("1 to 50"));
    assert!(bad(json!({"op": "earn"})).contains("amount"));
    assert!(bad(json!({"op": "buy_now", "gold": 5})).contains("real-time"));
    assert!(bad(json!("earn")).contains("JSON object"));
}

#[test]
fn paused_workers_leave_packs_stored_and_resumed_ones_drain_them() {
    let w = World::new(13);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    c.set_workers(0);
    for id in 1..=3 {
        submit(&w, &c, "0", pack(&c, id, 0, json!([{"op": "earn", "amount": 1}]))).unwrap();
    }
    w.h.advance(Duration::from_secs(5));
    assert!(matches!(read(&w, &c, "0"), StateRead::RetryAfter { waiting: 3, .. }));
    assert_eq!(outcome(&w, "0", 1), None, "nothing executed while paused");
    c.set_workers(2);
    assert_eq!(drained(&w, &c, "0").0.gold, 103);
}

#[test]
fn a_gap_in_pack_ids_is_refused_with_the_expected_id() {
    let w = World::new(5);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    let err = submit(&w, &c, "0", pack(&c, 2, 0, json!([{"op": "earn", "amount": 1}])));
    assert_eq!(err, Err(CommandsError::Gap { expected: 1 }));
    let err = submit(&w, &c, "0", pack(&c, 1, 9, json!([{"op": "earn", "amount": 1}])));
    assert_eq!(err, Err(CommandsError::FutureBasis { epoch: 0 }));
}

#[test]
fn a_state_read_waits_for_the_queue_and_then_matches_it() {
    let w = World::new(6);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    // Submit and read in one step, before any worker ran.
    let (c2, user) = (c.clone(), "0".to_string());
    let first = w.h.block_on(async move {
        let p = Pack { pack_id: 1, basis: 0, commands: vec![json!({"op": "earn", "amount": 9})] };
        c2.submit(&user, p).await.unwrap();
        c2.read(&user).await.unwrap()
    });
    match first {
        StateRead::RetryAfter { after, waiting } => {
            assert_eq!(waiting, 1);
            assert!((RETRY_AFTER_MIN..=RETRY_AFTER_MAX).contains(&after), "{after:?}");
        }
        other => panic!("a state was served while pack 1 waits: {other:?}"),
    }
    assert_eq!(drained(&w, &c, "0").0.gold, 109);
    assert!(matches!(read(&w, &c, "0"), StateRead::State { epoch: 1, .. }));
}

#[test]
fn a_real_time_command_applies_at_once_and_a_retry_does_not_apply_it_again() {
    let w = World::new(7);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    let buy = json!({"op": "buy_now", "gold": 30});
    let run = |id: &str, cmd: Value| {
        let (c, id) = (c.clone(), id.to_string());
        w.h.block_on(async move { c.realtime("0", &id, &cmd).await })
    };
    let first = run("p-1", buy.clone()).unwrap();
    assert_eq!((first.result.clone(), first.state.gold, first.duplicate), (Ok(1), 130, false));
    let again = run("p-1", buy.clone()).unwrap();
    assert_eq!((again.result, again.state.gold, again.duplicate), (Ok(1), 130, true));
    assert_eq!(run("p-1", json!({"op": "buy_now", "gold": 31})), Err(CommandsError::IdReused("p-1".into())));
    assert!(matches!(run("bad id", buy.clone()), Err(CommandsError::InvalidArgument(_))));
    assert!(matches!(run("p-2", json!({"op": "earn", "amount": 1})), Err(CommandsError::InvalidArgument(_))));
    let (farm, epoch, _) = drained(&w, &c, "0");
    assert_eq!((farm.gold, epoch), (130, 1));
}

#[test]
fn packs_built_before_a_purchase_still_apply_after_it() {
    let w = World::new(8);
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), None);
    let (c2, buy) = (c.clone(), json!({"op": "buy_now", "gold": 400}));
    w.h.block_on(async move {
        c2.realtime("0", "p-1", &buy).await.unwrap();
    });
    // Built on epoch 0, before the purchase: a purchase is no error, so it is not stale.
    submit(&w, &c, "0", pack(&c, 1, 0, json!([{"op": "build", "cost": 450}]))).unwrap();
    let (farm, epoch, _) = drained(&w, &c, "0");
    assert_eq!((farm.gold, farm.farms, epoch), (50, 1, 2));
}

#[test]
fn a_crashed_servers_queue_is_adopted_and_each_pack_executes_once() {
    let w = World::new(9);
    let execs = Arc::new(Execs::default());
    let (_a_orm, a) = start(&w, 1, CommandsBugs::default(), Some(execs.clone()));
    // Server 1 stores three packs and is cut off before executing them (its workers' next
    // transactions fail: its coordination session is gone).
    let (a2, user) = (a.clone(), "1".to_string());
    w.h.block_on(async move {
        for id in 1..=3u64 {
            let p =
                Pack { pack_id: id, basis: 0, commands: vec![json!({"op": "earn", "amount": id as i64})] };
            a2.submit(&user, p).await.unwrap();
        }
    });
    a.stop();
    let sid = w.h.zk.get("/app/objects/cmd_queue/1").unwrap().1.ephemeral_owner;
    w.h.zk.disconnect(sid);
    // Server 2 never heard of user 1: its sweep finds the pending row once the owner record
    // is gone, adopts the queue and drains it.
    let (_b_orm, b) = start(&w, 2, CommandsBugs::default(), Some(execs.clone()));
    let (farm, epoch, next) = drained(&w, &b, "1");
    assert_eq!((epoch, next), (3, 4));
    let applied: Vec<u64> = (1..=3).filter(|&i| outcome(&w, "1", i) == Some(Outcome::Applied)).collect();
    assert_eq!(applied, [1, 2, 3]);
    // Whatever server 1 executed before it was cut, every pack counts once in the state.
    assert_eq!(farm.gold, 100 + 1 + 2 + 3);
    let pending =
        w.dbs[1].with(|i| i.get(&TableName::new(PENDING_TABLE).unwrap(), &user_key(ShardId(1), "1", "q")));
    assert_eq!(pending, None, "a drained queue leaves no pending row");
}

#[test]
fn a_real_time_command_on_a_new_owner_starts_the_users_waiting_packs() {
    let w = World::new(10);
    let (_a_orm, a) = start(&w, 1, CommandsBugs::default(), None);
    a.set_workers(0);
    for id in 1..=2 {
        submit(&w, &a, "1", pack(&a, id, 0, json!([{"op": "earn", "amount": 1}]))).unwrap();
    }
    a.stop();
    let sid = w.h.zk.get("/app/objects/cmd_queue/1").unwrap().1.ephemeral_owner;
    w.h.zk.disconnect(sid);
    // Server 2's sweep never runs in this test: only the purchase can start the packs.
    let orm = w.server(2, OrmBugs::default(), None);
    let cfg =
        CommandsConfig { workers: 2, sweep_period: Duration::from_secs(3600), bugs: CommandsBugs::default() };
    let b = Commands::start(w.env("game-2"), orm, set(), cfg, None).unwrap();
    let b2 = b.clone();
    let done =
        w.h.block_on(async move { b2.realtime("1", "p-1", &json!({"op": "buy_now", "gold": 5})).await });
    assert_eq!(done.map(|d| d.state.gold), Ok(105), "the purchase applies before the packs");
    w.h.advance(Duration::from_secs(2));
    assert_eq!(
        (outcome(&w, "1", 1), outcome(&w, "1", 2)),
        (Some(Outcome::Applied), Some(Outcome::Applied)),
        "the new owner ran the waiting packs without a sweep or a read"
    );
}

/// Loses the answer of the first commit of a pack execution (it applies; the worker hears
/// nothing): what a crash right after the commit, or a cut link, looks like to the worker.
struct LoseFirstCommitAnswer(crate::testing::FakeDb, std::sync::atomic::AtomicBool);

impl CommandsObserver for LoseFirstCommitAnswer {
    fn executing(&self, _: &str, _: u64) {
        if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.0.lose_next_answer();
        }
    }
    fn executed(&self, _: &str, _: u64, _: Option<(Outcome, u64)>) {}
}

/// Executes one `earn 10` pack of user "0" with the first commit's answer lost; the gold after.
fn gold_after_a_lost_commit_answer(w: &World, bugs: CommandsBugs) -> i64 {
    let orm = w.server(1, OrmBugs::default(), None);
    let lose = Arc::new(LoseFirstCommitAnswer(w.dbs[0].clone(), Default::default()));
    let cfg = CommandsConfig { workers: 2, sweep_period: Duration::from_secs(3600), bugs };
    let c =
        Commands::start(w.env("game-1"), orm, set(), cfg, Some(lose as Arc<dyn CommandsObserver>)).unwrap();
    submit(w, &c, "0", pack(&c, 1, 0, json!([{"op": "earn", "amount": 10}]))).unwrap();
    drained(w, &c, "0").0.gold
}

#[test]
fn a_lost_commit_answer_does_not_apply_a_pack_twice() {
    assert_eq!(gold_after_a_lost_commit_answer(&World::new(10), CommandsBugs::default()), 110);
}

#[test]
fn the_applied_outside_txn_bug_applies_a_pack_twice_when_a_commit_answer_is_lost() {
    let bugs = CommandsBugs { applied_outside_txn: true, ..CommandsBugs::default() };
    assert_eq!(gold_after_a_lost_commit_answer(&World::new(10), bugs), 120);
}

/// How many times an execution of `user` started while another was running.
fn overlaps(log: &[ExecEvent], user: &str) -> usize {
    let (mut running, mut overlaps) = (0usize, 0);
    for (_, _, end) in log.iter().filter(|(u, ..)| u == user) {
        match end {
            None => {
                overlaps += usize::from(running > 0);
                running += 1;
            }
            Some(_) => running -= 1,
        }
    }
    overlaps
}

#[test]
fn the_parallel_user_bug_runs_one_users_packs_on_two_workers_at_once() {
    let w = World::new(12);
    let execs = Arc::new(Execs::default());
    let bugs = CommandsBugs { parallel_user: true, ..CommandsBugs::default() };
    let (_orm, c) = start(&w, 1, bugs, Some(execs.clone()));
    let packs = (1..=6).map(|id| pack(&c, id, 0, json!([{"op": "earn", "amount": 1}]))).collect();
    submit_together(&w, &c, "0", packs);
    drained(&w, &c, "0");
    assert!(overlaps(&crate::env::lock(&execs.0), "0") > 0, "two workers ran user 0 at once");
}

/// The seed's staleness rule: a pack is stale if it *arrived* (stamped by the receiving
/// server's clock) before the last error (stamped by the executing server's clock).
fn wall_clock_stale(pack_arrived_ms: i64, error_at_ms: i64) -> bool {
    pack_arrived_ms < error_at_ms
}

#[test]
fn wall_clock_staleness_breaks_under_skew() {
    // True time: the client loads the state at t=0 and sends packs 1..3 at t=100 (pack 2 is a
    // cheat, pack 3 builds on it); pack 2 fails at t=300; the client reloads at t=400 and sends
    // pack 4 at t=500. Pack 3 must skip, pack 4 must apply.
    //
    // Server A (receives packs) runs 250 ms fast; server B (executes) is right. Pack 3 is
    // stamped 350 > the error's 300: the seed's rule applies it, on the cheated state.
    let (a_skew, b_skew) = (250, 0);
    assert!(!wall_clock_stale(100 + a_skew, 300 + b_skew), "stale pack 3 is applied");
    // Server A runs 250 ms slow instead: fresh pack 4 is stamped 250 < 300: it is skipped.
    assert!(wall_clock_stale(500 - 250, 300), "fresh pack 4 is skipped");
    // Epochs: the state the client loaded was epoch 0; pack 1 applies (epoch 1), pack 2 fails
    // (epoch 2 = error epoch); pack 3 (basis 0) skips; after the reload pack 4 has basis 2.
    let mut q = QueueRecord::new("u");
    for id in 1..=3 {
        assert_eq!(q.on_submit(id, 0, true), SubmitDecision::Store);
    }
    q.on_executed(Outcome::Applied);
    q.on_executed(Outcome::Failed);
    assert!(q.is_stale(0), "pack 3 skips, whatever the clocks say");
    q.on_executed(Outcome::Skipped);
    assert_eq!(q.on_submit(4, q.epoch, true), SubmitDecision::Store);
    assert!(!q.is_stale(2), "pack 4 applies, whatever the clocks say");
}

#[test]
fn one_users_executions_never_overlap_and_other_users_are_not_held_up() {
    let w = World::new(11);
    let execs = Arc::new(Execs::default());
    let (_orm, c) = start(&w, 1, CommandsBugs::default(), Some(execs.clone()));
    let earn = |id: u64| Pack { pack_id: id, basis: 0, commands: vec![json!({"op": "earn", "amount": 1})] };
    // User 2's objects are owned here first, so that its pack below is stored as fast as
    // user 0's (the order checked is the workers', not how long a first take lasts).
    submit(&w, &c, "2", earn(1)).unwrap();
    drained(&w, &c, "2");
    let c2 = c.clone();
    w.h.block_on(async move {
        for id in 1..=10u64 {
            c2.submit("0", earn(id)).await.unwrap();
        }
        c2.submit("2", earn(2)).await.unwrap();
    });
    drained(&w, &c, "0");
    drained(&w, &c, "2");
    let log = crate::env::lock(&execs.0).clone();
    assert_eq!(overlaps(&log, "0"), 0);
    let pos = |u: &str, id: u64| log.iter().position(|(x, i, e)| x == u && *i == id && e.is_some()).unwrap();
    assert!(pos("2", 2) < pos("0", 10), "user 2's one waiting pack waited for user 0's ten");
}

/// Records executions, and loses the answer of the first execution commit.
struct LoseFirstExecution(crate::testing::FakeDb, std::sync::atomic::AtomicBool, Execs);

impl CommandsObserver for LoseFirstExecution {
    fn executing(&self, user: &str, pack_id: u64) {
        if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.0.lose_next_answer();
        }
        self.2.executing(user, pack_id);
    }
    fn executed(&self, user: &str, pack_id: u64, committed: Option<(Outcome, u64)>) {
        self.2.executed(user, pack_id, committed);
    }
}

#[test]
fn a_turn_executes_the_waiting_packs_in_order_in_one_commit_and_a_lost_answer_applies_none_twice() {
    let w = World::new(14);
    let orm = w.server(1, OrmBugs::default(), None);
    let obs = Arc::new(LoseFirstExecution(w.dbs[0].clone(), Default::default(), Execs::default()));
    let cfg =
        CommandsConfig { workers: 2, sweep_period: Duration::from_secs(3600), ..CommandsConfig::default() };
    let c = Commands::start(w.env("game-1"), orm, set(), cfg, Some(obs.clone() as Arc<dyn CommandsObserver>))
        .unwrap();
    c.set_workers(0);
    let packs = [
        json!([{"op": "earn", "amount": 10}]),
        json!([{"op": "build", "cost": 500}]),
        json!([{"op": "earn", "amount": 1}]),
    ];
    for (i, p) in packs.into_iter().enumerate() {
        assert_eq!(submit(&w, &c, "0", pack(&c, i as u64 + 1, 0, p)), Ok(Submitted::Stored));
    }
    c.set_workers(2);
    let (farm, epoch, next) = drained(&w, &c, "0");
    let outcomes: Vec<_> = (1..=3).map(|i| outcome(&w, "0", i).unwrap()).collect();
    assert_eq!(
        outcomes,
        [Outcome::Applied, Outcome::Failed, Outcome::Skipped],
        "in order, the stale rule within the turn"
    );
    assert_eq!((farm.gold, epoch, next), (110, 2, 4), "pack 1 applied once");
    let log = crate::env::lock(&obs.2 .0).clone();
    let ends: Vec<(u64, bool)> =
        log.iter().filter_map(|(_, id, end)| end.map(|c| (*id, c.is_some()))).collect();
    assert_eq!(ends, [(1, false), (2, false), (3, false)], "one commit held all three; its answer was lost");
    assert_eq!(overlaps(&log, "0"), 0);
}

#[test]
fn packs_stored_by_another_server_are_read_back_and_executed_once() {
    let w = World::new(15);
    let (_orm0, c0) = start(&w, 0, CommandsBugs::default(), None);
    c0.set_workers(0);
    for id in 1..=3 {
        let p = pack(&c0, id, 0, json!([{"op": "earn", "amount": 2}]));
        assert_eq!(submit(&w, &c0, "0", p), Ok(Submitted::Stored));
    }
    // Server 1 has none of them cached: it reads the rows (its read claims the objects).
    let (_orm1, c1) = start(&w, 1, CommandsBugs::default(), None);
    let (farm, epoch, next) = drained(&w, &c1, "0");
    assert_eq!((farm.gold, epoch, next), (106, 3, 4));
    assert!((1..=3).all(|i| outcome(&w, "0", i) == Some(Outcome::Applied)));
}
