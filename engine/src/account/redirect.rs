//! Client redirection: [`AccountManager::redirect_client`] on the old server (issue a token,
//! log out, send `_sc_redirect`, close), [`AccountManager::accept_redirect`] on the new one
//! (verify, consume the nonce, log in, run the redirection handlers), and the lazy sweep of
//! used nonces.
//!
//! A token is single use across the cluster: accepting it first creates the persistent
//! znode `/{app_id}/redirect_nonces/{exp}_{nonce}` (`NodeExists` = replay). Nonce znodes are
//! swept [`NONCE_RETENTION`] after their token expired, at most every
//! [`NONCE_SWEEP_INTERVAL`] per server and [`NONCE_SWEEP_DELETES_MAX`] at a time;
//! [`sweep_due`] and [`nonces_to_sweep`] are the pure halves of that.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use tracing::info;

use super::metrics::AccountMetrics;
use super::token::{self, TokenClaims, NONCE_BYTES};
use super::{
    validate_account, AccountError, AccountManager, LinkRef, LoginOutcome, Shared, TokenError,
    CLAIM_ATTEMPTS_MAX, LOG_TARGET,
};
use crate::cluster::PeerId;
use crate::env::{CoordError, CreateMode, MonoTime, WallTime};

/// Message type of the redirect instruction sent to the client.
pub const SC_REDIRECT: &str = "_sc_redirect";
/// The external port (by protocol name) a redirected client is sent to when the target has
/// no port of the client's own transport: the cluster's
/// [`CLIENT_PORT_FALLBACK`](crate::cluster::CLIENT_PORT_FALLBACK).
pub const REDIRECT_PORT_NAME: &str = crate::cluster::CLIENT_PORT_FALLBACK;
/// How long a used nonce's znode is kept after its token expired.
pub const NONCE_RETENTION: Duration = Duration::from_secs(600);
/// Least time between two sweeps of old nonce znodes by one server.
pub const NONCE_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most nonce znodes one sweep deletes (the rest wait for the next sweep).
pub const NONCE_SWEEP_DELETES_MAX: usize = 256;

/// A successful [`AccountManager::accept_redirect`].
#[derive(Debug, Clone, PartialEq)]
pub struct RedirectAccepted {
    pub account: String,
    /// What the old server passed to `redirect_client`.
    pub extra_data: serde_json::Value,
}

/// A handler registered with [`AccountManager::register_redirection_handler`].
pub(super) type RedirectHandler = dyn Fn(String, LinkRef, bool, serde_json::Value) + Send + Sync;

/// True if a sweep may start at `now`: none ran yet, or the last one started at least
/// [`NONCE_SWEEP_INTERVAL`] ago.
pub(super) fn sweep_due(last: Option<MonoTime>, now: MonoTime) -> bool {
    last.is_none_or(|t| now.saturating_since(t) >= NONCE_SWEEP_INTERVAL)
}

/// The nonce znodes (by name, in the order given) a sweep at wall time `now` deletes: those
/// whose token expired more than [`NONCE_RETENTION`] ago, at most
/// [`NONCE_SWEEP_DELETES_MAX`]. Names that are not nonce nodes are never chosen.
pub(super) fn nonces_to_sweep(names: &[String], now: WallTime) -> impl Iterator<Item = &str> {
    let horizon = now.as_millis() - i64::try_from(NONCE_RETENTION.as_millis()).unwrap_or(i64::MAX);
    names
        .iter()
        .map(String::as_str)
        .filter(move |n| token::nonce_node_expiry(n).is_some_and(|exp| exp < horizon))
        .take(NONCE_SWEEP_DELETES_MAX)
}

impl AccountManager {
    /// Moves `account`'s client to `target` (iFun's `RedirectClient`): logs it out here,
    /// sends `_sc_redirect {host, port, flavor, token}` on its link and closes the link.
    pub async fn redirect_client(
        &self,
        account: &str,
        target: PeerId,
        extra_data: serde_json::Value,
    ) -> Result<(), AccountError> {
        self.counted(self.redirect(account, target, extra_data), AccountMetrics::redirect_issued).await
    }

    async fn redirect(
        &self,
        account: &str,
        target: PeerId,
        extra_data: serde_json::Value,
    ) -> Result<(), AccountError> {
        validate_account(account)?;
        let s = &self.shared;
        let secret = s.secret.ok_or(AccountError::NoSecret)?;
        let Some(link) = s.local_link(account) else {
            return Err(if s.st().links.get(account).is_some() {
                AccountError::CoordinationLost
            } else {
                AccountError::NotLoggedInHere(account.to_string())
            });
        };
        let addr =
            s.cluster.peer_client_addr(target, link.port_name()).ok_or(AccountError::UnknownPeer(target))?;
        let flavor = s.cluster.peers(true).get(&target).and_then(|i| i.flavor.clone());
        let mut nonce = [0u8; NONCE_BYTES];
        s.env.rand.fill_bytes(&mut nonce);
        let expires_at: WallTime = s.env.clock.wall_now().saturating_add(s.cfg.redirect_token_ttl);
        let claims = TokenClaims { account: account.to_string(), target, expires_at, nonce, extra_data };
        let token = token::issue(&secret, &claims)?;
        if !self.set_logged_out(account).await? {
            return Err(AccountError::NotLoggedInHere(account.to_string()));
        }
        let (host, port) = (addr.ip().to_string(), addr.port());
        let body = serde_json::json!({ "host": host, "port": port, "flavor": flavor, "token": token });
        link.send_json(SC_REDIRECT, body);
        link.close("redirected");
        info!(target: LOG_TARGET, node = %s.node(), account, ?target, "client redirected");
        Ok(())
    }

