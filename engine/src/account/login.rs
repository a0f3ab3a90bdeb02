//! Logging accounts in and out of this server, and asking who is logged in where.
//!
//! A login claims the account's znode ([`super::record`]) under the lease, then enters the
//! link table ([`super::links`]) in the same instant as a last lease check. A logout leaves
//! the table first and then deletes the znode (or leaves it to the cleanup of dropped
//! accounts). Both hold the account's lock for their whole length.

use tracing::{debug, info};

use super::links::{LinkId, Written};
use super::metrics::AccountMetrics;
use super::record::{located, Claim, LoginRecord};
use super::{validate_account, AccountError, AccountManager, LinkRef, LoginOutcome, LOG_TARGET};
use crate::cluster::PeerId;
use crate::env::Coord;
use std::sync::Arc;

impl AccountManager {
    /// Logs `account` in on `link`, cluster-wide (iFun's `CheckAndSetLoggedIn`).
    ///
    /// `LoggedIn` if it now is (idempotent for the same link); `AlreadyLoggedIn` if another
    /// server holds it, or this server holds it on another open link. Fails with
    /// `CoordinationLost` while the lease is not held (nothing is left logged in), and with
    /// `LinkInUse` if `link` is logged in here as another account.
    pub async fn check_and_set_logged_in(
        &self,
        account: &str,
        link: LinkRef,
    ) -> Result<LoginOutcome, AccountError> {
        self.counted(self.login(account, link), AccountMetrics::login).await
    }

