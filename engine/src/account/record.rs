//! The login record: the ephemeral znode `/{app_id}/active_accounts/{name}` that makes a
//! login cluster-unique (`name` = [`keyname::encode`] of the account id: the id itself for
//! plain ids; see the module doc of [`super`]).
//!
//! - [`LoginRecord`]: its data, `{"peer_id": "<uuid>", "link_id": "<uuid>"}` (the bytes are
//!   what other servers and earlier versions read: keep them).
//! - Claim: `create`; on `NodeExists` (or a create whose answer was lost) the node is read
//!   and [`existing_node`] decides: owned by this manager's session → ours (pointed at the
//!   new link if needed), else taken by the peer its record names.
//! - Logout: a delete at the version this session wrote ([`Written`], one request), falling
//!   back to delete-if-ours (read, then delete at the version read).
//! - Read, delete-if-ours, and the cleanup of dropped accounts (records this server may
//!   still hold for accounts it no longer serves), run by the renewer once the session
//!   answers again.
//!
//! Every answered request renews the lease from its send time (see [`super::lease`]).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::links::{LinkId, Written};
use super::{AccountError, Shared, CLAIM_ATTEMPTS_MAX, LOG_TARGET};
use crate::cluster::PeerId;
use crate::env::{ensure_paths, Coord, CoordError, CreateMode};
use crate::keyname;

/// Data of an account znode. The link is kept as the text it was written as, so a record
/// with any `link_id` string still names its owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LoginRecord {
    pub(super) peer_id: PeerId,
    pub(super) link_id: String,
}

impl LoginRecord {
    pub(super) fn new(peer_id: PeerId, link: LinkId) -> Self {
        LoginRecord { peer_id, link_id: link.to_string() }
    }

    /// The znode data: compact JSON.
    pub(super) fn encode(&self) -> Result<Bytes, AccountError> {
        serde_json::to_vec(self).map(Bytes::from).map_err(|e| AccountError::Payload(e.to_string()))
    }

    /// `None` if `data` is not a record.
    pub(super) fn decode(data: &[u8]) -> Option<Self> {
        serde_json::from_slice(data).ok()
    }
}

/// An account znode as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RecordRead {
    /// `None`: the data is not a record.
    pub(super) record: Option<LoginRecord>,
    /// Its ephemeral owner is this manager's current session.
    pub(super) ours: bool,
    pub(super) version: i32,
}

/// The version of a znode just created.
const CREATED_VERSION: i32 = 0;

/// How a claim of the account znode ended.
pub(super) enum Claim {
    /// The znode is ours (created now, or found owned by our session). `version`: the
    /// version it has as we created, found or rewrote it; `None` if a rewrite's answer was
    /// lost or refused.
    Ours { version: Option<i32> },
    /// Logged in elsewhere: the owner's peer (`None` if its record is unreadable).
    Taken(Option<PeerId>),
}

/// What to make of an account znode that already exists when claiming it for `mine`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Existing {
    /// Owned by our session (a create whose answer was lost, or an account this server
    /// dropped and has not deleted yet): the login proceeds here. `rewrite`: the record
    /// names another link (or is unreadable) and is pointed at the new one.
    Ours { rewrite: bool },
    /// Someone else's session owns it.
    Taken(Option<PeerId>),
}

/// The claim decision for an existing znode: ours by session, never by what the data says
/// (a record of this peer on an old session is about to vanish with that session).
pub(super) fn existing_node(read: &RecordRead, mine: &LoginRecord) -> Existing {
    if read.ours {
        Existing::Ours { rewrite: read.record.as_ref() != Some(mine) }
    } else {
        Existing::Taken(read.record.as_ref().map(|r| r.peer_id))
    }
}

/// Where the record says the account is, as `locate` answers after finding no local link:
/// a record of this server (`me`) names an account it dropped and is about to delete, so
/// it counts as nowhere.
pub(super) fn located(read: Option<&RecordRead>, me: PeerId) -> Option<PeerId> {
    read.and_then(|r| r.record.as_ref()).map(|r| r.peer_id).filter(|p| *p != me)
}

impl Shared {
    /// The account's znode: its id encoded into a node name (any id has a legal one).
    pub(super) fn account_path(&self, account: &str) -> String {
        format!("{}/{}", self.accounts_path, keyname::encode(account))
    }

    /// Creates `/{app_id}`, the accounts and the nonces directories if missing.
    pub(super) async fn ensure_dirs(&self, coord: &dyn Coord) -> Result<(), CoordError> {
        ensure_paths(coord, &[&self.accounts_path, &self.nonces_path]).await
    }

