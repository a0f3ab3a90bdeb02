//! Records the engine reads back from its stores, where a damaged or hand-edited record must be
//! an error, never a panic. The first input byte picks the decoder:
//!
//! - 0: an object-store row and a transaction decision, through `engine::orm::read_committed`
//!   (the public reader of `StoredObject::decode` and `Decision::decode`, which are
//!   crate-private): the input up to the first 0xff byte is the row of `farm/alice`, the rest
//!   (if any) the decision row, written where the row's pending write says its decision is.
//!   An in-memory SQL instance pair and shard router (`engine::testing`) are set up once; the
//!   instances are reset to that state after every input.
//! - 1: the shard map znode: `engine::shard::ShardMap::decode(bytes, 4 shards, [db-0, db-1])`.
//! - 2: a cluster member znode: `engine::cluster::view::parse_member(id, data)`, and the input
//!   as a member's znode name (`parse_member_name`).
//! - 3: the command-queue rows `PackRow` and `RealtimeRow`, decoded as
//!   `engine::commands`' (private) `stored::decode` does: `serde_json::from_slice`.
//!
//! Properties: never panics; a row without a pending write reads back as its `v`; whatever
//! decodes re-encodes to something that decodes again, to the same value unless it holds
//! floats (see `has_float`); a decoded map's shards all name a configured instance; a decoded
//! member is the znode's peer.
#![no_main]

use engine::cluster::view::{parse_member, parse_member_name};
use engine::commands::{PackRow, RealtimeRow};
use engine::shard::{ShardId, ShardMap};
use libfuzzer_sys::fuzz_target;
use sandtable_fuzz::store::StoreWorld;
use sandtable_fuzz::{has_float, instances, member, split_mode, LOGICAL_SHARDS};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

thread_local! {
    static WORLD: StoreWorld = StoreWorld::new();
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = split_mode(data, 4) else { return };
    match mode {
        0 => {
            let (row, decision) = match rest.iter().position(|&b| b == 0xff) {
                Some(i) => (&rest[..i], Some(&rest[i + 1..])),
                None => (rest, None),
            };
            let read = WORLD.with(|w| w.read_committed(row, decision));
            // A row without a pending write reads back as its `v`, as a JSON reader sees it.
            // (A row need not be JSON to be read: serde skips unknown fields without checking
            // that their strings are UTF-8.)
            if let (Ok(read), Ok(Value::Object(o))) = (read, serde_json::from_slice::<Value>(row)) {
                if let (Some(v), false) = (&read.value, read.had_pending) {
                    assert_eq!(Some(v), o.get("v"));
                }
            }
        }
        1 => shard_map(rest),
        2 => member_znode(rest),
        _ => {
            round_trip::<PackRow>(rest, |r| r.commands.iter().any(has_float));
            round_trip::<RealtimeRow>(rest, |r| has_float(&r.command));
        }
    }
});

fn shard_map(bytes: &[u8]) {
    let names = instances();
    let Ok(map) = ShardMap::decode(bytes, LOGICAL_SHARDS, &names) else { return };
    for s in 0..LOGICAL_SHARDS {
        assert!(names.iter().any(|n| n == map.instance_of(ShardId(s))));
        let _ = map.is_frozen(ShardId(s));
    }
    assert_eq!(ShardMap::decode(&map.encode(), LOGICAL_SHARDS, &names).as_ref(), Ok(&map));
}

fn member_znode(data: &[u8]) {
    let _ = parse_member_name(&String::from_utf8_lossy(data));
    let Ok(info) = parse_member(member(), data) else { return };
    assert_eq!(info.id, member());
    let bytes = serde_json::to_vec(&info).expect("PeerInfo serializes");
    let back = parse_member(member(), &bytes).expect("a re-encoded member parses");
    if !has_float(&info.status) {
        assert_eq!(back, info);
    }
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    bytes: &[u8],
    floats: impl Fn(&T) -> bool,
) {
    let Ok(v) = serde_json::from_slice::<T>(bytes) else { return };
    let again = serde_json::to_vec(&v).expect("a decoded row serializes");
    let back: T = serde_json::from_slice(&again).expect("a re-encoded row decodes");
    if !floats(&v) {
        assert_eq!(back, v);
    }
}
