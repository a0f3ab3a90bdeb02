//! The `redirect` workload: one client incarnation's flows — log in, ask for a redirect,
//! present the token at the target (now and then adversarially first), hold the login, leave
//! and maybe replay the token.

use std::net::SocketAddr;
use std::time::Duration;

use engine::account::SC_REDIRECT;
use engine::env::{Rand, RandExt};
use serde_json::{json, Value};

use super::history::{reject_reason, RedirectOp, RedirectRes, TokenKind};
use super::{
    name_of, server_name, Run, EXPIRED_WAIT, LATE_WAIT, PROBE_PROBABILITY, REPLAY_PROBABILITY, SERVERS,
};
use crate::game_client::{is_error, GameClient, Redirect, ReqError};
use crate::scenario::ClientCtx;

/// How a presentation ended, as far as the client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presented {
    Accepted,
    Rejected,
    Unknown,
}

/// `token` with one hex digit changed.
fn tamper(token: &str, rand: &dyn Rand) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    if chars.is_empty() {
        return "0".into();
    }
    let i = rand.gen_range(0..chars.len() as u64) as usize;
    let d = chars[i].to_digit(16).unwrap_or(0);
    let nd = (d + 1 + rand.gen_range(0..15) as u32) % 16;
    chars[i] = std::char::from_digit(nd, 16).unwrap_or('0');
    chars.into_iter().collect()
}

/// Random lowercase hex of `len` characters.
fn forge(len: usize, rand: &dyn Rand) -> String {
    (0..len).map(|_| std::char::from_digit(rand.gen_range(0..16) as u32, 16).unwrap_or('0')).collect()
}

fn message_of(v: &Value) -> String {
    v.get("error_message").or_else(|| v.get("message")).and_then(Value::as_str).unwrap_or("?").to_string()
}

impl Run {
    async fn connect(&self, ctx: &ClientCtx, addr: SocketAddr) -> Option<GameClient> {
        GameClient::connect(&ctx.env, ctx.phases.now.clone(), addr).await
    }

    /// Logs `account` in on `c` (at server `si`); true if it worked.
    async fn login(
        &self,
        ctx: &ClientCtx,
        c: &mut GameClient,
        si: usize,
        account: &str,
        probe: bool,
    ) -> bool {
        let op = RedirectOp::Login { server: server_name(si), account: account.into(), probe };
        let h = self.rec.invoke(ctx.process, op);
        match c.request("cs_game_server_login", json!({ "user_name": account }), "sc_game_server_login").await
        {
            Ok(v) if !is_error(&v) => {
                self.rec.ok(h, RedirectRes::LoggedIn);
                true
            }
            Ok(v) => {
                self.rec.ok(h, RedirectRes::Refused(message_of(&v)));
                false
            }
            Err(_) => {
                self.rec.info(h);
                false
            }
        }
    }

    /// Asks the server `si` to redirect the account to `ti`; the `_sc_redirect` if it came.
    async fn redirect(
        &self,
        ctx: &ClientCtx,
        c: &mut GameClient,
        si: usize,
        ti: usize,
        account: &str,
        extra: Value,
    ) -> Option<Redirect> {
        let target = server_name(ti);
        let op = RedirectOp::Redirect {
            server: server_name(si),
            target: target.clone(),
            account: account.into(),
            extra_data: extra.clone(),
        };
        let h = self.rec.invoke(ctx.process, op);
        let body = json!({ "server_name": target, "extra_data": extra });
        match c.request_any("cs_redirect", body, &[SC_REDIRECT, "sc_redirect"]).await {
            Ok((t, v)) if t == SC_REDIRECT => match Redirect::from_body(&v) {
                Some(r) => {
                    let to = name_of(&ctx.servers, r.addr);
                    self.rec.ok(h, RedirectRes::Issued { token: r.token.clone(), to });
                    Some(r)
                }
                None => {
                    // An unreadable instruction: the token may exist, the client cannot tell.
                    self.rec.info(h);
                    None
                }
            },
            Ok((_, v)) => {
                self.rec.ok(h, RedirectRes::Refused(message_of(&v)));
                None
            }
            Err(ReqError::Closed) => match c.take_redirect() {
                Some(r) => {
                    let to = name_of(&ctx.servers, r.addr);
                    self.rec.ok(h, RedirectRes::Issued { token: r.token.clone(), to });
                    Some(r)
                }
                None => {
                    self.rec.info(h);
                    None
                }
            },
            Err(ReqError::Lost | ReqError::Error(_)) => {
                // An `_error` cannot be tied to this request for sure: indeterminate.
                self.rec.info(h);
                None
            }
        }
    }

