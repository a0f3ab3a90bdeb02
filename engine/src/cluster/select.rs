//! Choosing a peer by its shared status (iFun's "least rooms" example).

use super::peer::{PeerId, PeerInfo};

/// Why a peer's status was not usable for a selection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusProblem {
    /// No status published yet (`null`): normal for a server that just started.
    Unset,
    /// The status is not a JSON object.
    NotAnObject,
    /// The object has no such field.
    MissingField,
    /// The field is not an integer (e.g. a string, a float, a number beyond `i64`/`u64`).
    NotAnInteger,
}

/// The integer `status[field]`, or why there is none.
pub fn status_integer(status: &serde_json::Value, field: &str) -> Result<i128, StatusProblem> {
    let obj = match status {
        serde_json::Value::Null => return Err(StatusProblem::Unset),
        serde_json::Value::Object(o) => o,
        _ => return Err(StatusProblem::NotAnObject),
    };
    let v = obj.get(field).ok_or(StatusProblem::MissingField)?;
    if let Some(i) = v.as_i64() {
        Ok(i128::from(i))
    } else if let Some(u) = v.as_u64() {
        Ok(i128::from(u))
    } else {
        Err(StatusProblem::NotAnInteger)
    }
}

/// The peer with the smallest integer `status[field]` among `peers`.
///
/// Peers without a usable value are skipped: an unset status quietly (`debug!`), a malformed
/// one loudly (`warn!`, as iFun's example logs "wrong server status"). Ties go to the
/// smallest `PeerId`, so every server choosing from the same view picks the same peer.
pub fn least_loaded<'a>(
    peers: impl IntoIterator<Item = (&'a PeerId, &'a PeerInfo)>,
    field: &str,
) -> Option<PeerId> {
    let mut best: Option<(i128, PeerId)> = None;
    for (id, info) in peers {
        match status_integer(&info.status, field) {
            Ok(v) => {
                if best.is_none_or(|b| (v, *id) < b) {
                    best = Some((v, *id));
                }
            }
            Err(StatusProblem::Unset) => {
                tracing::debug!(peer = ?id, field, "least_loaded: peer has no status yet; skipped");
            }
            Err(problem) => {
                tracing::warn!(peer = ?id, field, ?problem, status = %info.status, "least_loaded: wrong server status; skipped");
            }
        }
    }
    best.map(|(_, id)| id)
}

/// Every peer of `peers`, ordered least loaded first by the integer `status[field]`. Peers
/// without a usable value (no status yet, malformed) come after all others; ties, and the
/// peers without a value, go in `PeerId` order, so every server ordering the same view gets
/// the same list. Unusable statuses are logged at DEBUG only: unlike [`least_loaded`], this
/// is meant for per-request answers (a login server's gate list), which must not flood the
/// log with one line per request.
pub fn by_load<'a>(peers: impl IntoIterator<Item = (&'a PeerId, &'a PeerInfo)>, field: &str) -> Vec<PeerId> {
    let mut keyed: Vec<(Option<i128>, PeerId)> = peers
        .into_iter()
        .map(|(id, info)| {
            let load = status_integer(&info.status, field)
                .map_err(|problem| {
                    tracing::debug!(peer = ?id, field, ?problem, "by_load: no usable status; ordered last");
                })
                .ok();
            (load, *id)
        })
        .collect();
    // `None` sorts before `Some`: put the unusable ones last by sorting on (is_none, load, id).
    keyed.sort_by_key(|&(load, id)| (load.is_none(), load, id));
    keyed.into_iter().map(|(_, id)| id).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::view::tests::{info, peer};
    use serde_json::json;
    use std::collections::BTreeMap;

    fn view(entries: Vec<(u8, serde_json::Value)>) -> BTreeMap<PeerId, PeerInfo> {
        entries.into_iter().map(|(n, s)| (peer(n), info(n, &["pvp"], s))).collect()
    }

    #[test]
    fn picks_the_minimum() {
        let v = view(vec![
            (1, json!({"room_count": 7})),
            (2, json!({"room_count": 3})),
            (3, json!({"room_count": 5})),
        ]);
        assert_eq!(least_loaded(&v, "room_count"), Some(peer(2)));
    }

    #[test]
    fn skips_missing_and_malformed_status() {
        let v = view(vec![
            (1, json!(null)),
            (2, json!([1, 2])),
            (3, json!({"rooms": 0})),
            (4, json!({"room_count": "0"})),
            (5, json!({"room_count": 0.5})),
            (6, json!({"room_count": 9})),
            (7, json!("room_count")),
        ]);
        assert_eq!(least_loaded(&v, "room_count"), Some(peer(6)));
        let none = view(vec![(1, json!(null)), (2, json!({"room_count": true}))]);
        assert_eq!(least_loaded(&none, "room_count"), None);
        assert_eq!(least_loaded(&BTreeMap::new(), "room_count"), None);
    }

    #[test]
    fn ties_go_to_the_smallest_peer_id() {
        let v = view(vec![
            (9, json!({"room_count": 2})),
            (4, json!({"room_count": 2})),
            (6, json!({"room_count": 2})),
        ]);
        assert_eq!(least_loaded(&v, "room_count"), Some(peer(4)));
    }

    #[test]
    fn by_load_orders_least_loaded_first_then_peers_without_status_by_id() {
        let v = view(vec![
            (5, json!(null)),
            (1, json!({"room_count": 7})),
            (9, json!({"room_count": 2})),
            (4, json!({"room_count": 2})),
            (3, json!({"room_count": "x"})),
            (2, json!({"room_count": -1})),
        ]);
        assert_eq!(by_load(&v, "room_count"), [peer(2), peer(4), peer(9), peer(1), peer(3), peer(5)]);
        assert_eq!(by_load(&v, "room_count").first().copied(), least_loaded(&v, "room_count"));
        assert!(by_load(&BTreeMap::new(), "room_count").is_empty());
    }

    #[test]
    fn handles_the_whole_integer_range() {
        let v = view(vec![(1, json!({"room_count": u64::MAX})), (2, json!({"room_count": i64::MIN}))]);
        assert_eq!(least_loaded(&v, "room_count"), Some(peer(2)));
        assert_eq!(status_integer(&json!({"n": u64::MAX}), "n"), Ok(i128::from(u64::MAX)));
        assert_eq!(status_integer(&json!({"n": -1}), "n"), Ok(-1));
        assert_eq!(status_integer(&json!({}), "n"), Err(StatusProblem::MissingField));
    }
}
