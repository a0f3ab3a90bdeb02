//! The farm's command packs (`game::farm` on `engine::commands`) between two real
//! `sandtable-server` processes: private ZooKeeper, Redis and MariaDB, plus a SQLite file both
//! servers share, as two SQL instances (user "1" on MariaDB, user "5" on SQLite). Packs are
//! acknowledged once durable and executed in order; a cheat fails its pack, the packs built on
//! it skip and a stale pack is told to reload; a purchase is applied once however often it is
//! resent; after `kill -9` of the server holding a user's queue, the other server drains every
//! acknowledged pack exactly once.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::{assert_ok, login_eventually, Client, Cluster};
use engine::session::Transport;
use serde_json::{json, Value};

const T: Transport = Transport::TcpJson;
/// Longest a queue may take to drain (a server's session must expire first after a kill).
const DRAIN_MAX: Duration = Duration::from_secs(40);

/// Sends a pack and returns the reply's type and body.
async fn pack(c: &mut Client, pack_id: u64, basis: u64, commands: Value) -> (String, Value) {
    c.send("cs_commands", json!({"pack_id": pack_id, "basis": basis, "commands": commands})).await;
    c.recv().await
}

fn earn(amount: i64) -> Value {
    json!({"op": "earn", "amount": amount})
}

/// Reads the state until no pack waits: (gold, buildings, epoch, next_pack).
async fn drained(c: &mut Client) -> (i64, Value, u64, u64) {
    let t0 = Instant::now();
    loop {
        c.send("cs_state", json!({})).await;
        let (t, b) = c.recv().await;
        match t.as_str() {
            "sc_state" if b["error"] == json!(false) => {
                let s = &b["state"];
                return (
                    s["gold"].as_i64().unwrap(),
                    s["buildings"].clone(),
                    s["epoch"].as_u64().unwrap(),
                    s["next_pack"].as_u64().unwrap(),
                );
            }
            "sc_retry_after" => {
                tokio::time::sleep(Duration::from_millis(b["ms"].as_u64().unwrap().min(500))).await
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        assert!(t0.elapsed() < DRAIN_MAX, "queue not drained in {DRAIN_MAX:?}; last {t}: {b}");
    }
}

async fn logged_in(addr: SocketAddr, user: &str) -> Client {
    login_eventually(addr, user, DRAIN_MAX).await.1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packs_run_once_in_order_across_a_kill_and_stale_packs_skip() {
    let maria = common::mariadb();
    let mut c = Cluster::new();
    c.with_mariadb_and_sqlite(&maria.url(), json!({}));
    c.start(&[("game-a", "game"), ("game-b", "game")]).await;
    let (a, b) = (c.servers[0].addr(T), c.servers[1].addr(T));

    for user in ["1", "5"] {
        let mut p = logged_in(a, user).await;
        assert_eq!(drained(&mut p).await, (100, json!({}), 0, 1), "{user}: a new farm");
        // Played ahead on epoch 0: pack 2 buys a farm it cannot afford (a cheat), pack 3
        // builds on it.
        let t0 = Instant::now();
        let (t, ack) =
            pack(&mut p, 1, 0, json!([earn(10), {"op": "build", "building": "farm", "cost": 50}])).await;
        eprintln!("{user}: pack 1 acknowledged in {:?}", t0.elapsed());
        assert_eq!((t.as_str(), &ack["pack_id"]), ("sc_commands_ack", &json!(1)), "{ack}");
        let (t, _) = pack(&mut p, 2, 0, json!([{"op": "build", "building": "mill", "cost": 900}])).await;
        assert_eq!(t, "sc_commands_ack");
        let (t, _) = pack(&mut p, 3, 0, json!([{"op": "collect", "building": "mill"}])).await;
        assert!(t == "sc_commands_ack" || t == "sc_reload", "{t}: pack 2 may already have failed");
        let (gold, buildings, epoch, next) = drained(&mut p).await;
        assert_eq!((gold, buildings), (60, json!({"farm": 1})), "{user}: pack 1 only");
        assert_eq!(epoch, 2, "{user}: pack 1 applied, pack 2 failed");
        // Still on epoch 0: refused, must reload.
        let (t, r) = pack(&mut p, next, 0, json!([earn(1)])).await;
        assert_eq!((t.as_str(), &r["epoch"]), ("sc_reload", &json!(2)), "{r}");
        let (t, _) = pack(&mut p, next, epoch, json!([earn(1), {"op": "collect", "building": "farm"}])).await;
        assert_eq!(t, "sc_commands_ack");
        // A purchase applies at once and once, however often it is resent.
        let buy = json!({"purchase_id": format!("{user}-p1"), "gold": 30});
        let first = p.call("cs_buy_now", buy.clone(), "sc_buy_now").await;
        assert_ok(&first, "cs_buy_now");
        let again = p.call("cs_buy_now", buy, "sc_buy_now").await;
        // The resend answers the first application (its epoch) and today's balance.
        assert_eq!((&again["duplicate"], &again["epoch"]), (&json!(true), &first["epoch"]), "{again}");
        let (gold, _, _, _) = drained(&mut p).await;
        assert_eq!(gold, 60 + 1 + 5 + 30, "{user}");
    }

    // User 1 (MariaDB) sends packs 6.. to A, and A is killed right after the acks.
    let mut one = logged_in(a, "1").await;
    let (gold0, _, epoch, next) = drained(&mut one).await;
    let mut acked = 0;
    for (i, id) in (next..next + 8).enumerate() {
        let (t, r) = pack(&mut one, id, epoch, json!([earn(i as i64 + 1)])).await;
        assert_eq!(t, "sc_commands_ack", "{r}");
        acked += i as i64 + 1;
    }
    c.servers[0].signal(libc::SIGKILL);
    let t0 = Instant::now();
    drop(one);
    // On B (after A's session expired): every acknowledged pack applied, once.
    let mut one = logged_in(b, "1").await;
    let (gold, _, epoch2, next2) = drained(&mut one).await;
    eprintln!("after kill -9: drained on the other server {:?} after the kill", t0.elapsed());
    assert_eq!(gold, gold0 + acked, "every acknowledged pack applied exactly once");
    assert_eq!((epoch2, next2), (epoch + 8, next + 8));
}
