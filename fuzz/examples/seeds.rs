//! Writes the committed seed corpus, `fuzz/seeds/<target>/<name>`, from the engine's own
//! encoders and signers (and the repo's example manifests), and checks that each seed is
//! accepted by the decoder its target calls, so the seeds are what a server really sees.
//!
//! Run from `fuzz/`: `cargo +nightly run --example seeds` (the directory of each target is
//! emptied and rewritten; the output is deterministic).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use engine::account::token::{self, TokenClaims};
use engine::cluster::view::parse_member;
use engine::cluster::{PeerId, PeerInfo};
use engine::commands::{Executed, Outcome, Pack, PackRow, RealtimeRow};
use engine::env::WallTime;
use engine::gate::session_key::{self, SessionKeyClaims};
use engine::manifest::Manifest;
use engine::rpc::wire::{self, ReplyFrame, ReplyStatus, RequestFrame, WireFrame};
use engine::session::codec;
use engine::session::{ProtocolError, Transport};
use engine::shard::map::MovePhase;
use engine::shard::{MoveRecord, ShardId, ShardMap};
use engine::signed::MAC_BYTES;
use game::farm::command_set;
use prost::Message;
use sandtable_fuzz::store::StoreWorld;
use sandtable_fuzz::{instances, me, member, CLAIMED_USER, LOGICAL_SHARDS, NOW, SECRET};
use serde_json::{json, Value};

struct Out {
    dir: PathBuf,
}

impl Out {
    fn target(root: &Path, name: &str) -> Out {
        let dir = root.join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create seed directory");
        Out { dir }
    }

    fn put(&self, name: &str, bytes: impl AsRef<[u8]>) {
        fs::write(self.dir.join(name), bytes).expect("write seed");
    }

