//! Who is logged in on which client link: the manager's table of local logins, indexed both
//! ways (account → link, link → account).
//!
//! The manager is the one owner of "which account is logged in on this connection": games
//! ask [`AccountManager::account_of`](super::AccountManager::account_of) instead of keeping
//! their own copy in the session, and a closed connection is logged out by its [`LinkId`].
//! A link carries at most one account, and an account at most one link.
//!
//! Inputs: [`LinkTable::insert`], [`LinkTable::remove`], [`LinkTable::take_all`]; queries
//! [`LinkTable::get`] and [`LinkTable::account_of`] are `O(log n)`. Pure data: no I/O, no
//! clock, no lease (the manager checks the lease before it inserts or acts).

use std::collections::BTreeMap;
use std::fmt;

use super::LinkRef;

/// Identifies one client link for its whole life: the id of the session it is (random,
/// never reused). Printed as the hyphenated UUID that the account znode records as
/// `link_id`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(uuid::Uuid);

impl LinkId {
    pub const fn from_uuid(u: uuid::Uuid) -> Self {
        LinkId(u)
    }
    /// A link id from a number (fakes and tests).
    pub const fn from_u128(n: u128) -> Self {
        LinkId(uuid::Uuid::from_u128(n))
    }
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkId({self})")
    }
}

/// One login in the table: the link and its id, read once when it was inserted (so the
/// index never depends on calling into the link again), and the account znode as this
/// server last wrote it, if known.
#[derive(Clone)]
pub(super) struct LinkEntry {
    pub(super) id: LinkId,
    pub(super) link: LinkRef,
    pub(super) written: Option<Written>,
}

/// The account znode as this server's coordination session wrote it for a login: created
/// (version 0) or rewritten (the version its `set_data` returned). Lives exactly as long as
/// the login's [`LinkEntry`]: the manager deletes the znode only after removing the entry,
/// so while the entry exists no delete of ours has happened since the write. Logout uses it
/// to delete at that version in one request (see `Shared::delete_record`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    /// The coordination session (the manager's epoch) that wrote it.
    pub(super) epoch: u64,
    pub(super) version: i32,
}

/// [`LinkTable::insert`] refused: the link is already logged in as another account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LinkInUse {
    /// The account the link carries.
    pub(super) account: String,
}

/// The accounts logged in on this server and their links.
///
/// Invariant (checked after every change in debug builds): `by_link` is exactly the inverse
/// of `by_account`: same size, and `by_link[e.id] == a` for every `by_account[a] == e`.
#[derive(Default)]
pub(super) struct LinkTable {
    by_account: BTreeMap<String, LinkEntry>,
    by_link: BTreeMap<LinkId, String>,
}

impl LinkTable {
    /// The login of `account`, if any.
    pub(super) fn get(&self, account: &str) -> Option<&LinkEntry> {
        let entry = self.by_account.get(account);
        if let Some(e) = entry {
            debug_assert_eq!(self.by_link.get(&e.id).map(String::as_str), Some(account));
        }
        entry
    }

    /// The account logged in on `link`, if any.
    pub(super) fn account_of(&self, link: LinkId) -> Option<&str> {
        let account = self.by_link.get(&link).map(String::as_str);
        if let Some(a) = account {
            debug_assert_eq!(self.by_account.get(a).map(|e| e.id), Some(link));
        }
        account
    }

    /// Logs `account` in on `link`. Replaces (and returns) the account's previous link, if
    /// any; refuses if `link` already carries another account (the table is unchanged).
    pub(super) fn insert(&mut self, account: &str, link: LinkRef) -> Result<Option<LinkEntry>, LinkInUse> {
        self.insert_written(account, link, None)
    }

    /// [`insert`](Self::insert), remembering how this server wrote the account's znode.
    pub(super) fn insert_written(
        &mut self,
        account: &str,
        link: LinkRef,
        written: Option<Written>,
    ) -> Result<Option<LinkEntry>, LinkInUse> {
        let id = link.link_id();
        if let Some(other) = self.by_link.get(&id) {
            if other != account {
                return Err(LinkInUse { account: other.clone() });
            }
        }
        let old = self.by_account.insert(account.to_string(), LinkEntry { id, link, written });
        if let Some(old) = &old {
            if old.id != id {
                let removed = self.by_link.remove(&old.id);
                debug_assert_eq!(removed.as_deref(), Some(account));
            }
        }
        self.by_link.insert(id, account.to_string());
        debug_assert_eq!(self.by_account.len(), self.by_link.len());
        debug_assert_eq!(self.account_of(id), Some(account));
        Ok(old)
    }

    /// Forgets the login of `account`; returns it.
    pub(super) fn remove(&mut self, account: &str) -> Option<LinkEntry> {
        let entry = self.by_account.remove(account)?;
        let removed = self.by_link.remove(&entry.id);
        debug_assert_eq!(removed.as_deref(), Some(account));
        debug_assert_eq!(self.by_account.len(), self.by_link.len());
        Some(entry)
    }