    /// Handles a redirected client's `_cs_redirect {token}`: verifies the token (signature,
    /// target, expiry, single use) and logs the account in on `link`. Registered redirection
    /// handlers run with the outcome whenever the token's signature was valid (a forged
    /// token names no trustworthy account, so they do not run for it).
    pub async fn accept_redirect(
        &self,
        token: &str,
        link: LinkRef,
    ) -> Result<RedirectAccepted, AccountError> {
        let r = self.counted(self.accept(token, link), AccountMetrics::redirect_received).await;
        if let Err(e) = &r {
            probe_refusal(e);
        }
        r
    }

    async fn accept(&self, token: &str, link: LinkRef) -> Result<RedirectAccepted, AccountError> {
        let s = &self.shared;
        let secret = s.secret.ok_or(AccountError::NoSecret)?;
        let claims = token::verify(&secret, token)?;
        let r = self.accept_claims(&claims, link.clone()).await;
        s.run_handlers(&claims.account, &link, r.is_ok(), &claims.extra_data);
        match &r {
            Ok(_) => {
                info!(target: LOG_TARGET, node = %s.node(), account = %claims.account, "redirected client accepted")
            }
            Err(e) => {
                info!(target: LOG_TARGET, node = %s.node(), account = %claims.account, error = %e,
                    "redirected client refused")
            }
        }
        r
    }

    async fn accept_claims(
        &self,
        claims: &TokenClaims,
        link: LinkRef,
    ) -> Result<RedirectAccepted, AccountError> {
        let s = &self.shared;
        token::check_claims(claims, s.id, s.cfg.redirection_strict_check_server_id, s.env.clock.wall_now())?;
        validate_account(&claims.account).map_err(|_| TokenError::Malformed)?;
        if !s.cfg.bugs.no_fencing {
            // Do not burn the token on a server that could not log the client in anyway.
            s.ensure_lease().await?;
        }
        if !s.cfg.bugs.replayable_token {
            s.consume_nonce(claims).await?;
            s.maybe_sweep_nonces();
        }
        match self.check_and_set_logged_in(&claims.account, link).await? {
            LoginOutcome::LoggedIn => Ok(RedirectAccepted {
                account: claims.account.clone(),
                extra_data: claims.extra_data.clone(),
            }),
            LoginOutcome::AlreadyLoggedIn { location } => {
                Err(AccountError::AlreadyLoggedIn { account: claims.account.clone(), location })
            }
        }
    }

    /// Adds a handler run after every redirect attempt with a validly signed token (iFun's
    /// `RegisterRedirectionHandler`): `(account, link, success, extra_data)`.
    pub fn register_redirection_handler(
        &self,
        f: impl Fn(String, LinkRef, bool, serde_json::Value) + Send + Sync + 'static,
    ) {
        self.shared.st().handlers.push(Arc::new(f));
    }
}

/// Marks why a redirected client was refused (coverage probes).
fn probe_refusal(e: &AccountError) {
    match e {
        AccountError::BadToken(TokenError::Malformed) => crate::probe!("redirect: malformed token refused"),
        AccountError::BadToken(TokenError::BadSignature) => crate::probe!("redirect: forged token refused"),
        AccountError::BadToken(TokenError::WrongServer) => {
            crate::probe!("redirect: token for another server refused")
        }
        AccountError::BadToken(TokenError::Expired) => crate::probe!("redirect: expired token refused"),
        AccountError::BadToken(TokenError::Replayed) => crate::probe!("redirect: replayed token refused"),
        AccountError::AlreadyLoggedIn { .. } => {
            crate::probe!("redirect: account already logged in elsewhere")
        }
        _ => crate::probe!("redirect: refused for another reason"),
    }
}

impl Shared {
    fn run_handlers(&self, account: &str, link: &LinkRef, success: bool, extra: &serde_json::Value) {
        let handlers = self.st().handlers.clone();
        for h in handlers {
            h(account.to_string(), link.clone(), success, extra.clone());
        }
    }

