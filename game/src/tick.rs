//! `sc_tick {seq}`: with `GameConfig::tick_period` set, every account logged in here gets a
//! tick at that period, sent only while the server may act for it (the account manager's
//! lease, checked in `deliver` at the instant of the send). The observer hears of each tick
//! sent: the "acting" evidence of the `login_unique` checker.

use std::sync::Arc;
use std::time::Duration;

use engine::env::Clock;
use serde::Serialize;

use crate::state::GameState;
use crate::wire;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ScTick {
    /// 1 for the first tick after the start, then one more per period.
    pub seq: u64,
}

/// The message type of [`ScTick`].
pub const SC_TICK: &str = "sc_tick";

/// Ticks every `period`, forever (the server aborts the task on stop).
pub(crate) async fn run(game: Arc<GameState>, clock: Arc<dyn Clock>, period: Duration) {
    let mut seq = 0u64;
    loop {
        clock.sleep(period).await;
        seq += 1;
        let Some(tick) = wire::to_body(SC_TICK, &ScTick { seq }) else { continue };
        for user in game.accounts.local_accounts() {
            // Same instant: the lease check inside `deliver`, the send, the report. `None`: not
            // sent (lease not held, or the session closed), so not acted.
            if let Some(link) = game.accounts.deliver(&user, SC_TICK, tick.clone()) {
                if let Some(o) = &game.observer {
                    o.acted(&user, &link.to_string());
                }
            }
        }
    }
}
