//! How objects and transaction decisions are stored in SQL rows.
//!
//! An object is one row of its model's table, at key `s{shard}/{shard_user}/{model}.{key}`,
//! whose value is a [`StoredObject`]: the committed state, and — only between the two phases
//! of a transaction that spans SQL instances — the transaction's pending write (`p`), the
//! redo record: the new state and where the transaction's decision is.
//!
//! A decision is one row of [`DECISION_TABLE`] in the shard of the transaction's *primary*
//! user, key `s{shard}/{primary}/txn.{id}`, value `committed` or `aborted`, created once
//! (`Expect::Absent`): the commit writes `committed` in the same `transact` as the primary
//! instance's objects, and anyone who finds a pending write and no decision writes `aborted`
//! first, so a late commit fails. Decision rows are kept (they are a few bytes per
//! cross-instance transaction); see docs/objects.md.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ObjectRef;
use crate::env::TableName;
use crate::shard::{ShardError, ShardRouter};

/// The table of transaction decisions.
pub const DECISION_TABLE: &str = "orm_txn";

/// An object's row value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StoredObject {
    /// The committed state; `None` if the object does not exist (a row kept only for a
    /// pending create).
    #[serde(rename = "v")]
    pub value: Option<Value>,
    /// A pending write of a cross-instance transaction (the redo record).
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

/// The write a cross-instance transaction prepared on this object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// The transaction id (the decision row's key suffix).
    pub txn: String,
    /// The user whose shard holds the decision row.
    pub primary: String,
    /// The state if the transaction committed (`None`: it deletes the object).
    pub value: Option<Value>,
}

impl StoredObject {
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).expect("JSON values serialize"))
    }

    pub fn decode(bytes: &[u8]) -> Result<StoredObject, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("stored object unreadable: {e}"))
    }
}

/// A transaction's outcome, as recorded in its decision row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    Committed,
    Aborted,
}

impl Decision {
    pub fn encode(self) -> Bytes {
        Bytes::from_static(match self {
            Decision::Committed => b"committed",
            Decision::Aborted => b"aborted",
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Decision, String> {
        match bytes {
            b"committed" => Ok(Decision::Committed),
            b"aborted" => Ok(Decision::Aborted),
            other => Err(format!("decision row holds {:?}", String::from_utf8_lossy(other))),
        }
    }
}

pub(crate) fn decision_table() -> TableName {
    TableName::new(DECISION_TABLE).expect("valid table name")
}

/// The suffix of a decision row's key under its primary user.
pub(crate) fn decision_suffix(txn: &str) -> String {
    format!("txn.{txn}")
}

/// An object's committed state as its row says, read from outside the object store (a checker
/// after a run, an operator's tool): the row's state, or — when it carries a pending write —
/// the state the transaction's decision gives it (committed: the pending state; aborted or
/// undecided: the committed one), as the object's next owner would complete it. Nothing is
/// written: an undecided transaction stays undecided.
#[derive(Debug, Clone, PartialEq)]
pub struct CommittedRead {
    /// The state; `None` if the object does not exist (no row, a deleted object, or a row
    /// that is not a stored object).
    pub value: Option<Value>,
    /// True if the row carried a pending write.
    pub had_pending: bool,
}

/// Reads `obj`'s committed state through `router` (see [`CommittedRead`]).
pub async fn read_committed(router: &ShardRouter, obj: &ObjectRef) -> Result<CommittedRead, ShardError> {
    let key = router.user_key(&obj.shard_user, &obj.row_suffix());
    let Some(row) = router.get(&obj.shard_user, &obj.table(), &key).await? else {
        return Ok(CommittedRead { value: None, had_pending: false });
    };
    let Ok(stored) = StoredObject::decode(&row.value) else {
        return Ok(CommittedRead { value: None, had_pending: false });
    };
    let Some(p) = stored.pending else {
        return Ok(CommittedRead { value: stored.value, had_pending: false });
    };
    let dkey = router.user_key(&p.primary, &decision_suffix(&p.txn));
    let decided = router.get(&p.primary, &decision_table(), &dkey).await?;
    let committed = decided.is_some_and(|d| Decision::decode(&d.value) == Ok(Decision::Committed));
    Ok(CommittedRead { value: if committed { p.value } else { stored.value }, had_pending: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_object_without_a_pending_write_is_just_its_value() {
        let o = StoredObject { value: Some(serde_json::json!({"gold": 1})), pending: None };
        assert_eq!(&o.encode()[..], br#"{"v":{"gold":1}}"#);
        assert_eq!(StoredObject::decode(&o.encode()).unwrap(), o);
    }

    #[test]
    fn decisions_round_trip_and_garbage_is_an_error() {
        for d in [Decision::Committed, Decision::Aborted] {
            assert_eq!(Decision::decode(&d.encode()), Ok(d));
        }
        assert!(Decision::decode(b"maybe").is_err());
        assert!(StoredObject::decode(b"{").is_err());
    }
}
