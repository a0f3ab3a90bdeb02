//! The reference game server of the seed example (iFun's "game -> PvP auth key" chapter),
//! written against engine APIs only, so any backend can run it.
//!
//! Flavors:
//! - `game`: `cs_game_server_login {user_name}` -> `sc_game_server_login {error, level |
//!   error_message}` (the user is created at level 1 in the KV if absent; a second login of
//!   the same user on *this* server is refused with "Already logged in" — a local map; the
//!   cluster-unique login through the account manager is a later step), and `cs_enter_pvp {}`
//!   -> `sc_enter_pvp {error, pvp_server_ip, pvp_server_port, auth_key}`: the user's
//!   `{user_name, level}` is stored in cross-server storage for 10 s under a fresh key and
//!   the least-loaded `pvp` server (by `room_count`) is named.
//! - `pvp`: `cs_transfer_pvp_server {auth_key}` -> `sc_transfer_pvp_server {error, user_name,
//!   level | error_message}`; the key is taken (read and deleted atomically), so it works
//!   once. The server publishes `{"room_count": n}` (n = sessions transferred and still open).
//!
//! Malformed messages (missing or wrong-typed fields) get the error reply, then the session
//! is closed, as in the seed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use engine::cluster::{Cluster, ClusterBugs};
use engine::env::{Env, SetCondition, SetOptions};
use engine::session::{SessionConfig, SessionId, SessionService, Transport};
use engine::storage::{CrossServerStorage, Key, StorageConfig, StorageError};
use serde_json::{json, Value};

use crate::membership::{cluster_config, join_retrying};
use crate::scenario::ServerCtx;

/// The client-facing JSON port of every flavor (announced as external port `tcp_json`).
pub const TCP_JSON_PORT: u16 = 8012;
/// The RPC port announced in the cluster (no RPC is served by the reference game).
pub const RPC_PORT: u16 = 8015;
/// How long an authentication key lives.
pub const AUTH_KEY_TTL: Duration = Duration::from_secs(10);
/// How often a pvp server publishes its room count.
const STATUS_PERIOD: Duration = Duration::from_millis(500);

/// Planted bugs of the reference game.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GameBugs {
    /// The pvp server `read`s the key instead of `take`ing it: keys can be reused.
    pub reuse_key: bool,
}

/// The session configuration of the game's client port: short idle timeout so that the
/// sessions of vanished clients (and their logins) go away quickly.
fn session_config(env: &Env) -> SessionConfig {
    let mut cfg =
        SessionConfig::new(std::net::SocketAddr::new(env.net.local_ip(), TCP_JSON_PORT), Transport::TcpJson);
    cfg.idle_timeout = Duration::from_secs(6);
    cfg.heartbeat_interval = Some(Duration::from_secs(2));
    cfg
}

fn send_error(session: &engine::session::Session, msg_type: &str, message: &str) {
    let _ = session.send_json(msg_type, json!({ "error": true, "error_message": message }));
}

/// Error reply, then close: the reaction to a malformed message.
fn reject_malformed(session: &engine::session::Session, msg_type: &str, message: &str) {
    send_error(session, msg_type, message);
    session.close(format!("malformed {msg_type}: {message}"));
}

/// A non-empty string field of a message body.
fn str_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// Runs one server of the reference game until the run ends (or the node is killed).
/// The flavor comes from `ctx.spec.flavor` (`game` or `pvp`).
pub async fn run_server(ctx: ServerCtx, bugs: GameBugs) {
    let env = ctx.env.clone();
    let flavor = ctx.spec.flavor.clone().unwrap_or_else(|| "game".to_string());
    let storage = match CrossServerStorage::from_env(&env, StorageConfig::enabled()) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(error = %e, "cross-server storage unusable");
            return;
        }
    };
    let service = loop {
        if ctx.phases.finished() {
            return;
        }
        match SessionService::start(env.clone(), session_config(&env)).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::warn!(error = %e, "session service start failed; retrying");
                env.clock.sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let cfg = cluster_config(&ctx, RPC_PORT, ClusterBugs::default());
    let Some(cluster) = join_retrying(&ctx, &cfg).await else { return };
    if flavor == "pvp" {
        run_pvp(&ctx, service, cluster, storage, bugs).await;
    } else {
        run_game(&ctx, service, cluster, storage).await;
    }
}

