//! A pack as the client sends it, and the format checks it passes before it is stored.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::registry::CommandSet;
use crate::orm::Model;

/// Most commands in one pack.
pub const PACK_COMMANDS_MAX: usize = 64;
/// Largest pack (its commands, JSON-encoded), in bytes: a stored pack row stays far below
/// the SQL port's value limit.
pub const PACK_BYTES_MAX: usize = 8 * 1024;

/// A pack of commands the client played ahead: `{pack_id, basis, commands: [...]}`.
///
/// `pack_id`s of one user are 1, 2, 3, ... with no gaps: the queue's order is pack-id order,
/// and a resent id is recognised as a resend. `basis` is the state epoch the client built the
/// pack on (the epoch of the last state it loaded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pack {
    pub pack_id: u64,
    pub basis: u64,
    pub commands: Vec<Value>,
}

/// Why a pack is malformed. A malformed pack is never stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackError {
    #[error("a pack is a JSON object {{pack_id, basis, commands}}")]
    NotAnObject,
    #[error("field {field}: {why}")]
    BadField { field: &'static str, why: String },
    #[error("pack_id must be at least 1")]
    ZeroPackId,
    #[error("a pack holds 1 to {max} commands, this one {count}")]
    CommandCount { count: usize, max: usize },
    #[error("pack is {bytes} bytes, at most {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("command {index}: {why}")]
    BadCommand { index: usize, why: String },
}

impl Pack {
    /// Parses and checks a pack: its fields, its size, and each command against `set`
    /// (registered, queued, [`Command::validate`](super::Command::validate)).
    pub fn parse<S: Model>(body: &Value, set: &CommandSet<S>) -> Result<Pack, PackError> {
        let Value::Object(fields) = body else { return Err(PackError::NotAnObject) };
        let uint = |field: &'static str| -> Result<u64, PackError> {
            match fields.get(field) {
                Some(v) => {
                    v.as_u64().ok_or(PackError::BadField { field, why: "not an unsigned integer".into() })
                }
                None => Err(PackError::BadField { field, why: "missing".into() }),
            }
        };
        let pack_id = uint("pack_id")?;
        let basis = uint("basis")?;
        if pack_id == 0 {
            return Err(PackError::ZeroPackId);
        }
        let commands = match fields.get("commands") {
            Some(Value::Array(c)) => c,
            Some(_) => return Err(PackError::BadField { field: "commands", why: "not an array".into() }),
            None => return Err(PackError::BadField { field: "commands", why: "missing".into() }),
        };
        if commands.is_empty() || commands.len() > PACK_COMMANDS_MAX {
            return Err(PackError::CommandCount { count: commands.len(), max: PACK_COMMANDS_MAX });
        }
        let bytes = serde_json::to_vec(commands).map(|v| v.len()).unwrap_or(usize::MAX);
        if bytes > PACK_BYTES_MAX {
            return Err(PackError::TooLarge { bytes, max: PACK_BYTES_MAX });
        }
        for (index, c) in commands.iter().enumerate() {
            set.check(c, false).map_err(|why| PackError::BadCommand { index, why })?;
        }
        Ok(Pack { pack_id, basis, commands: commands.clone() })
    }
}