    /// Marks the token's nonce used in ZooKeeper; `Replayed` if it already was.
    async fn consume_nonce(&self, claims: &TokenClaims) -> Result<(), AccountError> {
        let (coord, _epoch) = self.current()?;
        let path = format!("{}/{}", self.nonces_path, claims.nonce_node());
        let mut mine = [0u8; NONCE_BYTES];
        self.env.rand.fill_bytes(&mut mine);
        let mine = Bytes::from(token::to_hex(&mine));
        let mut read_back = false;
        for attempt in 0..CLAIM_ATTEMPTS_MAX {
            if attempt > 0 {
                self.env.clock.sleep(self.backoff(attempt)).await;
            }
            if read_back {
                match coord.get_data(&path).await {
                    Ok((data, _)) if data == mine => return Ok(()),
                    Ok(_) => return Err(TokenError::Replayed.into()),
                    Err(CoordError::NoNode) => read_back = false,
                    Err(CoordError::ConnectionLoss { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            match coord.create(&path, mine.clone(), CreateMode::Persistent).await {
                Ok(_) => return Ok(()),
                Err(CoordError::NodeExists) => return Err(TokenError::Replayed.into()),
                Err(CoordError::ConnectionLoss { maybe_applied }) => read_back = maybe_applied,
                Err(CoordError::NoNode) => self.ensure_dirs(&*coord).await?,
                Err(e) => return Err(e.into()),
            }
        }
        Err(AccountError::Coord(CoordError::ConnectionLoss { maybe_applied: read_back }))
    }

    /// Starts a sweep of old nonce znodes if none ran for [`NONCE_SWEEP_INTERVAL`].
    fn maybe_sweep_nonces(self: &Arc<Self>) {
        let now = self.now();
        {
            let mut st = self.st();
            if !sweep_due(st.last_nonce_sweep, now) {
                return;
            }
            st.last_nonce_sweep = Some(now);
        }
        let me = self.clone();
        let task = async move {
            let Ok((coord, _)) = me.current() else { return };
            let Ok(names) = coord.get_children(&me.nonces_path).await else { return };
            let mut deleted = 0usize;
            for name in nonces_to_sweep(&names, me.env.clock.wall_now()) {
                if coord.delete(&format!("{}/{name}", me.nonces_path), None).await.is_ok() {
                    deleted += 1;
                }
            }
            if deleted > 0 {
                info!(target: LOG_TARGET, node = %me.node(), deleted, "swept used redirect nonces");
            }
        };
        drop(self.env.spawn.spawn("account-nonce-sweep", task.boxed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> MonoTime {
        MonoTime::from_nanos(n * 1_000_000_000)
    }

    /// A nonce node name for a token expiring at `exp_ms`.
    fn node(exp_ms: i64, nonce: u8) -> String {
        let claims = TokenClaims {
            account: "alice".into(),
            target: PeerId(uuid::Uuid::nil()),
            expires_at: WallTime(exp_ms),
            nonce: [nonce; NONCE_BYTES],
            extra_data: serde_json::Value::Null,
        };
        claims.nonce_node()
    }

    #[test]
    fn a_nonce_node_is_named_by_expiry_then_nonce_and_its_expiry_reads_back() {
        let name = node(1_700_000_030_000, 0xab);
        assert_eq!(name, format!("1700000030000_{}", "ab".repeat(NONCE_BYTES)));
        assert_eq!(token::nonce_node_expiry(&name), Some(1_700_000_030_000));
        // Zero-padded to 13 digits, so names sort by expiry for years to come.
        assert_eq!(node(5, 0), format!("0000000000005_{}", "00".repeat(NONCE_BYTES)));
        assert!(node(999, 1) < node(1_000, 0));
    }

    #[test]
    fn the_first_sweep_is_due_and_the_next_one_an_interval_later() {
        assert!(sweep_due(None, s(0)));
        assert!(!sweep_due(Some(s(100)), s(100)));
        assert!(!sweep_due(Some(s(100)), s(100) + (NONCE_SWEEP_INTERVAL - Duration::from_nanos(1))));
        assert!(sweep_due(Some(s(100)), s(100) + NONCE_SWEEP_INTERVAL));
    }

    #[test]
    fn a_sweep_takes_only_nonces_past_their_retention() {
        let now = WallTime(10_000_000);
        let retention = i64::try_from(NONCE_RETENTION.as_millis()).unwrap();
        let names = vec![
            node(now.as_millis() - retention - 1, 1), // expired longer ago than the retention
            node(now.as_millis() - retention, 2),     // exactly at the horizon: kept
            node(now.as_millis(), 3),                 // just expired: kept
            "not-a-nonce".to_string(),
            format!("{}_short", now.as_millis() - retention - 10),
        ];
        let swept: Vec<&str> = nonces_to_sweep(&names, now).collect();
        assert_eq!(swept, [names[0].as_str()]);
    }

    #[test]
    fn a_sweep_deletes_at_most_its_maximum() {
        let names: Vec<String> = (0..NONCE_SWEEP_DELETES_MAX as i64 + 10).map(|i| node(i, 7)).collect();
        let now = WallTime(1_000_000_000);
        let swept: Vec<&str> = nonces_to_sweep(&names, now).collect();
        assert_eq!(swept.len(), NONCE_SWEEP_DELETES_MAX);
        assert_eq!(swept[0], names[0], "in the order listed");
    }
}
