//! `cs_commands {pack_id, basis, commands: [{op, ...}, ...]}`: a pack of queued commands.
//!
//! | outcome of [`Commands::submit`](engine::commands::Commands::submit) | reply |
//! |---|---|
//! | stored durably, or a resend of a stored pack | `sc_commands_ack {error: false, pack_id, resent}` |
//! | built on a state older than the last failed pack: not stored | `sc_reload {error: true, error_message, pack_id, epoch}` |
//! | malformed ([`Pack::parse`](engine::commands::Pack::parse)): never stored | `sc_commands {error: true, code: "malformed", error_message}` |
//! | not the next pack id | `sc_commands {error: true, code: "gap", error_message, expected}` |
//! | a basis the server never issued | `sc_commands {error: true, code: "future_basis", error_message, epoch}` |
//! | the user's queue is full | `sc_commands {error: true, code: "full", error_message, retry_after_ms}` |
//! | the object store failed (the pack may or may not be stored) | `sc_commands {error: true, code: "server", error_message}` |
//!
//! Every reply names the `pack_id` it answers (a refusal of a pack without a readable id
//! names none), so a client that resent a pack on one connection can tell the answers apart.
//!
//! Only an ack is a promise. After `server` (or no answer) resend the same pack — same id,
//! same contents: a stored pack is acknowledged again, never stored twice. A malformed pack
//! keeps the session open (it is a game-level refusal, like a failed command), unlike a body
//! that is not an object.

use std::sync::Arc;

use engine::commands::{CommandsError, Submitted};
use engine::session::Session;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::commands_of;
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, Request};
use crate::LOG_TARGET;

/// The pack, checked by [`Pack::parse`](engine::commands::Pack::parse) in the handler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct CsCommands {
    pub body: Value,
}

impl Request for CsCommands {
    const TYPE: &'static str = "cs_commands";
    const REPLY: &'static str = "sc_commands";
    const MALFORMED: &'static str = "the body must be an object {pack_id, basis, commands}";
}

impl LoggedInRequest for CsCommands {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScCommandsAck {
    pub error: bool,
    pub pack_id: u64,
    /// True if the pack had been stored before (a resend).
    pub resent: bool,
}

/// The message type of [`ScCommandsAck`].
pub const SC_COMMANDS_ACK: &str = "sc_commands_ack";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScReload {
    pub error: bool,
    pub error_message: &'static str,
    pub pack_id: u64,
    /// The epoch the state is at now.
    pub epoch: u64,
}

/// The message type of [`ScReload`].
pub const SC_RELOAD: &str = "sc_reload";

/// A refused pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScCommandsError {
    pub error: bool,
    /// The refused pack's id, when the pack had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack_id: Option<u64>,
    /// `malformed`, `gap`, `future_basis`, `full` (definitely not stored) or `server` (maybe
    /// stored: resend).
    pub code: &'static str,
    pub error_message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ScCommandsError {
    fn new(code: &'static str, error_message: String) -> ScCommandsError {
        ScCommandsError {
            error: true,
            pack_id: None,
            code,
            error_message,
            expected: None,
            epoch: None,
            retry_after_ms: None,
        }
    }
}

/// The refusal a submit error gets.
pub fn refusal(e: &CommandsError) -> ScCommandsError {
    let mut r = ScCommandsError::new("server", e.to_string());
    match e {
        CommandsError::Malformed(_) | CommandsError::InvalidArgument(_) => r.code = "malformed",
        CommandsError::Gap { expected } => {
            r.code = "gap";
            r.expected = Some(*expected);
        }
        CommandsError::FutureBasis { epoch } => {
            r.code = "future_basis";
            r.epoch = Some(*epoch);
        }
        CommandsError::Full { retry_after, .. } => {
            r.code = "full";
            r.retry_after_ms = Some(u64::try_from(retry_after.as_millis()).unwrap_or(u64::MAX));
        }
        CommandsError::IdReused(_)
        | CommandsError::Orm(_)
        | CommandsError::Corrupt(_)
        | CommandsError::Stopped => {}
    }
    r
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsCommands) {
    const REPLY: &str = CsCommands::REPLY;
    let commands = commands_of(&game);
    let pack = match commands.parse(&req.body) {
        Ok(p) => p,
        Err(e) => {
            let mut r = refusal(&CommandsError::Malformed(e));
            r.pack_id = req.body.get("pack_id").and_then(Value::as_u64);
            return wire::reply(&s, REPLY, &r);
        }
    };
    let pack_id = pack.pack_id;
    match commands.submit(&user, pack).await {
        Ok(Submitted::Stored) => {
            wire::reply(&s, SC_COMMANDS_ACK, &ScCommandsAck { error: false, pack_id, resent: false })
        }
        Ok(Submitted::Resent) => {
            wire::reply(&s, SC_COMMANDS_ACK, &ScCommandsAck { error: false, pack_id, resent: true })
        }
        Ok(Submitted::Reload { epoch }) => wire::reply(
            &s,
            SC_RELOAD,
            &ScReload { error: true, error_message: "the state is stale: reload it", pack_id, epoch },
        ),
        Err(e) => {
            tracing::debug!(target: LOG_TARGET, user, pack_id, error = %e, "cs_commands refused");
            wire::reply(&s, REPLY, &ScCommandsError { pack_id: Some(pack_id), ..refusal(&e) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::commands::PackError;
    use engine::orm::OrmError;
    use serde_json::json;
    use std::time::Duration;

    fn wire_of(e: CommandsError) -> Value {
        serde_json::to_value(refusal(&e)).unwrap()
    }

    #[test]
    fn a_gap_names_the_expected_pack_and_a_full_queue_the_wait() {
        let gap = wire_of(CommandsError::Gap { expected: 4 });
        assert_eq!((&gap["code"], &gap["expected"]), (&json!("gap"), &json!(4)));
        let full = wire_of(CommandsError::Full { waiting: 32, retry_after: Duration::from_millis(1500) });
        assert_eq!((&full["code"], &full["retry_after_ms"]), (&json!("full"), &json!(1500)));
        assert_eq!(full["error"], json!(true));
    }

    #[test]
    fn a_malformed_pack_and_an_engine_error_get_different_codes() {
        assert_eq!(wire_of(CommandsError::Malformed(PackError::ZeroPackId))["code"], json!("malformed"));
        let e = wire_of(CommandsError::Orm(OrmError::Unknown("sql timeout".into())));
        assert_eq!(e["code"], json!("server"), "the pack may be stored: the client resends it");
        assert!(e.get("expected").is_none());
    }
}
