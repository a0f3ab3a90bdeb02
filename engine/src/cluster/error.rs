//! Why a cluster call failed.

use crate::env::CoordError;

/// Errors of [`Cluster`](super::Cluster) calls. Reads of the view never fail; only joining,
/// publishing and leaving talk to the coordination service.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    /// The coordination service refused or could not be reached; `join` may be retried.
    #[error("coordination: {0}")]
    Coord(#[from] CoordError),
    /// The `app_id` breaks the shared rule ([`crate::env::validate_app_id`]); fix the configuration.
    #[error("invalid app_id {0:?}: use 1 to 128 ASCII letters, digits, '_', '-', '.'")]
    InvalidAppId(String),
    /// A tag is empty; tags name server groups and must be non-empty.
    #[error("invalid tag {0:?}: must be non-empty")]
    InvalidTag(String),
    /// This server's info could not be encoded as JSON (a status value serde rejects).
    #[error("cannot encode peer info: {0}")]
    Serialize(String),
    /// [`Cluster::leave`](super::Cluster::leave) was called; this handle no longer publishes.
    #[error("this server has left the cluster")]
    Left,
}