    /// Reads an account znode; `None` if absent.
    pub(super) async fn read_record(
        &self,
        coord: &dyn Coord,
        epoch: u64,
        path: &str,
    ) -> Result<Option<RecordRead>, CoordError> {
        let sent = self.now();
        match coord.get_data(path).await {
            Ok((data, stat)) => {
                self.renewed(epoch, sent);
                let record = LoginRecord::decode(&data);
                if record.is_none() {
                    warn!(target: LOG_TARGET, node = %self.node(), path, "unreadable account record");
                }
                let ours = stat.ephemeral_owner == coord.session_id();
                Ok(Some(RecordRead { record, ours, version: stat.version }))
            }
            Err(CoordError::NoNode) => {
                self.renewed(epoch, sent);
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates the account znode, resolving `NodeExists` and lost answers by reading it.
    pub(super) async fn claim(
        &self,
        coord: &dyn Coord,
        epoch: u64,
        account: &str,
        rec: &LoginRecord,
    ) -> Result<Claim, AccountError> {
        let path = self.account_path(account);
        let data = rec.encode()?;
        let mut read_first = false;
        let mut maybe_ours = false;
        for attempt in 0..CLAIM_ATTEMPTS_MAX {
            if attempt > 0 {
                self.env.clock.sleep(self.backoff(attempt)).await;
            }
            if !read_first {
                let sent = self.now();
                match coord.create(&path, data.clone(), CreateMode::Ephemeral).await {
                    Ok(_) => {
                        self.renewed(epoch, sent);
                        return Ok(Claim::Ours { version: Some(CREATED_VERSION) });
                    }
                    Err(CoordError::NodeExists) => self.renewed(epoch, sent),
                    Err(CoordError::NoNode) => {
                        warn!(target: LOG_TARGET, node = %self.node(), "accounts directory missing; re-creating");
                        self.ensure_dirs(coord).await.map_err(AccountError::Coord)?;
                        continue;
                    }
                    Err(CoordError::ConnectionLoss { maybe_applied }) => {
                        crate::probe!(maybe_applied, "account: login claim maybe applied, read back");
                        maybe_ours |= maybe_applied;
                        read_first = maybe_applied;
                        continue;
                    }
                    Err(CoordError::SessionExpired | CoordError::Closed) => {
                        return Err(AccountError::CoordinationLost)
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match self.read_record(coord, epoch, &path).await {
                Ok(Some(read)) => match existing_node(&read, rec) {
                    Existing::Ours { rewrite } => {
                        if !rewrite {
                            return Ok(Claim::Ours { version: Some(read.version) });
                        }
                        // Ours, from an earlier login here: point it at the new link.
                        let version = coord.set_data(&path, data.clone(), Some(read.version)).await;
                        return Ok(Claim::Ours { version: version.ok().map(|stat| stat.version) });
                    }
                    Existing::Taken(location) => {
                        crate::probe!("account: login refused, logged in elsewhere");
                        return Ok(Claim::Taken(location));
                    }
                },
                Ok(None) => read_first = false,
                Err(CoordError::ConnectionLoss { .. }) => read_first = true,
                Err(CoordError::SessionExpired | CoordError::Closed) => {
                    return Err(AccountError::CoordinationLost)
                }
                Err(e) => return Err(e.into()),
            }
        }
        if maybe_ours {
            // A create may have landed: let the cleanup delete it once the session answers.
            self.st().dropped.insert(account.to_string());
        }
        Err(AccountError::Coord(CoordError::ConnectionLoss { maybe_applied: maybe_ours }))
    }

    /// Deletes the account znode of a login being logged out; true if it is gone.
    ///
    /// With `written` (how this session wrote the znode for that login, see [`Written`]) it
    /// first deletes at that version: one request where [`delete_if_ours`](Self::delete_if_ours)
    /// takes two. That cannot delete another server's znode: our session wrote the node and
    /// has not deleted it since (the entry carrying `written` was removed just now), and
    /// only its owner's session or its expiry removes an ephemeral node (no server deletes
    /// another's record); so while our session lives the node at `path` is ours, and once
    /// it has expired the service refuses the request. A version that no longer matches
    /// (a rewrite whose answer was lost) falls back to reading the node.
    pub(super) async fn delete_record(
        &self,
        coord: &dyn Coord,
        epoch: u64,
        account: &str,
        written: Option<Written>,
    ) -> Result<bool, CoordError> {
        if let Some(w) = written.filter(|w| w.epoch == epoch) {
            let sent = self.now();
            match coord.delete(&self.account_path(account), Some(w.version)).await {
                Ok(()) | Err(CoordError::NoNode) => {
                    self.renewed(epoch, sent);
                    return Ok(true);
                }
                Err(CoordError::BadVersion) => {
                    self.renewed(epoch, sent);
                    crate::probe!("account: logout's known version outdated, read back");
                }
                Err(e) => return Err(e),
            }
        }
        self.delete_if_ours(coord, epoch, account).await
    }

    /// Deletes the account znode if it belongs to our session. True if it is gone.
    pub(super) async fn delete_if_ours(
        &self,
        coord: &dyn Coord,
        epoch: u64,
        account: &str,
    ) -> Result<bool, CoordError> {
        let path = self.account_path(account);
        match self.read_record(coord, epoch, &path).await? {
            Some(RecordRead { ours: true, version, .. }) => match coord.delete(&path, Some(version)).await {
                Ok(()) | Err(CoordError::NoNode) => Ok(true),
                Err(CoordError::BadVersion) => Ok(false),
                Err(e) => Err(e),
            },
            // Absent, or someone else's: nothing of ours to delete.
            Some(RecordRead { ours: false, .. }) | None => Ok(true),
        }
    }

    /// Deletes the znodes of dropped accounts (after the session answered again).
    pub(super) async fn cleanup_dropped(&self) {
        let todo: Vec<String> = self.st().dropped.iter().cloned().collect();
        for account in todo {
            let _g = self.ops.lock(&account).await;
            let Ok((coord, epoch)) = self.current() else { return };
            if !self.st().dropped.contains(&account) {
                continue; // a login or logout of it got there first
            }
            if self.st().links.get(&account).is_some() {
                self.st().dropped.remove(&account);
                continue;
            }
            match self.delete_if_ours(&*coord, epoch, &account).await {
                Ok(true) => {
                    info!(target: LOG_TARGET, node = %self.node(), account, "deleted the record of a dropped account");
                    self.st().dropped.remove(&account);
                }
                Ok(false) => {}
                Err(e) => {
                    debug!(target: LOG_TARGET, node = %self.node(), error = %e,
                        "cleanup of dropped accounts interrupted");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8) -> PeerId {
        PeerId(uuid::Uuid::from_bytes([n; 16]))
    }

    fn rec(peer_n: u8, link: u128) -> LoginRecord {
        LoginRecord::new(peer(peer_n), LinkId::from_u128(link))
    }

    fn read(record: Option<LoginRecord>, ours: bool) -> RecordRead {
        RecordRead { record, ours, version: 3 }
    }

    #[test]
    fn the_record_bytes_name_the_peer_and_the_session_uuid() {
        let r = rec(1, 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let bytes = r.encode().unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"peer_id":"01010101-0101-0101-0101-010101010101","link_id":"01234567-89ab-cdef-0123-456789abcdef"}"#
        );
        assert_eq!(LoginRecord::decode(&bytes), Some(r));
    }

    #[test]
    fn a_record_with_any_link_text_still_names_its_owner() {
        let data = br#"{"peer_id": "02020202-0202-0202-0202-020202020202", "link_id": "link-7"}"#;
        let r = LoginRecord::decode(data).expect("decodes");
        assert_eq!((r.peer_id, r.link_id.as_str()), (peer(2), "link-7"));
    }

    #[test]
    fn data_that_is_not_a_record_decodes_to_nothing() {
        for bad in [&b""[..], b"null", b"{}", br#"{"peer_id": "x", "link_id": "y"}"#, b"\xff"] {
            assert_eq!(LoginRecord::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn an_existing_node_of_our_session_is_ours_and_rewritten_only_if_it_names_another_link() {
        let mine = rec(1, 10);
        assert_eq!(existing_node(&read(Some(mine.clone()), true), &mine), Existing::Ours { rewrite: false });
        assert_eq!(existing_node(&read(Some(rec(1, 9)), true), &mine), Existing::Ours { rewrite: true });
        assert_eq!(existing_node(&read(None, true), &mine), Existing::Ours { rewrite: true }, "unreadable");
    }

    #[test]
    fn an_existing_node_of_another_session_is_taken_by_the_peer_it_names() {
        let mine = rec(1, 10);
        assert_eq!(existing_node(&read(Some(rec(2, 20)), false), &mine), Existing::Taken(Some(peer(2))));
        assert_eq!(existing_node(&read(None, false), &mine), Existing::Taken(None), "unreadable");
        // Our own peer id on another session (an expired one of ours): still not ours.
        assert_eq!(existing_node(&read(Some(mine.clone()), false), &mine), Existing::Taken(Some(peer(1))));
    }

    #[test]
    fn locate_reports_other_peers_and_counts_our_own_records_as_nowhere() {
        let me = peer(1);
        assert_eq!(located(None, me), None);
        assert_eq!(located(Some(&read(Some(rec(2, 20)), false)), me), Some(peer(2)));
        assert_eq!(located(Some(&read(Some(rec(1, 10)), true)), me), None);
        assert_eq!(located(Some(&read(None, false)), me), None);
    }
}
