//! `cs_state {}` -> `sc_state {error: false, state: {gold, buildings, epoch, next_pack}}` when
//! none of the user's packs waits, or `sc_retry_after {error: false, ms, waiting}` while some
//! do (the seed's "wait and request the profile again"): a client never sees a state that an
//! acknowledged pack has yet to change.
//!
//! `epoch` is the state epoch to name as the `basis` of the packs built on this state;
//! `next_pack` the id of the next pack to send. Refusal: `sc_state {error: true,
//! error_message}` when the object store failed (nothing changed: ask again).

use std::collections::BTreeMap;
use std::sync::Arc;

use engine::commands::StateRead;
use engine::session::Session;
use serde::{Deserialize, Serialize};

use super::commands_of;
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, Request};
use crate::LOG_TARGET;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsState {}

impl Request for CsState {
    const TYPE: &'static str = "cs_state";
    const REPLY: &'static str = "sc_state";
    const MALFORMED: &'static str = "the body must be an object";
}

impl LoggedInRequest for CsState {}

/// The farm as a client loads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmState {
    pub gold: i64,
    pub buildings: BTreeMap<String, u32>,
    /// The state epoch: the `basis` of packs built on this state.
    pub epoch: u64,
    /// The id of the next pack to send.
    pub next_pack: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScState {
    pub error: bool,
    pub state: FarmState,
}

/// The answer while packs wait.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScRetryAfter {
    pub error: bool,
    /// Ask again after this many milliseconds.
    pub ms: u64,
    /// Packs waiting.
    pub waiting: u64,
}

/// The message type of [`ScRetryAfter`].
pub const SC_RETRY_AFTER: &str = "sc_retry_after";

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, _req: CsState) {
    const REPLY: &str = CsState::REPLY;
    match commands_of(&game).read(&user).await {
        Ok(StateRead::State { state, epoch, next_pack }) => {
            let state = FarmState { gold: state.gold, buildings: state.buildings, epoch, next_pack };
            wire::reply(&s, REPLY, &ScState { error: false, state });
        }
        Ok(StateRead::RetryAfter { after, waiting }) => {
            let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            wire::reply(&s, SC_RETRY_AFTER, &ScRetryAfter { error: false, ms, waiting });
        }
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, error = %e, "cs_state failed");
            wire::refuse(&s, REPLY, "try again");
        }
    }
}
