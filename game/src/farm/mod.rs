//! The farm: the seed's time-management game (seed 002, "Delayed processing of commands in a
//! social game") on the engine's deferred command packs ([`engine::commands`]).
//!
//! The client plays ahead on its own copy of the farm, validating each action locally, and
//! sends what it played in *packs*; the server checks a pack's format, stores it in the user's
//! shard and acknowledges it at once; the server that owns the user's farm executes the packs
//! later, one at a time, in pack order. Real-money purchases (`cs_buy_now`) bypass the queue.
//!
//! # The model
//! One [`Farm`] object per user (model `farm`, key = the user name, in the user's shard):
//! `{user, gold, buildings: {name: count}}`. A new user has [`STARTING_GOLD`] gold and no
//! buildings; the farm is created by the first pack or purchase that changes it (until then
//! reads answer the starting farm).
//!
//! # Commands (one file each)
//!
//! | command | file | format (checked at submit: a bad one makes the pack malformed) | effect (a failure fails the whole pack) |
//! |---|---|---|---|
//! | `earn {amount}` | [`earn`] | `amount` 1..=[`EARN_MAX`] | `+amount` gold |
//! | `build {building, cost}` | [`build`] | a [building name](valid_building), `cost` 1..=[`COST_MAX`] | fails if gold < cost; `-cost` gold, +1 building |
//! | `collect {building}` | [`collect`] | a building name | fails if the farm has none; `+`[`COLLECT_GOLD`] gold per building of that kind |
//! | `sell {building}` | [`sell`] | a building name | fails if the farm has none; -1 building, `+`[`SELL_REFUND`] gold |
//! | `buy_now {gold}` (real-time) | [`buy_now`] | `gold` 1..=[`BUY_MAX`] | `+gold` gold, at once |
//!
//! # Messages (one file each)
//!
//! | message (client -> server) | file | replies |
//! |---|---|---|
//! | `cs_state {}` | [`cs_state`] | `sc_state {error: false, state: {gold, buildings, epoch, next_pack}}`, or `sc_retry_after {error: false, ms, waiting}` while packs wait |
//! | `cs_commands {pack_id, basis, commands: [{op, ...}]}` | [`cs_commands`] | `sc_commands_ack {error: false, pack_id, resent}` once stored; `sc_reload {error: true, error_message, pack_id, epoch}`; `sc_commands {error: true, code, error_message, ...}` |
//! | `cs_buy_now {purchase_id, gold}` | [`cs_buy_now`] | `sc_buy_now {error: false, gold, epoch, duplicate}` after commit, or `{error: true, code, error_message}` |
//!
//! The messages exist only on servers started with the farm ([`FarmConfig`], which needs the
//! object store); at login the server schedules the user's waiting packs to run where the user
//! plays ([`engine::commands::Commands::schedule`]).
//!
//! # The client's side of the protocol
//! - Load the state with `cs_state` (obeying `sc_retry_after`); keep its `epoch` as the
//!   *basis* of every pack built on it, and `next_pack` as the next pack id.
//! - Send packs in id order, one id after the other; resend an unanswered pack with the same
//!   id and contents (a stored pack is acknowledged again, never stored twice).
//! - On `sc_reload` (a pack of yours failed on the server: the packs built before that are
//!   skipped), load the state again and play on from it.

pub mod build;
pub mod buy_now;
pub mod collect;
pub mod cs_buy_now;
pub mod cs_commands;
pub mod cs_state;
pub mod earn;
pub mod sell;

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::commands::{CommandSet, Commands, CommandsConfig, CommandsObserver};
use engine::orm::Model;
use serde::{Deserialize, Serialize};

use crate::state::GameState;

/// Gold a new user starts with.
pub const STARTING_GOLD: i64 = 100;
/// Largest `earn` amount.
pub const EARN_MAX: i64 = 50;
/// Largest `build` cost.
pub const COST_MAX: i64 = 1000;
/// Gold `collect` yields per building of the kind.
pub const COLLECT_GOLD: i64 = 5;
/// Gold `sell` refunds.
pub const SELL_REFUND: i64 = 10;
/// Largest `buy_now` purchase.
pub const BUY_MAX: i64 = 1000;
/// Longest building name.
pub const BUILDING_NAME_BYTES_MAX: usize = 16;

