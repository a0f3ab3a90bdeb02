//! Object models: what game code declares, and how an object is named.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::env::{validate_name, TableName, DB_KEY_BYTES_MAX, DB_NAME_BYTES_MAX};
use crate::keyname;
use crate::shard::key::{validate_user, SHARD_PREFIX_BYTES, USER_ID_BYTES_MAX};
use crate::signed::ACCOUNT_BYTES_MAX;

/// Longest object key, in bytes of UTF-8 (any characters: it is encoded into its znode name
/// and row key, [`crate::keyname`]).
pub const OBJECT_KEY_BYTES_MAX: usize = 128;

/// Bytes of the longest row key of an object keyed by an account id in that account's shard
/// (`s0007/{name}/{model}.{name}`), whatever the id's characters and the model's name.
pub const ACCOUNT_OBJECT_ROW_KEY_BYTES_MAX: usize =
    SHARD_PREFIX_BYTES + 2 * keyname::encoded_bytes_max(ACCOUNT_BYTES_MAX) + 2 + DB_NAME_BYTES_MAX;

// Every account id is a valid object key and shard user, and an object keyed by an account
// (an inventory, the gate's player anchor) always has a valid row key.
const _: () = assert!(ACCOUNT_BYTES_MAX <= OBJECT_KEY_BYTES_MAX && ACCOUNT_BYTES_MAX <= USER_ID_BYTES_MAX);
const _: () = assert!(ACCOUNT_OBJECT_ROW_KEY_BYTES_MAX <= DB_KEY_BYTES_MAX, "account objects fit a row key");

/// A game object type stored by the object store (iFun's object model).
///
/// One object is one row of table [`Model::MODEL`], JSON-encoded, on the SQL instance of the
/// shard of [`Model::shard_user`] (by default the key itself: a user's objects live with the
/// user). Several objects of one transaction may be on several instances; the store makes the
/// transaction atomic anyway.
///
/// ```
/// use engine::orm::Model;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, Clone, Serialize, Deserialize)]
/// struct Inventory {
///     user: String,
///     gold: i64,
/// }
///
/// impl Model for Inventory {
///     const MODEL: &'static str = "inventory";
///     fn key(&self) -> String {
///         self.user.clone()
///     }
/// }
/// ```
pub trait Model: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The model's name: its table, `[a-z][a-z0-9_]*`, at most 64 bytes.
    const MODEL: &'static str;
    /// This object's key (unique within the model).
    fn key(&self) -> String;
    /// The user whose shard holds the object with `key`: the key itself unless overridden.
    fn shard_user(key: &str) -> String {
        key.to_string()
    }
    /// This object's unique fields, as `(field, value)` pairs: each value names at most one
    /// object of the model (e.g. a display name), and [`Transaction::fetch_by`] finds it.
    /// None by default.
    ///
    /// [`Transaction::fetch_by`]: super::Transaction::fetch_by
    fn unique_fields(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
}

/// The model name of the unique-field index entries: one object per `(model, field, value)`,
/// whose state is the key of the object holding that value.
pub const UNIQUE_MODEL: &str = "orm_unique";

/// Names one object: its model and key. Compared by `(model, key)` only (the shard user follows
/// from them). Ordered by the global order in which transactions take objects: unique-field
/// index entries first (so [`Transaction::fetch_by`] can take an entry, then the object it
/// names), then by `(model, key)`.
///
/// [`Transaction::fetch_by`]: super::Transaction::fetch_by
#[derive(Debug, Clone)]
pub struct ObjectRef {
    pub model: String,
    pub key: String,
    /// The user whose shard holds it.
    pub shard_user: String,
}

impl ObjectRef {
    /// The object of model `M` with `key`.
    pub fn of<M: Model>(key: &str) -> ObjectRef {
        ObjectRef { model: M::MODEL.to_string(), key: key.to_string(), shard_user: M::shard_user(key) }
    }

    /// The index entry of unique field `field` = `value` of model `M` (an object of model
    /// [`UNIQUE_MODEL`], in the shard of its own key). A transaction that sets, changes or
    /// clears a unique field must hold the entries of the old and new values, taken in the
    /// global order like any object.
    pub fn unique<M: Model>(field: &str, value: &str) -> ObjectRef {
        let key = format!("{}.{field}.{value}", M::MODEL);
        ObjectRef { model: UNIQUE_MODEL.to_string(), shard_user: key.clone(), key }
    }

    /// Checks the names (model, key, shard user) and the row key's length; the error names
    /// the bad one. Key and shard user may hold any characters.
    pub fn validate(&self) -> Result<(), String> {
        validate_name(&self.model).map_err(|e| e.to_string())?;
        if self.key.is_empty() || self.key.len() > OBJECT_KEY_BYTES_MAX {
            return Err(format!(
                "object key of {} bytes: must be 1 to {OBJECT_KEY_BYTES_MAX} bytes of UTF-8",
                self.key.len()
            ));
        }
        validate_user(&self.shard_user)?;
        let row_key = self.row_key_len();
        if row_key > DB_KEY_BYTES_MAX {
            return Err(format!(
                "object {self}: its row key would be {row_key} bytes, at most {DB_KEY_BYTES_MAX} (shorten the key or model)"
            ));
        }
        Ok(())
    }

    /// The suffix of the object's row key under its shard user (`{model}.{name}`, the key
    /// encoded: a plain key as it is).
    pub(crate) fn row_suffix(&self) -> String {
        format!("{}.{}", self.model, keyname::encode(&self.key))
    }

    fn row_key_len(&self) -> usize {
        crate::shard::key::user_key(crate::shard::ShardId(0), &self.shard_user, &self.row_suffix()).len()
    }

    pub(crate) fn table(&self) -> TableName {
        TableName::new(self.model.clone()).expect("validated model name")
    }

    fn order_key(&self) -> (bool, &str, &str) {
        (self.model != UNIQUE_MODEL, &self.model, &self.key)
    }

    /// `model/key`, for logs and lock names.
    pub fn name(&self) -> String {
        format!("{}/{}", self.model, self.key)
    }
}

impl PartialEq for ObjectRef {
    fn eq(&self, other: &Self) -> bool {
        (&self.model, &self.key) == (&other.model, &other.key)
    }
}

impl Eq for ObjectRef {}

impl PartialOrd for ObjectRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ObjectRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.model, self.key)
    }
}