    /// A seed of a target whose first byte picks a mode.
    fn put_mode(&self, name: &str, mode: u8, rest: impl AsRef<[u8]>) {
        let mut b = vec![mode];
        b.extend_from_slice(rest.as_ref());
        self.put(name, b);
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    session(&root);
    rpc(&root);
    tokens(&root);
    keys(&root);
    manifests(&root);
    packs(&root);
    stored(&root);
    println!("seeds written to {}", root.display());
}

/// Client frames the reference game receives, in both envelopes.
fn client_messages() -> Vec<(&'static str, &'static str, Value)> {
    let token = token::issue(&SECRET, &token_claims()[0]).expect("issue");
    let key = session_key::issue(&SECRET, &key_claims()[0]).expect("issue");
    let pack = json!({"pack_id": 1, "basis": 0, "commands": [
        {"op": "earn", "amount": 20}, {"op": "build", "building": "mill", "cost": 50}
    ]});
    vec![
        ("login", "cs_game_server_login", json!({"user_name": "kim"})),
        ("enter_pvp", "cs_enter_pvp", json!({})),
        ("send", "cs_send", json!({"to": "lee", "message": {"text": "hi"}})),
        ("gift", "cs_gift", json!({"to": "lee", "item": "sword", "count": 2})),
        ("commands", "cs_commands", pack),
        ("buy_now", "cs_buy_now", json!({"purchase_id": "p-1", "gold": 100})),
        ("gate_login", "cs_gate_login", json!({"user_name": CLAIMED_USER, "session_key": key})),
        ("pong", codec::PONG_TYPE, json!({})),
        ("redirect", codec::CS_REDIRECT_TYPE, json!({"token": token})),
    ]
}

fn refusals() -> Vec<ProtocolError> {
    vec![
        codec::decode_json(br#"{"body": {}}"#).unwrap_err(),
        codec::route("_ping").unwrap_err(),
        ProtocolError::UnknownType("cs_no_such_thing".into()),
    ]
}

fn session(root: &Path) {
    let json_out = Out::target(root, "session_json");
    let pb_out = Out::target(root, "session_protobuf");
    let frame_out = Out::target(root, "session_frame");
    let modes = [(0u8, Transport::TcpJson), (1, Transport::TcpProtobuf), (2, Transport::WebSocketJson)];
    for (name, t, body) in client_messages() {
        let j = codec::encode_json(t, &body);
        codec::decode_json(&j).expect("a JSON seed decodes");
        json_out.put(name, &j);
        let p = codec::encode_json_message(Transport::TcpProtobuf, t, &body);
        codec::decode_protobuf(&p).expect("a protobuf seed decodes");
        pb_out.put(name, &p);
        for (mode, transport) in modes {
            frame_out.put_mode(
                &format!("{name}.{transport:?}"),
                mode,
                codec::encode_json_message(transport, t, &body),
            );
        }
    }
    // The inventory messages' protobuf form (a dual handler's body).
    let gift =
        game::pb::inventory::CsGift { to: "lee".into(), item: "sword".into(), count: 2 }.encode_to_vec();
    let p = codec::encode_protobuf("cs_gift", &gift);
    codec::decode_protobuf(&p).expect("decodes");
    pb_out.put("gift_proto", &p);
    frame_out.put_mode("gift_proto.TcpProtobuf", 1, &p);
    // What the server sends (a client decodes these with the same codec).
    for (mode, transport) in modes {
        let ping = codec::encode_ping(transport);
        codec::decode(transport, &ping).expect("decodes");
        frame_out.put_mode(&format!("ping.{transport:?}"), mode, &ping);
    }
    json_out.put("ping", codec::encode_ping(Transport::TcpJson));
    pb_out.put("ping", codec::encode_ping(Transport::TcpProtobuf));
    for (i, e) in refusals().iter().enumerate() {
        json_out.put(&format!("error_{}", e.code()), codec::encode_error(Transport::TcpJson, e));
        pb_out.put(&format!("error_{}", e.code()), codec::encode_error(Transport::TcpProtobuf, e));
        frame_out.put_mode(&format!("error_{i}.TcpJson"), 0, codec::encode_error(Transport::TcpJson, e));
    }
}

fn peer(n: u8) -> PeerId {
    PeerId::from_slice(&[n; 16]).expect("16 bytes")
}

fn rpc(root: &Path) {
    let out = Out::target(root, "rpc_wire");
    let reply = |xid, status| WireFrame::Reply(ReplyFrame { xid, replier: peer(2), status });
    let frames = [
        ("hello", WireFrame::Hello { sender: peer(1), receiver: peer(2) }),
        ("fenced", WireFrame::Fenced { actual: peer(3) }),
        (
            "request_ordered",
            WireFrame::Request(RequestFrame {
                xid: 7,
                msg_type: "sandtable.account.Send".into(),
                body: Bytes::from_static(b"\x0a\x05alice\x12\x02hi"),
                order: Some(("alice".into(), 1)),
                floor: 3,
            }),
        ),
        (
            "request",
            WireFrame::Request(RequestFrame {
                xid: 8,
                msg_type: "echo".into(),
                body: Bytes::new(),
                order: None,
                floor: 0,
            }),
        ),
        ("reply_ok", reply(7, ReplyStatus::Ok(Bytes::from_static(b"\x08\x01")))),
        ("reply_no_handler", reply(8, ReplyStatus::NoHandler)),
        ("reply_handler_error", reply(9, ReplyStatus::HandlerError("boom".into()))),
        ("reply_decode_error", reply(10, ReplyStatus::DecodeError("bad body".into()))),
        ("reply_out_of_order", reply(11, ReplyStatus::OutOfOrder { last_seq: 4 })),
        ("reply_overloaded", reply(12, ReplyStatus::Overloaded("queue full".into()))),
        ("ping", WireFrame::Ping),
        ("pong", WireFrame::Pong),
    ];
    for (name, f) in frames {
        let b = wire::encode(&f);
        assert_eq!(wire::decode(&b), Ok(f));
        out.put(name, b);
    }
}

/// The signed payload inside a signed string, without its kind byte (what the targets' "sealed"
/// modes take: they put the kind byte back and sign).
fn fields_of(signed: &str) -> Vec<u8> {
    let bytes: Vec<u8> = (0..signed.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&signed[i..i + 2], 16).expect("hex"))
        .collect();
    bytes[1..bytes.len() - MAC_BYTES].to_vec()
}

fn token_claims() -> Vec<TokenClaims> {
    let base = TokenClaims {
        account: "alice".into(),
        target: me(),
        expires_at: WallTime(NOW.0 + 30_000),
        nonce: [9; 16],
        extra_data: json!({"room": 7, "why": "match found"}),
    };
    vec![
        base.clone(),
        TokenClaims { extra_data: Value::Null, ..base.clone() },
        TokenClaims { account: "kim".into(), target: peer(5), expires_at: WallTime(NOW.0 - 60_000), ..base },
    ]
}

fn key_claims() -> Vec<SessionKeyClaims> {
    vec![
        SessionKeyClaims { user: CLAIMED_USER.into(), expires_at: WallTime(NOW.0 + 300_000), nonce: [9; 16] },
        SessionKeyClaims { user: "bob".into(), expires_at: WallTime(NOW.0 + 300_000), nonce: [4; 16] },
        SessionKeyClaims { user: CLAIMED_USER.into(), expires_at: WallTime(NOW.0 - 60_000), nonce: [1; 16] },
    ]
}

fn tokens(root: &Path) {
    let out = Out::target(root, "redirect_token");
    for (i, c) in token_claims().iter().enumerate() {
        let t = token::issue(&SECRET, c).expect("issue");
        assert_eq!(token::verify(&SECRET, &t).as_ref(), Ok(c));
        out.put_mode(&format!("token_{i}.lossy"), 0, &t);
        out.put_mode(&format!("token_{i}.strict"), 1, &t);
        out.put_mode(&format!("token_{i}.sealed"), 2, fields_of(&t));
    }
    let key = session_key::issue(&SECRET, &key_claims()[0]).expect("issue");
    out.put_mode("session_key.strict", 1, &key);
    out.put_mode("session_key.sealed_as_key", 3, fields_of(&key));
}

fn keys(root: &Path) {
    let out = Out::target(root, "session_key");
    for (i, c) in key_claims().iter().enumerate() {
        let k = session_key::issue(&SECRET, c).expect("issue");
        assert_eq!(session_key::verify(&SECRET, &k, WallTime(i64::MIN)).as_ref(), Ok(c));
        out.put_mode(&format!("key_{i}.lossy"), 0, &k);
        out.put_mode(&format!("key_{i}.strict"), 1, &k);
        out.put_mode(&format!("key_{i}.sealed"), 2, fields_of(&k));
    }
    let t = token::issue(&SECRET, &token_claims()[0]).expect("issue");
    out.put_mode("token.strict", 1, &t);
    out.put_mode("token.sealed_as_token", 3, fields_of(&t));
}

fn manifests(root: &Path) {
    let out = Out::target(root, "manifest");
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut names: Vec<_> = fs::read_dir(&examples)
        .expect("examples/")
        .map(|e| e.expect("entry").file_name().into_string().expect("UTF-8 name"))
        .filter(|n| n.starts_with("MANIFEST") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in &names {
        let text = fs::read_to_string(examples.join(name)).expect("read example");
        Manifest::load(&text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.put(name, &text);
    }
    // One file with flavors: the game example as the base, overlays for game and pvp servers.
    let mut v: Value =
        serde_json::from_str(&fs::read_to_string(examples.join("MANIFEST.game.json")).expect("read"))
            .expect("JSON");
    v["flavors"] = json!({
        "game": {"RpcService": {"rpc_tags": ["game"]}},
        "pvp": {"SessionService": {"tcp_json_port": 9012}, "RpcService": {"rpc_port": 9015, "rpc_tags": ["pvp"]}}
    });
    let text = serde_json::to_string_pretty(&v).expect("JSON");
    for flavor in [None, Some("game"), Some("pvp")] {
        Manifest::load(&text, flavor).unwrap_or_else(|e| panic!("flavored {flavor:?}: {e}"));
    }
    out.put("MANIFEST.flavors.json", text);
}

fn packs(root: &Path) {
    let out = Out::target(root, "command_pack");
    let set = command_set();
    let bodies = [
        ("earn", json!({"pack_id": 1, "basis": 0, "commands": [{"op": "earn", "amount": 10}]})),
        (
            "build_collect_sell",
            json!({"pack_id": 2, "basis": 1, "commands": [
                {"op": "build", "building": "mill", "cost": 50},
                {"op": "collect", "building": "mill"},
                {"op": "sell", "building": "mill"},
                {"op": "earn", "amount": 50}
            ]}),
        ),
        (
            "every_op",
            json!({"pack_id": 3, "basis": 2, "commands": [
                {"op": "earn", "amount": 1},
                {"op": "build", "building": "bakery", "cost": 1000},
                {"op": "collect", "building": "bakery"},
                {"op": "sell", "building": "bakery"}
            ]}),
        ),
    ];
    for (name, body) in &bodies {
        Pack::parse(body, &set).unwrap_or_else(|e| panic!("{name}: {e}"));
        out.put(&format!("{name}.json"), body.to_string());
        // The same pack as the client frame that carries it.
        let frame = codec::encode_json("cs_commands", body);
        out.put(&format!("{name}.frame"), &frame);
    }
    let buy = json!({"op": "buy_now", "gold": 100});
    set.check(&buy, true).expect("a real-time command");
    out.put("buy_now.json", buy.to_string());
}

fn stored(root: &Path) {
    let out = Out::target(root, "stored_records");
    // Mode 0: object rows in `StoredObject`'s format (`{"v": state, "p": pending}`; its encoder
    // is crate-private), each checked by reading it back with `read_committed`.
    let world = StoreWorld::new();
    let farm = json!({"user": "alice", "gold": 100, "buildings": {"mill": 1}});
    let next = json!({"user": "alice", "gold": 60, "buildings": {"mill": 2}});
    let pending = json!({"v": farm, "p": {"txn": "t-1", "primary": "bob", "value": next}});
    let cases: [(&str, Value, Option<&[u8]>, Option<&Value>); 5] = [
        ("object", json!({"v": farm}), None, Some(&farm)),
        ("deleted", json!({"v": null}), None, None),
        ("pending_undecided", pending.clone(), None, Some(&farm)),
        ("pending_committed", pending.clone(), Some(b"committed"), Some(&next)),
        ("pending_aborted", pending, Some(b"aborted"), Some(&farm)),
    ];
    for (name, row, decision, expect) in cases {
        let row = serde_json::to_vec(&row).expect("JSON");
        let read = world.read_committed(&row, decision).expect("read_committed");
        assert_eq!(read.value.as_ref(), expect, "{name}");
        let mut seed = row;
        if let Some(d) = decision {
            seed.push(0xff);
            seed.extend_from_slice(d);
        }
        out.put_mode(&format!("object_{name}"), 0, seed);
    }
    // Mode 1: shard maps, with the engine's encoder.
    let names = instances();
    let layout: Vec<String> = (0..LOGICAL_SHARDS as usize).map(|i| names[i % names.len()].clone()).collect();
    let initial = ShardMap::initial(layout.clone());
    let mut moving = ShardMap::initial(layout);
    moving.version = 3;
    moving.moving = Some(MoveRecord {
        shard: ShardId(1),
        from: "db-1".into(),
        to: "db-0".into(),
        fence: 4,
        phase: MovePhase::Frozen,
    });
    for (name, map) in [("map_initial", initial), ("map_moving", moving)] {
        assert_eq!(ShardMap::decode(&map.encode(), LOGICAL_SHARDS, &names).as_ref(), Ok(&map));
        out.put_mode(name, 1, map.encode());
    }
    // Mode 2: a member znode as the membership task writes it (`serde_json::to_vec(&PeerInfo)`).
    let info = PeerInfo {
        id: member(),
        name: "game-1".into(),
        flavor: Some("game".into()),
        tags: BTreeSet::from(["game".to_string()]),
        rpc_addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8015),
        external_ip: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
        external_ports: BTreeMap::from([("tcp_json".to_string(), 8012), ("tcp_protobuf".to_string(), 8013)]),
        status: json!({"user_count": 12}),
        registered_zxid: 0,
    };
    let data = serde_json::to_vec(&info).expect("JSON");
    assert_eq!(parse_member(member(), &data).as_ref(), Ok(&info));
    out.put_mode("member", 2, data);
    out.put_mode("member_name", 2, member().0.to_string());
    // Mode 3: command-queue rows as `commands::stored::encode` writes them (serde_json::to_vec).
    let commands =
        vec![json!({"op": "earn", "amount": 10}), json!({"op": "build", "building": "mill", "cost": 50})];
    let waiting = PackRow { pack_id: 1, basis: 0, commands: commands.clone(), executed: None };
    let failed = PackRow {
        pack_id: 2,
        basis: 1,
        commands,
        executed: Some(Executed {
            outcome: Outcome::Failed,
            epoch: 2,
            error: Some("not enough gold".into()),
        }),
    };
    out.put_mode("pack_row_waiting", 3, serde_json::to_vec(&waiting).expect("JSON"));
    out.put_mode("pack_row_failed", 3, serde_json::to_vec(&failed).expect("JSON"));
    let rt = RealtimeRow { command: json!({"op": "buy_now", "gold": 100}), result: Ok(5) };
    out.put_mode("realtime_row", 3, serde_json::to_vec(&rt).expect("JSON"));
}