/// A user's farm: one object of the object store, the state the command packs change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Farm {
    pub user: String,
    pub gold: i64,
    /// Building name -> how many the farm has (never 0: an entry leaves at 0).
    pub buildings: BTreeMap<String, u32>,
}

impl Model for Farm {
    const MODEL: &'static str = "farm";
    fn key(&self) -> String {
        self.user.clone()
    }
}

impl Farm {
    /// A new user's farm.
    pub fn new_user(user: &str) -> Farm {
        Farm { user: user.to_string(), gold: STARTING_GOLD, buildings: BTreeMap::new() }
    }

    /// How many buildings called `building` the farm has.
    pub fn count(&self, building: &str) -> u32 {
        self.buildings.get(building).copied().unwrap_or(0)
    }
}

/// The farm's commands: `earn`, `build`, `collect`, `sell` queued, `buy_now` real-time.
pub fn command_set() -> CommandSet<Farm> {
    CommandSet::new(Farm::new_user)
        .queued::<earn::Earn>()
        .queued::<build::Build>()
        .queued::<collect::Collect>()
        .queued::<sell::Sell>()
        .realtime::<buy_now::BuyNow>()
}

/// Checks a building name: 1 to [`BUILDING_NAME_BYTES_MAX`] lowercase ASCII letters.
pub fn valid_building(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > BUILDING_NAME_BYTES_MAX
        || !name.bytes().all(|b| b.is_ascii_lowercase())
    {
        return Err(format!("building must be 1 to {BUILDING_NAME_BYTES_MAX} letters a-z"));
    }
    Ok(())
}

/// The farm part of a game server: its command queues' settings (workers, sweep, planted
/// bugs) and who is told of each pack execution. Needs the object store
/// ([`crate::GameConfig::objects`]); see [`crate::GameServer::start_with`].
#[derive(Clone, Default)]
pub struct FarmConfig {
    pub commands: CommandsConfig,
    /// Told of every pack execution (the `deferred_commands` scenario's evidence that one
    /// user's packs never run at once on a server).
    pub observer: Option<Arc<dyn CommandsObserver>>,
}

impl std::fmt::Debug for FarmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarmConfig")
            .field("commands", &self.commands)
            .field("observer", &self.observer.as_ref().map(|_| "set"))
            .finish()
    }
}

/// The command queues of a server whose farm handlers are registered.
pub(crate) fn commands_of(game: &GameState) -> &Commands<Farm> {
    game.farm.as_ref().expect("farm handlers are registered only with the farm's command queues")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_new_user_has_100_gold_and_no_buildings() {
        let farm = command_set().initial("7");
        assert_eq!(serde_json::to_value(&farm).unwrap(), json!({"user": "7", "gold": 100, "buildings": {}}));
    }

    #[test]
    fn the_set_registers_four_queued_commands_and_one_real_time_one() {
        let set = command_set();
        assert_eq!(set.names(), ["build", "buy_now", "collect", "earn", "sell"]);
        assert!(set.check(&json!({"op": "buy_now", "gold": 5}), true).is_ok());
        assert!(set.check(&json!({"op": "buy_now", "gold": 5}), false).is_err(), "not in a pack");
        assert!(set.check(&json!({"op": "earn", "amount": 5}), true).is_err(), "not real-time");
    }

    #[test]
    fn building_names_are_one_to_sixteen_lowercase_letters() {
        for ok in ["a", "barn", "abcdefghijklmnop"] {
            assert!(valid_building(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Barn", "barn2", "abcdefghijklmnopq", "big barn", "é"] {
            assert!(valid_building(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_pack_applies_in_order_and_a_failing_command_changes_nothing() {
        let set = command_set();
        let farm = Farm::new_user("1");
        let pack = [
            json!({"op": "build", "building": "barn", "cost": 60}),
            json!({"op": "collect", "building": "barn"}),
            json!({"op": "earn", "amount": 10}),
        ];
        let after = set.apply_all(&pack, &farm).unwrap();
        assert_eq!((after.gold, after.count("barn")), (100 - 60 + 5 + 10, 1));
        let cheat =
            [json!({"op": "earn", "amount": 10}), json!({"op": "build", "building": "mill", "cost": 500})];
        let (index, why) = set.apply_all(&cheat, &farm).unwrap_err();
        assert_eq!(index, 1);
        assert!(why.contains("not enough gold"), "{why}");
    }
}