    /// Presents `token` on `c` (connected to `server`).
    async fn present(
        &self,
        ctx: &ClientCtx,
        c: &mut GameClient,
        server: &str,
        token: &str,
        kind: TokenKind,
        account: &str,
    ) -> Presented {
        let op =
            RedirectOp::Accept { kind, server: server.into(), token: token.into(), account: account.into() };
        let h = self.rec.invoke(ctx.process, op);
        match c.request_any("_cs_redirect", json!({ "token": token }), &["sc_redirected", "_error"]).await {
            Ok((t, v)) if t == "sc_redirected" && !is_error(&v) => {
                let account = v.get("user_name").and_then(Value::as_str).unwrap_or("").to_string();
                let extra_data = v.get("extra_data").cloned().unwrap_or(Value::Null);
                self.rec.ok(h, RedirectRes::Accepted { account, extra_data });
                Presented::Accepted
            }
            Ok((t, v))
                if t == "_error" && v.get("code").and_then(Value::as_str) == Some("redirect_rejected") =>
            {
                let reason = reject_reason(&message_of(&v)).to_string();
                self.rec.ok(h, RedirectRes::Rejected { reason });
                Presented::Rejected
            }
            Ok(_) | Err(_) => {
                self.rec.info(h);
                Presented::Unknown
            }
        }
    }

    /// Connects to `addr` and presents `token` there; the connection if it was accepted.
    async fn connect_and_present(
        &self,
        ctx: &ClientCtx,
        addr: SocketAddr,
        token: &str,
        kind: TokenKind,
        account: &str,
    ) -> Option<GameClient> {
        let mut c = self.connect(ctx, addr).await?;
        match self.present(ctx, &mut c, &name_of(&ctx.servers, addr), token, kind, account).await {
            Presented::Accepted => Some(c),
            _ => None,
        }
    }

    /// One flow: login, redirect, present (with the odd adversarial presentation).
    pub(super) async fn flow(&self, ctx: &ClientCtx, account: &str) {
        let env = &ctx.env;
        let si = env.rand.gen_range(0..SERVERS as u64) as usize;
        let Some(mut c) = self.connect(ctx, ctx.servers.addr(si)).await else { return };
        if !self.login(ctx, &mut c, si, account, false).await {
            // Refused (e.g. the last flow's login not yet cleaned up): back off a little.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(200..1_000))).await;
            return;
        }
        if !c.pump(Duration::from_millis(env.rand.gen_range(0..600))).await {
            return;
        }
        drop(c.take_inbox());
        let ti = (si + 1 + env.rand.gen_range(0..SERVERS as u64 - 1) as usize) % SERVERS;
        let extra = json!({ "n": env.rand.next_u64(), "from": server_name(si), "to": server_name(ti) });
        let Some(r) = self.redirect(ctx, &mut c, si, ti, account, extra).await else { return };
        drop(c);
        let token = r.token.clone();
        let target = name_of(&ctx.servers, r.addr);
        let held = match env.rand.gen_range(0..10) {
            0 => {
                self.with_bad_first(ctx, &r, forge(token.len(), &*env.rand), TokenKind::Forged, account).await
            }
            1 => self.with_bad_first(ctx, &r, tamper(&token, &*env.rand), TokenKind::Tampered, account).await,
            2 => {
                // The genuine token, first at a server it is not for.
                let others: Vec<usize> =
                    (0..SERVERS).filter(|&k| Some(k) != ctx.servers.index_of(r.addr)).collect();
                let k = *env.rand.choose(&others).expect("other servers");
                if let Some(c) = self
                    .connect_and_present(ctx, ctx.servers.addr(k), &token, TokenKind::WrongServer, account)
                    .await
                {
                    drop(c); // accepted: a violation the checker reports; leave.
                    return;
                }
                self.connect_and_present(ctx, r.addr, &token, TokenKind::Genuine, account).await
            }
            3 if !ctx.phases.healed() => {
                let wait = EXPIRED_WAIT + Duration::from_millis(env.rand.gen_range(0..1_000));
                env.clock.sleep(wait).await;
                self.connect_and_present(ctx, r.addr, &token, TokenKind::Expired, account).await
            }
            4 => self.concurrent(ctx, &r, account).await,
            5 if !ctx.phases.healed() => {
                let ms =
                    env.rand.gen_range(LATE_WAIT.start.as_millis() as u64..LATE_WAIT.end.as_millis() as u64);
                env.clock.sleep(Duration::from_millis(ms)).await;
                self.connect_and_present(ctx, r.addr, &token, TokenKind::Late, account).await
            }
            _ => self.connect_and_present(ctx, r.addr, &token, TokenKind::Genuine, account).await,
        };
        let Some(c) = held else { return };
        self.after_accept(ctx, c, &r, &target, account).await;
    }

