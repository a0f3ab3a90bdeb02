//! `cs_counter_add {n, seq}` -> `sc_counter {error: false, value, seq, backend, duplicate}`:
//! a per-player counter in the player's [`Counter`] object, the message the `gate_route`
//! scenario numbers. `seq` is the client's message number, from 1: the add is applied only
//! when `seq` is the next one (`last_seq + 1`), so a message the client sends again after a
//! backend crash (it cannot know whether the first copy was handled) is answered again with
//! `duplicate: true` and not applied twice. `backend` is the name of the server that
//! handled it.
//!
//! Refusals: `{error: true, error_message: "gap", seq, expected}` when `seq` skips ahead (an
//! earlier message never arrived: the client sends again from `expected`), `try again`,
//! `outcome unknown`, `Not logged in`; malformed: `n` or `seq` missing or not an integer, `seq < 1`.

use std::sync::Arc;

use engine::orm::{Model, OrmError};
use engine::session::Session;
use serde::{Deserialize, Serialize};

use crate::inventory::{orm_of, refusal_of, retrying, Attempt};
use crate::state::{GameState, LoggedInRequest};
use crate::wire::{self, Request};
use crate::LOG_TARGET;

/// The refusal of a `seq` that skips ahead.
pub const GAP: &str = "gap";

/// A player's counter: one object of the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub player: String,
    pub value: i64,
    /// The last `seq` applied (0: none).
    pub last_seq: u64,
}

impl Model for Counter {
    const MODEL: &'static str = "counter";
    fn key(&self) -> String {
        self.player.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CsCounterAdd {
    pub n: i64,
    pub seq: u64,
}

impl Request for CsCounterAdd {
    const TYPE: &'static str = "cs_counter_add";
    const REPLY: &'static str = "sc_counter";
    const MALFORMED: &'static str = "n and seq must be integers, seq at least 1";
}

impl LoggedInRequest for CsCounterAdd {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScCounter {
    pub error: bool,
    pub value: i64,
    pub seq: u64,
    pub backend: String,
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScCounterGap {
    pub error: bool,
    pub error_message: &'static str,
    /// The `seq` refused.
    pub seq: u64,
    pub expected: u64,
}

/// What one add did.
enum Outcome {
    Applied(i64),
    Duplicate(i64),
    Gap(u64),
}

pub(crate) async fn handle(game: Arc<GameState>, s: Session, user: String, req: CsCounterAdd) {
    const REPLY: &str = CsCounterAdd::REPLY;
    if req.seq == 0 {
        return wire::reject_malformed(&s, REPLY, CsCounterAdd::MALFORMED);
    }
    let orm = orm_of(&game);
    let outcome = retrying(&game, || async {
        let mut tx = orm.begin();
        let existing = tx.fetch::<Counter>(&user).await?;
        let is_new = existing.is_none();
        let mut c = existing.unwrap_or(Counter { player: user.clone(), value: 0, last_seq: 0 });
        let outcome = if req.seq <= c.last_seq {
            Outcome::Duplicate(c.value)
        } else if req.seq > c.last_seq + 1 {
            Outcome::Gap(c.last_seq + 1)
        } else {
            c.value += req.n;
            c.last_seq = req.seq;
            if is_new {
                tx.create(&c)?;
            } else {
                tx.put(&c)?;
            }
            tx.commit().await?;
            Outcome::Applied(c.value)
        };
        Ok::<Attempt<Outcome>, OrmError>(Ok(outcome))
    })
    .await;
    let backend = game.server_name.clone();
    match outcome {
        Ok(Ok(Outcome::Applied(value))) => {
            game.observe_counter(&user, req.seq, req.n);
            wire::reply(
                &s,
                REPLY,
                &ScCounter { error: false, value, seq: req.seq, backend, duplicate: false },
            );
        }
        Ok(Ok(Outcome::Duplicate(value))) => {
            wire::reply(
                &s,
                REPLY,
                &ScCounter { error: false, value, seq: req.seq, backend, duplicate: true },
            );
        }
        Ok(Ok(Outcome::Gap(expected))) => {
            wire::reply(&s, REPLY, &ScCounterGap { error: true, error_message: GAP, seq: req.seq, expected });
        }
        Ok(Err(refusal)) => wire::refuse(&s, REPLY, refusal),
        Err(e) => {
            tracing::info!(target: LOG_TARGET, user, error = %e, "counter add failed");
            wire::refuse(&s, REPLY, refusal_of(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_needs_integer_n_and_seq() {
        assert_eq!(wire::parse::<CsCounterAdd>(json!({"n": 2, "seq": 1})), Ok(CsCounterAdd { n: 2, seq: 1 }));
        for bad in [json!({}), json!({"n": 1}), json!({"n": "1", "seq": 1}), json!({"n": 1, "seq": -1})] {
            assert!(wire::parse::<CsCounterAdd>(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_replies_are_the_documented_shapes() {
        let ok = ScCounter { error: false, value: 5, seq: 3, backend: "game-1".into(), duplicate: false };
        assert_eq!(
            serde_json::to_value(ok).unwrap(),
            json!({"error": false, "value": 5, "seq": 3, "backend": "game-1", "duplicate": false})
        );
        let gap = ScCounterGap { error: true, error_message: GAP, seq: 6, expected: 4 };
        assert_eq!(
            serde_json::to_value(gap).unwrap(),
            json!({"error": true, "error_message": "gap", "seq": 6, "expected": 4})
        );
    }
}
