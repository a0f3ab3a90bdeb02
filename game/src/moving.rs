//! `cs_move {backend}` -> `sc_move {error: false}`, then (from the gate) `sc_moved {backend,
//! recovered: false}`: a player behind a gate asks to be moved to the backend server named
//! `backend` (a `game` server's name). The move goes through [`engine::gate::GateHost::move_player`]:
//! the gate holds the player's later messages, this server handles what it already has (this
//! handler's reply included), and the target takes the player over; the connection stays open.
//!
//! Refusals: `not behind a gate` (a direct session), `unknown backend`, `already there`,
//! or the gate's reason (`the player is switching backends already`, ...); `Not logged in`.
//! Malformed: `backend` missing or empty.

use std::sync::Arc;

use engine::gate::MoveError;
use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, non_empty, Request};
use crate::GAME_TAG;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsMove {
    #[serde(deserialize_with = "non_empty")]
    pub backend: String,
}

impl Request for CsMove {
    const TYPE: &'static str = "cs_move";
    const REPLY: &'static str = "sc_move";
    const MALFORMED: &'static str = "backend must be a non-empty string";
}

impl LoggedInRequest for CsMove {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScMove {
    pub error: bool,
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsMove) {
    const REPLY: &str = CsMove::REPLY;
    let Some(gates) = game.gates.as_ref().filter(|g| g.is_gated(&s)) else {
        return wire::refuse(&s, REPLY, "not behind a gate");
    };
    if req.backend == game.server_name {
        return wire::refuse(&s, REPLY, "already there");
    }
    let target =
        game.cluster.peers_with_tag(GAME_TAG, false).into_iter().find(|(_, info)| info.name == req.backend);
    let Some((target, _)) = target else {
        return wire::refuse(&s, REPLY, "unknown backend");
    };
    match gates.move_player(&user, target).await {
        Ok(()) => wire::reply(&s, REPLY, &ScMove { error: false }),
        Err(MoveError::Refused(reason)) => wire::refuse(&s, REPLY, &reason),
        Err(e) => {
            tracing::info!(target: crate::LOG_TARGET, user, error = %e, "move not started");
            wire::refuse(&s, REPLY, "try again");
        }
    }
}