    async fn login(&self, account: &str, link: LinkRef) -> Result<LoginOutcome, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        let _g = s.ops.lock(account).await;
        let link_id = link.link_id();
        {
            let st = s.st();
            if let Some(cur) = st.links.get(account) {
                if s.acting(&st.lease, s.now()) {
                    if cur.id == link_id {
                        return Ok(LoginOutcome::LoggedIn);
                    }
                    if cur.link.is_open() {
                        return Ok(LoginOutcome::AlreadyLoggedIn { location: Some(s.id) });
                    }
                }
            }
            if let Some(other) = st.links.account_of(link_id).filter(|a| *a != account) {
                return Err(AccountError::LinkInUse { account: other.to_string() });
            }
        }
        let (coord, epoch) = if s.cfg.bugs.no_fencing { s.current()? } else { s.ensure_lease().await? };
        let rec = LoginRecord::new(s.id, link_id);
        let written = match s.claim(&*coord, epoch, account, &rec).await? {
            Claim::Taken(location) => {
                debug!(target: LOG_TARGET, node = %s.node(), account, ?location, "login refused: already logged in");
                return Ok(LoginOutcome::AlreadyLoggedIn { location });
            }
            Claim::Ours { version } => version.map(|version| Written { epoch, version }),
        };
        // Accept only under the lease, checked together with the insertion.
        let refused = {
            let mut st = s.st();
            debug_assert!(epoch <= st.epoch, "a login on a session newer than the current one");
            if st.epoch == epoch && s.acting(&st.lease, s.now()) {
                debug_assert!(
                    s.cfg.bugs.no_fencing || st.watchdog.armed(),
                    "a link is added while the watchdog is idle with no wake-up pending"
                );
                st.dropped.remove(account);
                match st.links.insert_written(account, link, written) {
                    Ok(_) => None,
                    Err(in_use) => {
                        // Another login on this link won the race: this account's older
                        // (closed) entry, if any, goes with the record below.
                        st.links.remove(account);
                        Some(AccountError::LinkInUse { account: in_use.account })
                    }
                }
            } else {
                crate::probe!("account: login claimed but lease lost before accepting");
                Some(AccountError::CoordinationLost)
            }
        };
        if let Some(e) = refused {
            match s.delete_if_ours(&*coord, epoch, account).await {
                Ok(true) => {}
                _ => {
                    s.st().dropped.insert(account.to_string());
                }
            }
            return Err(e);
        }
        info!(target: LOG_TARGET, node = %s.node(), account, link = %link_id, "logged in");
        Ok(LoginOutcome::LoggedIn)
    }

    /// Logs `account` in *on this server only*, on a gated `link`: a player whose gate holds
    /// the account's cluster-wide login (its znode) and whose frames this server handles. The
    /// link table gets it, so [`account_of`](Self::account_of), `local_accounts`, local
    /// deliveries and broadcasts see it, and a lapsed lease drops it like any link; no znode
    /// is written (the gate's stays the one that says where the account is, so sends from
    /// other servers reach the client through its gate). An older link of the account here
    /// is replaced (closing it is the caller's business). Fails with `CoordinationLost` while
    /// the lease is not held, `LinkInUse` if `link` carries another account.
    pub async fn adopt_gated(&self, account: &str, link: LinkRef) -> Result<(), AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        let _g = s.ops.lock(account).await;
        let epoch = if s.cfg.bugs.no_fencing { s.current()?.1 } else { s.ensure_lease().await?.1 };
        let mut st = s.st();
        if st.epoch != epoch || !(s.cfg.bugs.no_fencing || s.acting(&st.lease, s.now())) {
            return Err(AccountError::CoordinationLost);
        }
        if let Some(other) = st.links.account_of(link.link_id()).filter(|a| *a != account) {
            return Err(AccountError::LinkInUse { account: other.to_string() });
        }
        st.links.remove(account);
        if let Err(in_use) = st.links.insert(account, link) {
            return Err(AccountError::LinkInUse { account: in_use.account });
        }
        debug!(target: LOG_TARGET, node = %s.node(), account, "gated player adopted");
        Ok(())
    }

    /// Logs `account` out of this server (iFun's `SetLoggedOut`): forgets its link (without
    /// closing it) and deletes its znode. False if it was not logged in here. If the delete
    /// cannot be confirmed now, it is retried once the session answers again.
    pub async fn set_logged_out(&self, account: &str) -> Result<bool, AccountError> {
        self.counted(self.logout(account, None), AccountMetrics::logout).await
    }

    /// Logs out whatever account is logged in here on `link` (e.g. a closed connection);
    /// returns it, `None` if there was none. A late logout for a closed connection never
    /// logs out the same account's newer login on another link.
    pub async fn set_logged_out_link(&self, link: impl Into<LinkId>) -> Result<Option<String>, AccountError> {
        let link = link.into();
        let Some(account) = self.account_of(link) else { return Ok(None) };
        let out = self.counted(self.logout(&account, Some(link)), AccountMetrics::logout).await?;
        Ok(out.then_some(account))
    }

    /// Logs `account` out if it is logged in here (on `only_on`, if given).
    async fn logout(&self, account: &str, only_on: Option<LinkId>) -> Result<bool, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        let _g = s.ops.lock(account).await;
        let (coord, epoch) = s.current()?;
        let written = {
            let mut st = s.st();
            match st.links.get(account) {
                Some(cur) if only_on.is_none_or(|id| cur.id == id) => {
                    st.links.remove(account).and_then(|e| e.written)
                }
                _ => return Ok(false),
            }
        };
        match s.delete_record(&*coord, epoch, account, written).await {
            Ok(true) => {}
            Ok(false) | Err(_) => {
                debug!(target: LOG_TARGET, node = %s.node(), account, "logout: record deletion deferred");
                s.st().dropped.insert(account.to_string());
            }
        }
        info!(target: LOG_TARGET, node = %s.node(), account, "logged out");
        Ok(true)
    }

    /// The account logged in here on `link` (a session id converts), whether or not the
    /// lease is held right now: the game's answer to "who is this client?". `O(log n)`.
    pub fn account_of(&self, link: impl Into<LinkId>) -> Option<String> {
        self.shared.st().links.account_of(link.into()).map(str::to_string)
    }

    /// True if `account` is logged in here and this server may act for it now.
    pub fn is_logged_in_here(&self, account: &str) -> bool {
        self.shared.local_link(account).is_some()
    }

    /// Accounts logged in here (sorted).
    pub fn local_accounts(&self) -> Vec<String> {
        self.shared.st().links.accounts()
    }

    /// True while this server holds its coordination lease (may act for accounts).
    pub fn holds_lease(&self) -> bool {
        self.shared.st().lease.is_valid(self.shared.now())
    }

    /// The coordination session this server acts on and its epoch (which grows each time the
    /// session is replaced after an expiry), once the lease is held — renewed on demand with
    /// one read. Components whose right to act must end with this server's (the object
    /// store's owner records) create their ephemerals on this session and check
    /// [`acting_on`](Self::acting_on) before each act: the lease argument of the module docs
    /// then covers them too.
    pub async fn coordination(&self) -> Result<(Arc<dyn Coord>, u64), AccountError> {
        self.shared.ensure_lease().await
    }

    /// True while session `epoch` is still the current one and its lease is held. Planted
    /// bugs of the account manager do not change this answer.
    pub fn acting_on(&self, epoch: u64) -> bool {
        let st = self.shared.st();
        st.epoch == epoch && st.lease.is_valid(self.shared.now())
    }

    /// Which server `account` is logged in on (iFun's `Locate`), read from ZooKeeper.
    /// `None` if nowhere (or only in a record this server dropped and is about to delete).
    pub async fn locate(&self, account: &str) -> Result<Option<PeerId>, AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        if s.local_link(account).is_some() {
            return Ok(Some(s.id));
        }
        let (coord, epoch) = s.current()?;
        let read = s.read_record(&*coord, epoch, &s.account_path(account)).await?;
        Ok(located(read.as_ref(), s.id))
    }
}
