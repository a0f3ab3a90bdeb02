//! Sandtable's reference game: the seed example of iFun Engine's "game -> PvP auth key"
//! chapter, plus the rest of the account manager (redirection, send, broadcast), written
//! against `engine` APIs only so that every backend hosts the same code: the simulator's
//! scenarios (`scenarios::game_host`) and the real server binary (`real::server`).
//!
//! It is also the model for the games that follow (objects, command packs, gateways): one
//! file per client message, each with the same shape — the request as a `Deserialize` struct,
//! the replies as `Serialize` structs, one `handle` function — and a server that only wires
//! handlers.
//!
//! # Layout
//!
//! | message (client -> server) | flavor | file | replies and pushes |
//! |---|---|---|---|
//! | `cs_game_server_login {user_name}` | game | [`login`] | `sc_game_server_login {error, level \| error_message}` |
//! | `cs_enter_pvp {}` | game | [`enter_pvp`] | `sc_enter_pvp {error, pvp_server_ip, pvp_server_port, auth_key}` |
//! | `cs_redirect {server_name, extra_data}` | game | [`redirect`] | `_sc_redirect` then close, or `sc_redirect {error, error_message}`; on the target `sc_redirected` |
//! | `cs_send {to, message}` | game | [`send`] | `sc_send {error, delivered}`; the addressee gets `sc_message` |
//! | `cs_broadcast {scope, message}` | game | [`broadcast`] | `sc_broadcast {error, delivered}`; accounts get `sc_broadcast_message` |
//! | `cs_logout {}` | game | [`logout`] | `sc_logout {error}` |
//! | `cs_inventory {}` | game + objects | [`inventory`] | `sc_inventory {error, user_name, gold, items}` |
//! | `cs_gift {to, item, count}` | game + objects | [`gift`] | `sc_gift {error \| error_message}`; after commit the recipient gets `sc_gift_received {from, item, count}` |
//! | `cs_trade {with, give, take}` | game + objects | [`trade`] | `sc_trade {error, gold, items \| error_message}` |
//! | `cs_state {}` | game + farm | [`farm::cs_state`] | `sc_state {error, state: {gold, buildings, epoch, next_pack}}` or `sc_retry_after {error, ms, waiting}` |
//! | `cs_commands {pack_id, basis, commands}` | game + farm | [`farm::cs_commands`] | `sc_commands_ack {error, pack_id, resent}`, `sc_reload {error, pack_id, epoch}` or `sc_commands {error, code, error_message}` |
//! | `cs_buy_now {purchase_id, gold}` | game + farm | [`farm::cs_buy_now`] | `sc_buy_now {error, gold, epoch, duplicate \| code, error_message}` |
//! | `cs_counter_add {n, seq}` | game + objects | [`counter`] | `sc_counter {error, value, seq, backend, duplicate}` or `{error: true, error_message: "gap", seq, expected}` |
//! | `cs_move {backend}` | game + objects, behind a gate | [`moving`] | `sc_move {error \| error_message}`, then from the gate `sc_moved {backend, recovered}` |
//! | `cs_gate_login {user_name, session_key}` | gate | `engine::gate::Gateway` | `sc_gate_login {error, backend \| error_message}`; other frames go to the player's backend |
//! | `cs_transfer_pvp_server {auth_key}` | pvp | [`transfer`] | `sc_transfer_pvp_server {error, user_name, level \| error_message}` |
//! | `cs_login {user_name}` | login | [`login_server`] | `sc_login {error, session_key, gates: [{host, port}] \| error_message}` |
//! | (timer) | game | [`tick`] | `sc_tick {seq}` to every account this server may act for |
//! | (timer) | both | [`status`] | the cluster status `{user_count}` (game) or `{room_count}` (pvp) |
//!
//! The rest:
//! - [`server`]: [`GameServer`] — start (ports, cluster, RPC, account manager, handlers) and
//!   graceful stop.
//! - The inventory messages exist only on servers started with an object store
//!   ([`GameConfig::objects`]); [`inventory`] also holds the [`inventory::Inventory`] model,
//!   its creation at login and the bounded retry of inventory transactions.
//! - The farm messages exist only on servers started with an object store and a
//!   [`farm::FarmConfig`] ([`GameServer::start_with`]); [`farm`] holds the [`farm::Farm`]
//!   model and its commands (one file each) over [`engine::commands`].
//! - [`config`]: [`GameConfig`], [`ObjectsConfig`], the planted [`GameBugs`], the [`GameObserver`] hook and
//!   [`GameError`]; [`flavor`]: [`Flavor`].
//! - [`state`]: what the handlers of each flavor share, and the one place that says which
//!   account a session is logged in as ([`state::GameState::account_of`]).
//! - [`wire`]: the [`wire::Request`] trait, typed-handler registration and replies, and the
//!   two body forms of the inventory messages ([`wire::BothForms`]; protobuf types in [`pb`]).
//!
//! # Protocol rules common to every message
//! - Every reply carries `error`; a refusal is `{error: true, error_message}`.
//! - Bodies are JSON objects; on a protobuf port a JSON body travels inside the envelope. The
//!   inventory messages (`cs_inventory`, `cs_gift`, `cs_trade`, their replies and
//!   `sc_gift_received`) also have a protobuf form (`game/proto/inventory.proto`), which the
//!   protobuf port takes and sends instead of JSON for them ([`wire`]).
//! - A malformed request (a field missing, of the wrong type, or an empty name) gets the
//!   refusal with a message naming the field, then the session is closed, as in the seed.
//! - Game-flavor messages other than the login need a logged-in session: `Not logged in`.
//! - Login is cluster-unique (`AccountManager::check_and_set_logged_in`); the user is
//!   created at level 1 in the KV if absent (and, with objects, given the starting inventory).
//! - Pushes (`sc_message`, `sc_broadcast_message`, `sc_tick`) go out only while the server
//!   may act for the account (the account manager's lease); a [`GameObserver`] sees each
//!   login and each tick sent, the "acting" evidence of the `login_unique` checker.