    /// Forgets every login; returns the links by account.
    pub(super) fn take_all(&mut self) -> BTreeMap<String, LinkRef> {
        self.by_link.clear();
        std::mem::take(&mut self.by_account).into_iter().map(|(a, e)| (a, e.link)).collect()
    }

    pub(super) fn len(&self) -> usize {
        debug_assert_eq!(self.by_account.len(), self.by_link.len());
        self.by_account.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The accounts logged in here, sorted.
    pub(super) fn accounts(&self) -> Vec<String> {
        self.by_account.keys().cloned().collect()
    }

    /// Every link, in account order.
    pub(super) fn links(&self) -> Vec<LinkRef> {
        self.by_account.values().map(|e| e.link.clone()).collect()
    }

    /// The invariant, checked in full (tests).
    #[cfg(test)]
    fn is_consistent(&self) -> bool {
        self.by_account.len() == self.by_link.len()
            && self.by_account.iter().all(|(a, e)| self.by_link.get(&e.id) == Some(a))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::account::ClientLink;

    struct Link(LinkId);

    impl ClientLink for Link {
        fn link_id(&self) -> LinkId {
            self.0
        }
        fn send_json(&self, _msg_type: &str, _body: serde_json::Value) -> bool {
            true
        }
        fn close(&self, _reason: &str) {}
        fn is_open(&self) -> bool {
            true
        }
    }

    fn link(n: u128) -> LinkRef {
        Arc::new(Link(LinkId::from_u128(n)))
    }

    #[test]
    fn a_login_is_found_from_the_account_and_from_the_link() {
        let mut t = LinkTable::default();
        assert!(t.insert("alice", link(1)).unwrap().is_none());
        assert!(t.insert("bob", link(2)).unwrap().is_none());
        assert_eq!(t.get("alice").map(|e| e.id), Some(LinkId::from_u128(1)));
        assert_eq!(t.account_of(LinkId::from_u128(2)), Some("bob"));
        assert_eq!(t.account_of(LinkId::from_u128(3)), None);
        assert_eq!(t.accounts(), ["alice", "bob"]);
        assert!(t.is_consistent());
    }

    #[test]
    fn a_new_link_for_an_account_replaces_the_old_one_in_both_indexes() {
        let mut t = LinkTable::default();
        t.insert("alice", link(1)).unwrap();
        let old = t.insert("alice", link(2)).unwrap().expect("replaced");
        assert_eq!(old.id, LinkId::from_u128(1));
        assert_eq!(t.account_of(LinkId::from_u128(1)), None, "the old link no longer logs anyone in");
        assert_eq!(t.account_of(LinkId::from_u128(2)), Some("alice"));
        assert_eq!(t.len(), 1);
        assert!(t.is_consistent());
    }

    #[test]
    fn the_same_link_again_for_the_same_account_changes_nothing() {
        let mut t = LinkTable::default();
        t.insert("alice", link(1)).unwrap();
        assert_eq!(t.insert("alice", link(1)).unwrap().map(|e| e.id), Some(LinkId::from_u128(1)));
        assert_eq!(t.len(), 1);
        assert!(t.is_consistent());
    }

    #[test]
    fn a_link_carries_at_most_one_account() {
        let mut t = LinkTable::default();
        t.insert("alice", link(1)).unwrap();
        assert_eq!(t.insert("bob", link(1)).err(), Some(LinkInUse { account: "alice".into() }));
        assert!(t.get("bob").is_none(), "a refused insert leaves the table as it was");
        assert_eq!(t.account_of(LinkId::from_u128(1)), Some("alice"));
        assert!(t.is_consistent());
    }

    #[test]
    fn removing_an_account_frees_its_link() {
        let mut t = LinkTable::default();
        t.insert("alice", link(1)).unwrap();
        assert_eq!(t.remove("alice").map(|e| e.id), Some(LinkId::from_u128(1)));
        assert!(t.remove("alice").is_none());
        assert_eq!(t.account_of(LinkId::from_u128(1)), None);
        t.insert("bob", link(1)).expect("the link is free again");
        assert!(t.is_consistent());
    }

    #[test]
    fn taking_all_logins_empties_both_indexes() {
        let mut t = LinkTable::default();
        t.insert("bob", link(2)).unwrap();
        t.insert("alice", link(1)).unwrap();
        let all = t.take_all();
        assert_eq!(all.keys().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(t.is_empty());
        assert_eq!(t.account_of(LinkId::from_u128(1)), None);
        assert!(t.is_consistent());
    }

    #[test]
    fn links_are_listed_in_account_order() {
        let mut t = LinkTable::default();
        t.insert("carol", link(1)).unwrap();
        t.insert("alice", link(3)).unwrap();
        t.insert("bob", link(2)).unwrap();
        let ids: Vec<LinkId> = t.links().iter().map(|l| l.link_id()).collect();
        assert_eq!(ids, [3, 2, 1].map(LinkId::from_u128));
    }

    #[test]
    fn a_link_id_prints_as_the_hyphenated_uuid() {
        let id = LinkId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0123-456789abcdef");
        assert_eq!(LinkId::from_uuid(id.as_uuid()), id);
    }
}
