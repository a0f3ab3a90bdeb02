//! The object store between two real `sandtable-server` processes: private ZooKeeper, Redis
//! and MariaDB, plus a SQLite file both servers share, as two SQL instances (users "1" and "5"
//! are on shards of different instances). A gift from a user on one server to a user on the
//! other borrows the recipient's inventory across processes and commits across the two
//! instances; the recipient is told after the commit; a trade moves both ways atomically;
//! after `kill -9` of a server, the other waits its owner records out and goes on. Totals are
//! conserved throughout.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{assert_ok, Client, Cluster};
use engine::session::Transport;
use serde_json::{json, Value};

const T: Transport = Transport::TcpJson;

/// The inventory `user`'s client sees: (gold, items).
async fn inventory(c: &mut Client) -> (i64, Value) {
    let inv = c.call("cs_inventory", json!({}), "sc_inventory").await;
    assert_ok(&inv, "cs_inventory");
    (inv["gold"].as_i64().unwrap(), inv["items"].clone())
}

fn count(items: &Value, item: &str) -> i64 {
    items.get(item).and_then(Value::as_i64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gifts_and_trades_between_two_server_processes_borrow_objects_and_conserve_totals() {
    let maria = common::mariadb();
    let mut c = Cluster::new();
    c.with_mariadb_and_sqlite(&maria.url(), json!({ "cache_expiration_in_ms": 60_000 }));
    c.start(&[("game-a", "game"), ("game-b", "game")]).await;
    let (a, b) = (c.servers[0].addr(T), c.servers[1].addr(T));

    // User 1 (shard 1: MariaDB) on A, user 5 (shard 5: SQLite) on B; both get the starting
    // inventory at their first login.
    let mut one = Client::connect(a, T).await;
    assert_ok(&one.login("1").await, "login 1 on A");
    let mut five = Client::connect(b, T).await;
    assert_ok(&five.login("5").await, "login 5 on B");
    assert_eq!(inventory(&mut one).await, (100, json!({"potion": 10, "sword": 1})));

    // A gift from 1 (owned by A) to 5 (owned by B): A borrows 5's inventory from B.
    let t0 = Instant::now();
    let gift = one.call("cs_gift", json!({"to": "5", "item": "potion", "count": 3}), "sc_gift").await;
    eprintln!("gift across servers and instances took {:?}", t0.elapsed());
    assert_eq!(gift, json!({"error": false}));
    let (t, pushed) = five.recv().await;
    assert_eq!(
        (t.as_str(), pushed),
        ("sc_gift_received", json!({"from": "1", "item": "potion", "count": 3}))
    );
    // 5's own read borrows it back from A.
    let (gold5, items5) = inventory(&mut five).await;
    assert_eq!((gold5, count(&items5, "potion")), (100, 13));

    // A trade from B's side: 5 gives 10 gold and takes 1 sword.
    let trade = five
        .call("cs_trade", json!({"with": "1", "give": {"gold": 10}, "take": {"sword": 1}}), "sc_trade")
        .await;
    assert_ok(&trade, "cs_trade");
    let (gold1, items1) = inventory(&mut one).await;
    let (gold5, items5) = inventory(&mut five).await;
    assert_eq!((gold1, gold5), (110, 90));
    assert_eq!((count(&items1, "sword"), count(&items5, "sword")), (0, 2));
    assert_eq!(count(&items1, "potion") + count(&items5, "potion"), 20, "potions conserved");

    // A refused gift changes nothing.
    let refused = one.call("cs_gift", json!({"to": "5", "item": "sword", "count": 1}), "sc_gift").await;
    assert_eq!(refused["error"], json!(true));
    assert_eq!(refused["error_message"], json!("not enough items"));

    // kill -9 A while it owns 1's inventory (the last read was on A): B must wait out A's
    // ZooKeeper session (4 s) before it can take it; then the gift goes through.
    c.servers[0].signal(libc::SIGKILL);
    let t0 = Instant::now();
    let mut last = Value::Null;
    while t0.elapsed() < Duration::from_secs(30) {
        last = five.call("cs_gift", json!({"to": "1", "item": "potion", "count": 1}), "sc_gift").await;
        if last == json!({"error": false}) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("gift to the dead server's user went through {:?} after kill -9: {last}", t0.elapsed());
    assert_eq!(last, json!({"error": false}));
    let (gold5, items5) = inventory(&mut five).await;
    assert_eq!((gold5, count(&items5, "potion")), (90, 12));
    // 1 logs in again on B: its inventory is there, with the gift.
    drop(one);
    let mut one = Client::connect(b, T).await;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if one.try_login("1").await.map(|v| v["error"] == json!(false)).unwrap_or(false) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        one = Client::connect(b, T).await;
    }
    let (gold1, items1) = inventory(&mut one).await;
    assert_eq!(
        (gold1 + gold5, count(&items1, "potion") + count(&items5, "potion")),
        (200, 20),
        "totals conserved"
    );
    assert_eq!(count(&items1, "sword") + count(&items5, "sword"), 2);
}
