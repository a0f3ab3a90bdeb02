//! The status each server publishes in the cluster (`Cluster::set_status`) every
//! [`STATUS_PERIOD`]: `{user_count}` on a game server (accounts logged in here), `{room_count}`
//! on a pvp server (sessions transferred in and still open), which `cs_enter_pvp` uses to pick
//! the least-loaded pvp server.
//!
//! The status is re-published every period, changed or not: a publication lost to a
//! coordination outage or a session change comes back by itself. So a failed publication is
//! only logged (DEBUG) and left to the next period.

use std::sync::Arc;
use std::time::Duration;

use engine::cluster::Cluster;
use engine::env::Clock;
use engine::session::SessionService;
use serde::Serialize;

use crate::state::GameState;
use crate::transfer::TRANSFERRED_CONTEXT_KEY;
use crate::{wire, LOG_TARGET};

/// How often a server publishes its status.
pub const STATUS_PERIOD: Duration = Duration::from_millis(500);
/// The status field pvp servers are compared by.
pub const ROOM_COUNT_FIELD: &str = "room_count";

/// A game server's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GameStatus {
    pub user_count: usize,
}

/// A pvp server's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PvpStatus {
    /// Named [`ROOM_COUNT_FIELD`].
    pub room_count: usize,
}

/// Publishes [`GameStatus`] forever (the server aborts the task on stop).
pub(crate) async fn run_game(game: Arc<GameState>, clock: Arc<dyn Clock>) {
    loop {
        let status = GameStatus { user_count: game.accounts.local_accounts().len() };
        publish(&game.cluster, &status).await;
        clock.sleep(STATUS_PERIOD).await;
    }
}

/// Publishes [`PvpStatus`] forever (the server aborts the task on stop).
pub(crate) async fn run_pvp(cluster: Cluster, sessions: SessionService, clock: Arc<dyn Clock>) {
    let mut last = None;
    loop {
        let n = sessions
            .sessions()
            .iter()
            .filter(|s| s.context::<bool>(TRANSFERRED_CONTEXT_KEY).unwrap_or(false))
            .count();
        publish(&cluster, &PvpStatus { room_count: n }).await;
        if last != Some(n) {
            tracing::debug!(target: LOG_TARGET, room_count = n, "pvp status");
            last = Some(n);
        }
        clock.sleep(STATUS_PERIOD).await;
    }
}

async fn publish<T: Serialize>(cluster: &Cluster, status: &T) {
    let Some(body) = wire::to_body("status", status) else { return };
    if let Err(e) = cluster.set_status(body).await {
        // Published again next period (module doc).
        tracing::debug!(target: LOG_TARGET, error = %e, "status not published; retried next period");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn statuses_have_the_field_names_peers_compare() {
        assert_eq!(
            serde_json::to_value(PvpStatus { room_count: 2 }).unwrap(),
            json!({ ROOM_COUNT_FIELD: 2 })
        );
        assert_eq!(serde_json::to_value(GameStatus { user_count: 3 }).unwrap(), json!({"user_count": 3}));
    }
}
