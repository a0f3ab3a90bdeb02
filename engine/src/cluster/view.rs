//! The cluster view as plain data: what it says, whether it can be trusted, how it changed.
//!
//! Everything here is pure (no ports): the membership task feeds znode reads in and gets
//! [`ViewChange`]s out, which is what the unit tests below exercise.

use std::collections::BTreeMap;

use super::peer::{PeerId, PeerInfo};
use crate::env::MonoTime;

/// Whether the view is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewState {
    /// Connected to the coordination service with every watch armed: the view follows the
    /// service (with the usual notification delay).
    Live,
    /// The view is the last one known and may be out of date. It is still served (a game
    /// keeps routing to the peers it knew), but callers that need certainty should wait.
    Stale {
        /// This node's monotonic time when the view stopped being live.
        since: MonoTime,
        reason: StaleReason,
    },
}

impl ViewState {
    pub fn is_live(&self) -> bool {
        matches!(self, ViewState::Live)
    }
}

/// Why the view is [`ViewState::Stale`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaleReason {
    /// The session is disconnected; it may still be alive at the service.
    Disconnected,
    /// The session expired (our registration is gone); re-registering under the same id.
    SessionExpired,
    /// Connected, but reading the view failed; retrying.
    Reloading,
    /// [`Cluster::leave`](super::Cluster::leave) was called; the view is frozen for good.
    Left,
}

/// One change of the view, as delivered by [`Cluster::changes`](super::Cluster::changes).
#[derive(Debug, Clone, PartialEq)]
pub enum ViewChange {
    /// A server registered (or was first read).
    Added(PeerId),
    /// A member's published info (tags, status, addresses) changed.
    Updated(PeerId),
    /// A server's registration vanished (it left, or its session expired).
    Removed(PeerId),
    /// The view became live or stale.
    State(ViewState),
}

/// Why a member znode was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The child name is not a peer id.
    #[error("znode name {0:?} is not a peer id")]
    BadName(String),
    /// The data is not PeerInfo JSON.
    #[error("data is not PeerInfo JSON: {0}")]
    BadJson(String),
    /// The data names a different peer than the znode.
    #[error("data names peer {data} but the znode is {name}")]
    IdMismatch { name: PeerId, data: PeerId },
}

/// Parses a child name of `/{app_id}/servers`.
pub fn parse_member_name(name: &str) -> Result<PeerId, MemberError> {
    name.parse().map_err(|_| MemberError::BadName(name.to_string()))
}

/// Parses a member znode's data, checking it is about the znode's peer.
pub fn parse_member(id: PeerId, data: &[u8]) -> Result<PeerInfo, MemberError> {
    let info: PeerInfo = serde_json::from_slice(data).map_err(|e| MemberError::BadJson(e.to_string()))?;
    if info.id != id {
        return Err(MemberError::IdMismatch { name: id, data: info.id });
    }
    Ok(info)
}

/// The changes that turn `old` into `new`, in peer-id order (removals, additions and updates
/// interleaved by id).
pub fn diff(old: &BTreeMap<PeerId, PeerInfo>, new: &BTreeMap<PeerId, PeerInfo>) -> Vec<ViewChange> {
    let mut ids: Vec<PeerId> = old.keys().chain(new.keys()).copied().collect();
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| match (old.get(&id), new.get(&id)) {
            (Some(_), None) => Some(ViewChange::Removed(id)),
            (None, Some(_)) => Some(ViewChange::Added(id)),
            (Some(a), Some(b)) if a != b => Some(ViewChange::Updated(id)),
            _ => None,
        })
        .collect()
}

/// Sets `id` to `info` (or removes it for `None`) and says what changed.
pub fn apply(
    view: &mut BTreeMap<PeerId, PeerInfo>,
    id: PeerId,
    info: Option<PeerInfo>,
) -> Option<ViewChange> {
    match info {
        Some(info) => match view.insert(id, info.clone()) {
            None => Some(ViewChange::Added(id)),
            Some(old) if old != info => Some(ViewChange::Updated(id)),
            Some(_) => None,
        },
        None => view.remove(&id).map(|_| ViewChange::Removed(id)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeSet;

    pub(crate) fn peer(n: u8) -> PeerId {
        PeerId(uuid::Uuid::from_bytes([n; 16]))
    }

    pub(crate) fn info(n: u8, tags: &[&str], status: serde_json::Value) -> PeerInfo {
        PeerInfo {
            id: peer(n),
            name: format!("game-{n}"),
            flavor: None,
            tags: tags.iter().map(|t| t.to_string()).collect::<BTreeSet<_>>(),
            rpc_addr: format!("10.0.1.{n}:7000").parse().unwrap(),
            external_ip: format!("10.0.1.{n}").parse().unwrap(),
            external_ports: BTreeMap::from([("tcp_json".to_string(), 8012)]),
            status,
            registered_zxid: 0,
        }
    }

    fn map(infos: &[PeerInfo]) -> BTreeMap<PeerId, PeerInfo> {
        infos.iter().map(|i| (i.id, i.clone())).collect()
    }

    #[test]
    fn diff_reports_added_removed_updated_in_id_order() {
        let old = map(&[info(1, &["a"], serde_json::Value::Null), info(2, &[], serde_json::Value::Null)]);
        let new = map(&[info(2, &["b"], serde_json::Value::Null), info(3, &[], serde_json::Value::Null)]);
        assert_eq!(
            diff(&old, &new),
            vec![ViewChange::Removed(peer(1)), ViewChange::Updated(peer(2)), ViewChange::Added(peer(3))]
        );
        assert_eq!(diff(&new, &new), vec![]);
        assert_eq!(diff(&BTreeMap::new(), &BTreeMap::new()), vec![]);
    }

    #[test]
    fn apply_reports_only_real_changes() {
        let mut v = BTreeMap::new();
        let a = info(1, &["a"], serde_json::Value::Null);
        assert_eq!(apply(&mut v, peer(1), Some(a.clone())), Some(ViewChange::Added(peer(1))));
        assert_eq!(apply(&mut v, peer(1), Some(a.clone())), None);
        let mut b = a.clone();
        b.status = serde_json::json!({"room_count": 3});
        assert_eq!(apply(&mut v, peer(1), Some(b)), Some(ViewChange::Updated(peer(1))));
        assert_eq!(apply(&mut v, peer(1), None), Some(ViewChange::Removed(peer(1))));
        assert_eq!(apply(&mut v, peer(1), None), None);
        assert!(v.is_empty());
    }

    #[test]
    fn member_parsing_rejects_bad_names_json_and_mismatched_ids() {
        let a = info(1, &["lobby"], serde_json::json!({"room_count": 1}));
        let bytes = serde_json::to_vec(&a).unwrap();
        assert_eq!(parse_member_name(&peer(1).to_string()), Ok(peer(1)));
        assert!(matches!(parse_member_name("not-a-peer"), Err(MemberError::BadName(_))));
        assert_eq!(parse_member(peer(1), &bytes), Ok(a));
        assert!(matches!(parse_member(peer(1), b"{not json"), Err(MemberError::BadJson(_))));
        assert!(matches!(parse_member(peer(1), b"[]"), Err(MemberError::BadJson(_))));
        assert_eq!(
            parse_member(peer(2), &bytes),
            Err(MemberError::IdMismatch { name: peer(2), data: peer(1) })
        );
    }
}