    /// Presents `bad` at the target, then the genuine token (on the same connection if `bad`
    /// got its answer and the connection stayed open).
    async fn with_bad_first(
        &self,
        ctx: &ClientCtx,
        r: &Redirect,
        bad: String,
        kind: TokenKind,
        account: &str,
    ) -> Option<GameClient> {
        let mut c = self.connect(ctx, r.addr).await?;
        let server = name_of(&ctx.servers, r.addr);
        match self.present(ctx, &mut c, &server, &bad, kind, account).await {
            Presented::Accepted => return None, // a violation the checker reports; leave.
            Presented::Rejected if c.is_open() => {}
            // No answer: a late one could pass for the answer to the genuine token.
            Presented::Rejected | Presented::Unknown => c = self.connect(ctx, r.addr).await?,
        }
        match self.present(ctx, &mut c, &server, &r.token, TokenKind::Genuine, account).await {
            Presented::Accepted => Some(c),
            _ => None,
        }
    }

    /// The genuine token on two connections at once; the connection that won, if one did.
    async fn concurrent(&self, ctx: &ClientCtx, r: &Redirect, account: &str) -> Option<GameClient> {
        let (a, b) = futures::join!(self.connect(ctx, r.addr), self.connect(ctx, r.addr));
        let server = name_of(&ctx.servers, r.addr);
        match (a, b) {
            (Some(mut a), Some(mut b)) => {
                let (ra, rb) = futures::join!(
                    self.present(ctx, &mut a, &server, &r.token, TokenKind::Genuine, account),
                    self.present(ctx, &mut b, &server, &r.token, TokenKind::Concurrent, account),
                );
                if ra == Presented::Accepted {
                    Some(a)
                } else if rb == Presented::Accepted {
                    Some(b)
                } else {
                    None
                }
            }
            (Some(mut c), None) | (None, Some(mut c)) => {
                match self.present(ctx, &mut c, &server, &r.token, TokenKind::Genuine, account).await {
                    Presented::Accepted => Some(c),
                    _ => None,
                }
            }
            (None, None) => None,
        }
    }

    /// Holds the redirected login `c` a while (maybe probing it), leaves, and maybe replays
    /// the token.
    async fn after_accept(
        &self,
        ctx: &ClientCtx,
        mut c: GameClient,
        r: &Redirect,
        target: &str,
        account: &str,
    ) {
        let env = &ctx.env;
        if env.rand.gen_bool(PROBE_PROBABILITY) {
            // Logged in exactly once: no other server may log the account in meanwhile.
            let others: Vec<usize> =
                (0..SERVERS).filter(|&k| Some(k) != ctx.servers.index_of(r.addr)).collect();
            let k = *env.rand.choose(&others).expect("other servers");
            if let Some(mut p) = self.connect(ctx, ctx.servers.addr(k)).await {
                self.login(ctx, &mut p, k, account, true).await;
            }
        }
        let open = c.pump(Duration::from_millis(env.rand.gen_range(100..1_500))).await;
        drop(c.take_inbox());
        let replay = env.rand.gen_bool(REPLAY_PROBABILITY);
        let logout = open && env.rand.gen_bool(0.6);
        let mut logged_out = false;
        if logout {
            let op = RedirectOp::Logout { server: target.into(), account: account.into() };
            let h = self.rec.invoke(ctx.process, op);
            match c.request("cs_logout", json!({}), "sc_logout").await {
                Ok(v) if !is_error(&v) => {
                    self.rec.ok(h, RedirectRes::LoggedOut);
                    logged_out = true;
                }
                Ok(v) => self.rec.ok(h, RedirectRes::Refused(message_of(&v))),
                Err(_) => self.rec.info(h),
            }
        }
        drop(c);
        if !replay {
            return;
        }
        if !logged_out {
            // Closed: the server logs the account out when it sees the close.
            env.clock.sleep(Duration::from_millis(env.rand.gen_range(300..1_200))).await;
        }
        if let Some(mut c) = self.connect_and_present(ctx, r.addr, &r.token, TokenKind::Replay, account).await
        {
            // Accepted again (a violation the checker reports): stay a moment so the acting
            // log shows the second login, then leave.
            c.pump(Duration::from_millis(300)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tampering_changes_one_digit_and_forging_keeps_the_length() {
        struct Seq(std::sync::atomic::AtomicU64);
        impl Rand for Seq {
            fn next_u64(&self) -> u64 {
                self.0.fetch_add(0x9e37_79b9_7f4a_7c15, std::sync::atomic::Ordering::Relaxed)
            }
        }
        let rand = Seq(Default::default());
        let token = "0123456789abcdef";
        for _ in 0..50 {
            let t = tamper(token, &rand);
            assert_eq!(t.len(), token.len());
            assert_eq!(t.chars().zip(token.chars()).filter(|(a, b)| a != b).count(), 1, "{t}");
            assert!(t.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)));
            let f = forge(token.len(), &rand);
            assert_eq!(f.len(), token.len());
        }
        assert_eq!(reject_reason("redirect refused: bad redirect token: already used"), "replayed");
        assert_eq!(
            reject_reason("redirect refused: bad redirect token: issued for another server"),
            "wrong_server"
        );
    }
}