async fn run_game(
    ctx: &ServerCtx,
    service: SessionService,
    cluster: Cluster,
    storage: Arc<CrossServerStorage>,
) {
    // user name -> the session it is logged in on (this server only).
    let logged_in: Arc<Mutex<BTreeMap<String, SessionId>>> = Arc::default();
    {
        let logged_in = logged_in.clone();
        service.on_session_closed(move |s, _reason| {
            let logged_in = logged_in.clone();
            async move {
                if let Some(user) = s.context::<String>("user_name") {
                    let mut m = logged_in.lock().expect("logins");
                    if m.get(&user) == Some(&s.id()) {
                        m.remove(&user);
                    }
                }
            }
        });
    }
    {
        let (logged_in, kv) = (logged_in.clone(), ctx.env.kv.clone());
        service.register_json_handler("cs_game_server_login", move |s, body| {
            let (logged_in, kv) = (logged_in.clone(), kv.clone());
            async move {
                const REPLY: &str = "sc_game_server_login";
                let Some(user) = str_field(&body, "user_name").map(str::to_string) else {
                    return reject_malformed(&s, REPLY, "user_name must be a non-empty string");
                };
                if s.context::<String>("user_name").is_some() {
                    return send_error(&s, REPLY, "Already logged in");
                }
                {
                    let mut m = logged_in.lock().expect("logins");
                    if m.contains_key(&user) {
                        return send_error(&s, REPLY, "Already logged in");
                    }
                    m.insert(user.clone(), s.id());
                }
                let release = |logged_in: &Mutex<BTreeMap<String, SessionId>>| {
                    let mut m = logged_in.lock().expect("logins");
                    if m.get(&user) == Some(&s.id()) {
                        m.remove(&user);
                    }
                };
                let kv_key = format!("user:{user}");
                let created = Bytes::from(json!({ "level": 1 }).to_string());
                let opts = SetOptions { condition: SetCondition::IfAbsent, ..Default::default() };
                let level = match kv.set(&kv_key, created, opts).await {
                    Ok(_) => match kv.get(&kv_key).await {
                        Ok(Some(b)) => serde_json::from_slice::<Value>(&b)
                            .ok()
                            .and_then(|v| v.get("level").and_then(Value::as_i64)),
                        _ => None,
                    },
                    Err(_) => None,
                };
                let Some(level) = level else {
                    release(&logged_in);
                    return send_error(&s, REPLY, "Server error");
                };
                if !s.is_open() {
                    release(&logged_in);
                    return;
                }
                s.set_context("user_name", user.clone());
                s.set_context("level", level);
                let _ = s.send_json(REPLY, json!({ "error": false, "level": level }));
            }
        });
    }
    {
        let (storage, cluster) = (storage.clone(), cluster.clone());
        service.register_json_handler("cs_enter_pvp", move |s, _body| {
            let (storage, cluster) = (storage.clone(), cluster.clone());
            async move {
                const REPLY: &str = "sc_enter_pvp";
                let (Some(user), Some(level)) = (s.context::<String>("user_name"), s.context::<i64>("level"))
                else {
                    return reject_malformed(&s, REPLY, "Not logged in");
                };
                let Some(pvp) = cluster.least_loaded("pvp", "room_count", false) else {
                    return send_error(&s, REPLY, "No pvp server");
                };
                let (Some(ip), Some(port)) = (
                    cluster.peer_external_ip(pvp),
                    cluster.peer_external_ports(pvp).and_then(|p| p.get("tcp_json").copied()),
                ) else {
                    return send_error(&s, REPLY, "No pvp server");
                };
                let key =
                    match storage.create(&json!({ "user_name": user, "level": level }), AUTH_KEY_TTL).await {
                        Ok(k) => k,
                        Err(e) => {
                            tracing::warn!(error = %e, "CrossServerStorage::create failed");
                            return send_error(&s, REPLY, "Server error");
                        }
                    };
                let _ = s.send_json(
                    REPLY,
                    json!({
                        "error": false,
                        "pvp_server_ip": ip.to_string(),
                        "pvp_server_port": port,
                        "auth_key": key.to_string(),
                    }),
                );
            }
        });
    }
    let _ = cluster.set_status(json!({ "user_count": 0 })).await;
    while !ctx.phases.finished() {
        ctx.env.clock.sleep(STATUS_PERIOD).await;
    }
}

async fn run_pvp(
    ctx: &ServerCtx,
    service: SessionService,
    cluster: Cluster,
    storage: Arc<CrossServerStorage>,
    bugs: GameBugs,
) {
    service.register_json_handler("cs_transfer_pvp_server", move |s, body| {
        let storage = storage.clone();
        async move {
            const REPLY: &str = "sc_transfer_pvp_server";
            let Some(text) = str_field(&body, "auth_key") else {
                return reject_malformed(&s, REPLY, "auth_key must be a non-empty string");
            };
            let Ok(key) = text.parse::<Key>() else {
                return reject_malformed(&s, REPLY, "auth_key is not a key");
            };
            let r = if bugs.reuse_key { storage.read(&key).await } else { storage.take(&key).await };
            let data = match r {
                Ok(v) => v,
                Err(e) => {
                    if !matches!(e, StorageError::NotFound) {
                        tracing::warn!(error = %e, "auth key lookup failed");
                    }
                    return send_error(&s, REPLY, "Failed to authenticate");
                }
            };
            let (Some(user), Some(level)) =
                (data.get("user_name").and_then(Value::as_str), data.get("level").and_then(Value::as_i64))
            else {
                return send_error(&s, REPLY, "Failed to authenticate");
            };
            s.set_context("transferred", true);
            let _ = s.send_json(REPLY, json!({ "error": false, "user_name": user, "level": level }));
        }
    });
    let mut last = None;
    while !ctx.phases.finished() {
        let n =
            service.sessions().iter().filter(|s| s.context::<bool>("transferred").unwrap_or(false)).count();
        // Re-published every period: a status lost to a session change comes back.
        let _ = cluster.set_status(json!({ "room_count": n })).await;
        if last != Some(n) {
            tracing::debug!(room_count = n, "pvp status");
            last = Some(n);
        }
        ctx.env.clock.sleep(STATUS_PERIOD).await;
    }
}