pub mod broadcast;
pub mod config;
pub mod counter;
pub mod enter_pvp;
pub mod farm;
pub mod flavor;
pub mod gift;
pub mod inventory;
pub mod login;
pub mod login_server;
pub mod logout;
pub mod moving;
pub mod redirect;
pub mod send;
pub mod server;
pub mod state;
pub mod status;
pub mod tick;
pub mod trade;
pub mod transfer;
pub mod wire;

/// The protobuf forms of the game's messages (`game/proto/*.proto`, compiled by `build.rs`).
pub mod pb {
    /// The inventory messages (`game/proto/inventory.proto`): the protobuf form of
    /// `cs_inventory`, `cs_gift`, `cs_trade`, their replies and `sc_gift_received`.
    #[allow(clippy::all, missing_docs)]
    pub mod inventory {
        include!(concat!(env!("OUT_DIR"), "/sandtable.game.inventory.rs"));
    }
}

use std::time::Duration;

pub use config::{GameBugs, GameConfig, GameError, GameObserver, ObjectsConfig};
pub use farm::FarmConfig;
pub use flavor::{Flavor, UnknownFlavor};
pub use server::GameServer;

/// How long an authentication key lives in cross-server storage.
pub const AUTH_KEY_TTL: Duration = Duration::from_secs(10);
/// The tag every game-flavor server carries: global broadcasts go to the servers with it.
pub const GAME_TAG: &str = "game";
/// The tag of the servers `cs_enter_pvp` chooses among (the least loaded by `room_count`).
pub const PVP_TAG: &str = "pvp";

/// The `tracing` target of every event of the game and of its hosting in `scenarios`.
///
/// It is the module path the game had before it became a crate (`scenarios::game`): the
/// simulator's trace hash covers each INFO event's target, so keeping it keeps every recorded
/// trace hash valid across the move. The next change that re-records the hashes may rename it
/// to `game` (and add `game` to the crates `sim::trace` hashes at INFO). Filter the game's logs
/// with `RUST_LOG=scenarios::game=debug`.
pub const LOG_TARGET: &str = "scenarios::game";
