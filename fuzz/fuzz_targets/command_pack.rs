//! Command packs (seed 002's deferred commands) with the reference game's command set
//! (`game::farm::command_set()`: queued earn, build, collect, sell; real-time buy_now).
//!
//! Every input goes down three paths:
//! 1. as a pack body: `serde_json::from_slice::<Value>` then `engine::commands::Pack::parse`,
//!    and a pack that parses is executed the way a worker does (`CommandSet::apply_all` on a new
//!    user's farm) and stored the way `submit` does (a `PackRow`, JSON); the whole value is also
//!    checked as a real-time command (`CommandSet::check(.., true)`, as `cs_buy_now` does);
//! 2. as a protobuf port's body: `codec::json_body_from_bytes("cs_commands", ..)`, which must
//!    give the same value as path 1;
//! 3. as a whole client frame on a JSON port, as the server handles a `cs_commands` message:
//!    `codec::decode_json`, the body as `game::farm::cs_commands::CsCommands` (what the game's
//!    handler registration deserializes), `Pack::parse`, and the refusal sent for a malformed
//!    pack (`cs_commands::refusal`, serialized with the pack id it names).
//!
//! Properties: never panics; every command of a parsed pack passes the queued check and fails
//! the real-time one; a parsed pack re-parses from its own JSON to itself, and its stored row
//! reads back to the same pack (rows holding floats: reads back; see `has_float`).
#![no_main]

use engine::commands::{CommandSet, CommandsError, Pack, PackRow};
use engine::session::codec::{self, InBody};
use game::farm::cs_commands::{refusal, CsCommands};
use game::farm::{command_set, Farm};
use libfuzzer_sys::fuzz_target;
use sandtable_fuzz::has_float;
use serde_json::Value;

thread_local! {
    static SET: CommandSet<Farm> = command_set();
}

fuzz_target!(|data: &[u8]| {
    SET.with(|set| {
        let value = serde_json::from_slice::<Value>(data).ok();
        if let Some(v) = &value {
            as_pack(set, v);
            let _ = set.check(v, true);
        }
        if let Ok(body) = codec::json_body_from_bytes("cs_commands", data) {
            assert_eq!(value.as_ref(), Some(&body), "from_str and from_slice disagree");
        }
        if let Ok(m) = codec::decode_json(data) {
            let InBody::Json(body) = m.body else { panic!("a JSON envelope has a JSON body") };
            as_message(set, body);
        }
    });
});

fn as_pack(set: &CommandSet<Farm>, v: &Value) {
    let Ok(pack) = Pack::parse(v, set) else { return };
    for c in &pack.commands {
        assert_eq!(set.check(c, false), Ok(()));
        assert!(set.check(c, true).is_err(), "a queued command passed as real-time: {c}");
    }
    let _ = set.apply_all(&pack.commands, &set.initial("fuzz"));
    let floats = pack.commands.iter().any(has_float);
    let again = Pack::parse(&serde_json::to_value(&pack).expect("a pack serializes"), set)
        .expect("a parsed pack re-parses");
    let row =
        PackRow { pack_id: pack.pack_id, basis: pack.basis, commands: pack.commands.clone(), executed: None };
    let bytes = serde_json::to_vec(&row).expect("a row serializes");
    let back: PackRow = serde_json::from_slice(&bytes).expect("a stored row reads back");
    assert_eq!(again, pack);
    if !floats {
        assert_eq!(back, row);
    }
}

fn as_message(set: &CommandSet<Farm>, body: Value) {
    let Ok(req) = serde_json::from_value::<CsCommands>(body) else { return };
    if let Err(e) = Pack::parse(&req.body, set) {
        let mut r = refusal(&CommandsError::Malformed(e));
        r.pack_id = req.body.get("pack_id").and_then(Value::as_u64);
        serde_json::to_value(&r).expect("a refusal serializes");
    }
}
