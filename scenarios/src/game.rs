//! The reference game server of the seed example (iFun's "game -> PvP auth key" chapter),
//! written against engine APIs only, so any backend can run it ([`GameServer::start`] with a
//! [`GameConfig`]; the simulator's [`run_server`], the real backend's server binary).
//!
//! Flavor `game` (sessions + cluster + RPC + [`AccountManager`]):
//! - `cs_game_server_login {user_name}` -> `sc_game_server_login {error, level | error_message}`:
//!   the login is **cluster-unique** (`check_and_set_logged_in`); a second login of a user
//!   logged in anywhere gets "Already logged in". The user is created at level 1 in the KV
//!   if absent.
//! - `cs_enter_pvp {}` -> `sc_enter_pvp {error, pvp_server_ip, pvp_server_port, auth_key}`: the
//!   user's `{user_name, level}` is stored in cross-server storage for 10 s under a fresh key
//!   and the least-loaded `pvp` server (by `room_count`) is named.
//! - `cs_redirect {server_name, extra_data}` -> the account manager's `_sc_redirect {host,
//!   port, flavor, token}` and the session closes (or `sc_redirect {error, error_message}`).
//!   On the target, `_cs_redirect {token}` -> `sc_redirected {error: false, user_name,
//!   extra_data}` (or `_error redirect_rejected`).
//! - `cs_send {to, message}` -> `sc_send {error, delivered}`; the addressee gets
//!   `sc_message {from, message}` wherever it is logged in.
//! - `cs_broadcast {scope: "local"|"global", message}` -> `sc_broadcast {error, delivered}`;
//!   logged-in accounts (here, or on every game server) get `sc_broadcast_message {from,
//!   message}`.
//! - `cs_logout {}` -> `sc_logout {error}`.
//! - With [`GameConfig::tick_period`] set, every logged-in account gets `sc_tick {seq}` at that
//!   period, sent only while the server may act for it (the account manager's lease); a
//!   [`GameObserver`] sees each login and each tick sent — the "acting" evidence the
//!   `login_unique` checker uses.
//!
//! Flavor `pvp`: `cs_transfer_pvp_server {auth_key}` -> `sc_transfer_pvp_server {error,
//! user_name, level | error_message}`; the key is taken (read and deleted atomically), so it
//! works once. The server publishes `{"room_count": n}` (n = sessions transferred and still
//! open).
//!
//! Malformed messages (missing or wrong-typed fields) get the error reply, then the session
//! is closed, as in the seed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::account::{self, AccountConfig, AccountError, AccountManager, LoginOutcome};
use engine::cluster::{Cluster, ClusterConfig, PeerId};
use engine::env::{Env, SetCondition, SetOptions, TaskHandle};
use engine::metrics::Metrics;
use engine::rpc::{Rpc, RpcConfig};
use engine::session::{
    ClientListeners, GlobalSessions, NetClientListeners, Session, SessionConfig, SessionService, Transport,
};
use engine::storage::{CrossServerStorage, Key, StorageConfig, StorageError};
use futures::FutureExt;
use serde_json::{json, Value};

use crate::catalogue::membership::cluster_config;
use crate::scenario::ServerCtx;

/// The client-facing JSON port of every flavor (announced as external port `tcp_json`).
pub const TCP_JSON_PORT: u16 = 8012;
/// `n` game-flavor servers `game-0`, `game-1`, ..., each tagged [`GAME_TAG`]: the topology of
/// the scenarios that run only game servers.
pub fn game_servers(n: usize) -> Vec<crate::scenario::ServerSpec> {
    (0..n)
        .map(|i| crate::scenario::ServerSpec {
            name: format!("game-{i}"),
            flavor: Some("game".into()),
            tags: vec![GAME_TAG.to_string()],
        })
        .collect()
}

/// The RPC port of every server (account messages and broadcasts travel on it).
pub const RPC_PORT: u16 = 8015;
/// How long an authentication key lives.
pub const AUTH_KEY_TTL: Duration = Duration::from_secs(10);
/// How often a pvp server publishes its room count.
const STATUS_PERIOD: Duration = Duration::from_millis(500);
/// The tag every game-flavor server carries: global broadcasts go to the servers with it.
pub const GAME_TAG: &str = "game";
/// The `redirection_secret` of the simulated cluster (64 hex characters).
pub const SIM_REDIRECTION_SECRET: &str = "5a4e4454414245c52d73696d756c61746f722d7265646972656374696f6e2d31";

/// Planted bugs of the reference game.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GameBugs {
    /// The pvp server `read`s the key instead of `take`ing it: keys can be reused.
    pub reuse_key: bool,
}

/// What a game server reports about its acting for accounts (for checkers). Called
/// synchronously at the instant of the event, with no await in between.
pub trait GameObserver: Send + Sync {
    /// `account` was just logged in here on the connection `link`.
    fn logged_in(&self, account: &str, link: &str);
    /// This server just sent `account` a tick on `link`: it acted for the account.
    fn acted(&self, account: &str, link: &str);
}

/// Everything one reference-game server needs.
#[derive(Clone)]
pub struct GameConfig {
    /// `game` or `pvp`.
    pub flavor: String,
    /// The client ports, at most one per transport (iFun's `tcp_json_port`,
    /// `tcp_protobuf_port`, `websocket_json_port`), all served by the same handlers. Each is
    /// announced to the cluster under its [`Transport::name`] (`tcp_json` is the one other
    /// servers name in `sc_enter_pvp` and redirects) unless `cluster.external_ports` already
    /// gives that name a non-zero port (e.g. a NAT mapping).
    pub sessions: Vec<SessionConfig>,
    /// Where the client ports' listeners come from; `None`: the `Net` port
    /// ([`NetClientListeners`], TCP transports only). The real backend passes its listeners,
    /// which also serve WebSocket.
    pub listeners: Option<Arc<dyn ClientListeners>>,
    pub cluster: ClusterConfig,
    pub rpc: RpcConfig,
    /// Game flavor only.
    pub account: AccountConfig,
    pub storage: StorageConfig,
    pub bugs: GameBugs,
    /// Send `sc_tick` to every logged-in account at this period (game flavor).
    pub tick_period: Option<Duration>,
    pub observer: Option<Arc<dyn GameObserver>>,
    /// Where storage, account and session figures go (the admin API's registry); RPC takes
    /// its own from `rpc.metrics`. `None`: not measured.
    pub metrics: Option<Metrics>,
}

impl std::fmt::Debug for GameConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GameConfig")
            .field("flavor", &self.flavor)
            .field("sessions", &self.sessions)
            .field("listeners", &self.listeners.as_ref().map(|_| "custom"))
            .field("cluster", &self.cluster)
            .field("account", &self.account)
            .field("tick_period", &self.tick_period)
            .finish_non_exhaustive()
    }
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum GameError {
    #[error("flavor {0:?} is neither game nor pvp")]
    UnknownFlavor(String),
    #[error("cross-server storage: {0}")]
    Storage(#[from] StorageError),
    #[error("session service: {0}")]
    Session(#[from] engine::session::SessionError),
    #[error("cluster: {0}")]
    Cluster(#[from] engine::cluster::ClusterError),
    #[error("rpc: {0}")]
    Rpc(#[from] engine::rpc::RpcError),
    #[error("account manager: {0}")]
    Account(#[from] AccountError),
}

/// One running server of the reference game.
pub struct GameServer {
    flavor: String,
    sessions: SessionService,
    cluster: Cluster,
    rpc: Rpc,
    accounts: Option<AccountManager>,
    tasks: std::sync::Mutex<Vec<TaskHandle>>,
}

impl GameServer {
    /// Binds the client ports (a bind failure is reported before anything else starts), joins
    /// the cluster (announcing the bound ports), starts RPC and (game flavor) the account
    /// manager, registers the flavor's handlers, and only then serves the client ports: a
    /// client never reaches a server that would answer its messages with `unknown_type`. On
    /// error everything started is stopped.
    pub async fn start(env: Env, cfg: GameConfig) -> Result<GameServer, GameError> {
        if cfg.flavor != "game" && cfg.flavor != "pvp" {
            return Err(GameError::UnknownFlavor(cfg.flavor));
        }
        let mut storage = CrossServerStorage::from_env(&env, cfg.storage.clone())?;
        if let Some(m) = &cfg.metrics {
            storage = storage.with_metrics(m);
        }
        let storage = Arc::new(storage);
        let sessions = match &cfg.listeners {
            Some(l) => SessionService::bind(env.clone(), cfg.sessions.clone(), &**l).await?,
            None => {
                let l = NetClientListeners::new(env.net.clone());
                SessionService::bind(env.clone(), cfg.sessions.clone(), &l).await?
            }
        };
        let mut cluster_cfg = cfg.cluster.clone();
        for (transport, addr) in sessions.local_addrs() {
            let port = cluster_cfg.external_ports.entry(transport.name().to_string()).or_insert(0);
            if *port == 0 {
                *port = addr.port();
            }
        }
        let cluster = match Cluster::join(env.clone(), cluster_cfg).await {
            Ok(c) => c,
            Err(e) => {
                sessions.shutdown().await;
                return Err(e.into());
            }
        };
        let rpc =
            match Rpc::start(env.clone(), cluster.id(), Arc::new(cluster.clone()), cfg.rpc.clone()).await {
                Ok(r) => r,
                Err(e) => {
                    cluster.leave().await;
                    sessions.shutdown().await;
                    return Err(e.into());
                }
            };
        let accounts = if cfg.flavor == "game" {
            match AccountManager::start(env.clone(), cluster.clone(), rpc.clone(), cfg.account).await {
                Ok(a) => Some(a),
                Err(e) => {
                    rpc.shutdown().await;
                    cluster.leave().await;
                    sessions.shutdown().await;
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        let mut server = GameServer {
            flavor: cfg.flavor.clone(),
            sessions,
            cluster,
            rpc,
            accounts: None,
            tasks: Default::default(),
        };
        if let Some(m) = &cfg.metrics {
            if let Some(a) = &accounts {
                a.attach_metrics(m);
            }
            // After a stop the service lists no sessions, so the gauge falls to 0.
            let service = server.sessions.clone();
            m.register_gauge_fn("sandtable_sessions", "Open client sessions on every port.", move || {
                service.sessions().len() as f64
            });
        }
        match accounts {
            None => server.start_pvp(&env, storage, cfg.bugs),
            Some(accounts) => {
                server.accounts = Some(accounts.clone());
                server.start_game(&env, storage, accounts, cfg.tick_period, cfg.observer);
            }
        }
        // Every handler is registered: now clients are accepted, on every port.
        server.sessions.serve();
        Ok(server)
    }

    pub fn flavor(&self) -> &str {
        &self.flavor
    }
    pub fn sessions(&self) -> &SessionService {
        &self.sessions
    }
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
    pub fn accounts(&self) -> Option<&AccountManager> {
        self.accounts.as_ref()
    }
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// Graceful stop: no new clients, accounts logged out, sessions drained, deregistered.
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        if let Some(a) = &self.accounts {
            a.stop().await;
        }
        self.sessions.shutdown().await;
        self.rpc.shutdown().await;
        self.cluster.leave().await;
    }

    fn start_game(
        &mut self,
        env: &Env,
        storage: Arc<CrossServerStorage>,
        accounts: AccountManager,
        tick_period: Option<Duration>,
        observer: Option<Arc<dyn GameObserver>>,
    ) {
        let service = &self.sessions;
        accounts.attach_sessions(service);
        let global = GlobalSessions::attach(service.clone(), self.cluster.clone(), self.rpc.clone());
        drop(global); // the game broadcasts to accounts; the port still serves other servers' session broadcasts
        {
            let (accounts, kv, observer) = (accounts.clone(), env.kv.clone(), observer.clone());
            service.register_json_handler("cs_game_server_login", move |s, body| {
                let (accounts, kv, observer) = (accounts.clone(), kv.clone(), observer.clone());
                async move {
                    const REPLY: &str = "sc_game_server_login";
                    let Some(user) = str_field(&body, "user_name").map(str::to_string) else {
                        return reject_malformed(&s, REPLY, "user_name must be a non-empty string");
                    };
                    if account::validate_account(&user).is_err() {
                        return reject_malformed(&s, REPLY, "user_name is not a valid account id");
                    }
                    if accounts.account_of(s.id()).is_some() {
                        return send_error(&s, REPLY, "Already logged in");
                    }
                    // The level first: once the login is in, the reply goes out in the same
                    // instant, so no broadcast can reach the client before it.
                    let Some(level) = load_level(&*kv, &user).await else {
                        return send_error(&s, REPLY, "Server error");
                    };
                    match accounts.check_and_set_logged_in(&user, account::link(&s)).await {
                        Ok(LoginOutcome::LoggedIn) => {}
                        Ok(LoginOutcome::AlreadyLoggedIn { .. }) => {
                            return send_error(&s, REPLY, "Already logged in")
                        }
                        Err(e) => {
                            tracing::info!(user, error = %e, "login failed");
                            return send_error(&s, REPLY, "Server error");
                        }
                    }
                    if let Some(o) = &observer {
                        o.logged_in(&user, &s.id().to_string());
                    }
                    let _ = s.send_json(REPLY, json!({ "error": false, "level": level }));
                }
            });
        }
        {
            let (accounts, storage, cluster, kv) =
                (accounts.clone(), storage.clone(), self.cluster.clone(), env.kv.clone());
            service.register_json_handler("cs_enter_pvp", move |s, _body| {
                let (accounts, storage, cluster, kv) =
                    (accounts.clone(), storage.clone(), cluster.clone(), kv.clone());
                async move {
                    const REPLY: &str = "sc_enter_pvp";
                    let Some(user) = accounts.account_of(s.id()) else {
                        return reject_malformed(&s, REPLY, "Not logged in");
                    };
                    let Some(level) = load_level(&*kv, &user).await else {
                        return send_error(&s, REPLY, "Server error");
                    };
                    let Some(pvp) = cluster.least_loaded("pvp", "room_count", false) else {
                        return send_error(&s, REPLY, "No pvp server");
                    };
                    // The pvp port of the client's own transport, else its TCP JSON port.
                    let ports = cluster.peer_external_ports(pvp);
                    let port = ports.as_ref().and_then(|p| {
                        p.get(s.transport().name()).or_else(|| p.get(Transport::TcpJson.name())).copied()
                    });
                    let (Some(ip), Some(port)) = (cluster.peer_external_ip(pvp), port) else {
                        return send_error(&s, REPLY, "No pvp server");
                    };
                    let key = match storage
                        .create(&json!({ "user_name": user, "level": level }), AUTH_KEY_TTL)
                        .await
                    {
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
        {
            let (accounts, cluster) = (accounts.clone(), self.cluster.clone());
            service.register_json_handler("cs_redirect", move |s, body| {
                let (accounts, cluster) = (accounts.clone(), cluster.clone());
                async move {
                    const REPLY: &str = "sc_redirect";
                    let Some(user) = accounts.account_of(s.id()) else {
                        return send_error(&s, REPLY, "Not logged in");
                    };
                    let Some(name) = str_field(&body, "server_name") else {
                        return reject_malformed(&s, REPLY, "server_name must be a non-empty string");
                    };
                    let extra = body.get("extra_data").cloned().unwrap_or(Value::Null);
                    let Some(target) = peer_by_name(&cluster, name) else {
                        return send_error(&s, REPLY, "No such server");
                    };
                    if let Err(e) = accounts.redirect_client(&user, target, extra).await {
                        tracing::info!(user, error = %e, "redirect failed");
                        send_error(&s, REPLY, "Redirect failed");
                    }
                }
            });
        }
        {
            let observer = observer.clone();
            accounts.register_redirection_handler(move |account, link, success, extra| {
                if success {
                    if let Some(o) = &observer {
                        o.logged_in(&account, &link.link_id().to_string());
                    }
                    link.send_json(
                        "sc_redirected",
                        json!({ "error": false, "user_name": account, "extra_data": extra }),
                    );
                }
            });
        }
        {
            let accounts = accounts.clone();
            service.register_json_handler("cs_send", move |s, body| {
                let accounts = accounts.clone();
                async move {
                    const REPLY: &str = "sc_send";
                    let Some(from) = accounts.account_of(s.id()) else {
                        return send_error(&s, REPLY, "Not logged in");
                    };
                    let (Some(to), Some(message)) = (str_field(&body, "to"), body.get("message")) else {
                        return reject_malformed(&s, REPLY, "to must be a non-empty string, message present");
                    };
                    let r = accounts
                        .send_message(to, "sc_message", json!({ "from": from, "message": message }))
                        .await;
                    match r {
                        Ok(delivered) => {
                            let _ = s.send_json(REPLY, json!({ "error": false, "delivered": delivered }));
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "send_message failed");
                            send_error(&s, REPLY, "Send failed");
                        }
                    }
                }
            });
        }
        {
            let (accounts, cluster) = (accounts.clone(), self.cluster.clone());
            service.register_json_handler("cs_broadcast", move |s, body| {
                let (accounts, cluster) = (accounts.clone(), cluster.clone());
                async move {
                    const REPLY: &str = "sc_broadcast";
                    let Some(from) = accounts.account_of(s.id()) else {
                        return send_error(&s, REPLY, "Not logged in");
                    };
                    let (Some(scope), Some(message)) = (str_field(&body, "scope"), body.get("message"))
                    else {
                        return reject_malformed(&s, REPLY, "scope must be local or global, message present");
                    };
                    let msg = json!({ "from": from, "message": message });
                    let delivered = match scope {
                        "local" => Ok(accounts.broadcast_locally("sc_broadcast_message", &msg)),
                        "global" => {
                            let peers: Vec<PeerId> =
                                cluster.peers_with_tag(GAME_TAG, true).into_keys().collect();
                            if peers.is_empty() {
                                Ok(0)
                            } else {
                                accounts.broadcast_globally("sc_broadcast_message", &msg, &peers).await
                            }
                        }
                        _ => return reject_malformed(&s, REPLY, "scope must be local or global"),
                    };
                    match delivered {
                        Ok(n) => {
                            let _ = s.send_json(REPLY, json!({ "error": false, "delivered": n }));
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "broadcast failed");
                            send_error(&s, REPLY, "Broadcast failed");
                        }
                    }
                }
            });
        }
        {
            let accounts = accounts.clone();
            service.register_json_handler("cs_logout", move |s, _body| {
                let accounts = accounts.clone();
                async move {
                    const REPLY: &str = "sc_logout";
                    let Some(user) = accounts.account_of(s.id()) else {
                        return send_error(&s, REPLY, "Not logged in");
                    };
                    match accounts.set_logged_out_link(s.id()).await {
                        Ok(_) => {
                            let _ = s.send_json(REPLY, json!({ "error": false }));
                        }
                        Err(e) => {
                            tracing::info!(user, error = %e, "logout failed");
                            send_error(&s, REPLY, "Server error");
                        }
                    }
                }
            });
        }
        let status = {
            let cluster = self.cluster.clone();
            let (clock, accounts) = (env.clock.clone(), accounts.clone());
            async move {
                loop {
                    let n = accounts.local_accounts().len();
                    let _ = cluster.set_status(json!({ "user_count": n })).await;
                    clock.sleep(STATUS_PERIOD).await;
                }
            }
        };
        self.tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push(env.spawn.spawn("game-status", status.boxed()));
        if let Some(period) = tick_period {
            let clock = env.clock.clone();
            let ticks = async move {
                let mut seq = 0u64;
                loop {
                    clock.sleep(period).await;
                    seq += 1;
                    for user in accounts.local_accounts() {
                        // Same instant: the lease check inside `deliver`, the send, the report.
                        if let Some(link) = accounts.deliver(&user, "sc_tick", json!({ "seq": seq })) {
                            if let Some(o) = &observer {
                                o.acted(&user, &link.to_string());
                            }
                        }
                    }
                }
            };
            self.tasks
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .push(env.spawn.spawn("game-ticks", ticks.boxed()));
        }
    }

    fn start_pvp(&mut self, env: &Env, storage: Arc<CrossServerStorage>, bugs: GameBugs) {
        self.sessions.register_json_handler("cs_transfer_pvp_server", move |s, body| {
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
                let (Some(user), Some(level)) = (
                    data.get("user_name").and_then(Value::as_str),
                    data.get("level").and_then(Value::as_i64),
                ) else {
                    return send_error(&s, REPLY, "Failed to authenticate");
                };
                s.set_context("transferred", true);
                let _ = s.send_json(REPLY, json!({ "error": false, "user_name": user, "level": level }));
            }
        });
        let (cluster, sessions, clock) = (self.cluster.clone(), self.sessions.clone(), env.clock.clone());
        let status = async move {
            let mut last = None;
            loop {
                let n = sessions
                    .sessions()
                    .iter()
                    .filter(|s| s.context::<bool>("transferred").unwrap_or(false))
                    .count();
                // Re-published every period: a status lost to a session change comes back.
                let _ = cluster.set_status(json!({ "room_count": n })).await;
                if last != Some(n) {
                    tracing::debug!(room_count = n, "pvp status");
                    last = Some(n);
                }
                clock.sleep(STATUS_PERIOD).await;
            }
        };
        self.tasks
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .push(env.spawn.spawn("pvp-status", status.boxed()));
    }
}

fn send_error(session: &Session, msg_type: &str, message: &str) {
    let _ = session.send_json(msg_type, json!({ "error": true, "error_message": message }));
}

/// Error reply, then close: the reaction to a malformed message.
fn reject_malformed(session: &Session, msg_type: &str, message: &str) {
    send_error(session, msg_type, message);
    session.close(format!("malformed {msg_type}: {message}"));
}

/// A non-empty string field of a message body.
fn str_field<'a>(body: &'a Value, name: &str) -> Option<&'a str> {
    body.get(name).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// The member called `name`; if an old incarnation of it is still listed (its session not
/// yet expired), the newest registration.
fn peer_by_name(cluster: &Cluster, name: &str) -> Option<PeerId> {
    cluster
        .peers(true)
        .into_iter()
        .filter(|(_, info)| info.name == name)
        .max_by_key(|(_, info)| info.registered_zxid)
        .map(|(id, _)| id)
}

/// The user's level, creating the user at level 1 if absent (`None`: the KV failed).
async fn load_level(kv: &dyn engine::env::Kv, user: &str) -> Option<i64> {
    let kv_key = format!("user:{user}");
    let created = Bytes::from(json!({ "level": 1 }).to_string());
    let opts = SetOptions { condition: SetCondition::IfAbsent, ..Default::default() };
    kv.set(&kv_key, created, opts).await.ok()?;
    let b = kv.get(&kv_key).await.ok()??;
    serde_json::from_slice::<Value>(&b).ok()?.get("level").and_then(Value::as_i64)
}

/// How the simulator's scenarios run a game server.
#[derive(Clone, Default)]
pub struct SimGameOptions {
    pub bugs: GameBugs,
    pub account_bugs: engine::account::AccountBugs,
    pub tick_period: Option<Duration>,
    pub observer: Option<Arc<dyn GameObserver>>,
    /// Overrides the account manager's `redirect_token_ttl`.
    pub redirect_token_ttl: Option<Duration>,
}

/// The session configuration of the simulated game's client port (one TCP JSON port): short
/// idle timeout so that the sessions of vanished clients (and their logins) go away quickly.
fn sim_session_config(env: &Env) -> SessionConfig {
    let mut cfg = SessionConfig::new(SocketAddr::new(env.net.local_ip(), TCP_JSON_PORT), Transport::TcpJson);
    cfg.idle_timeout = Duration::from_secs(6);
    cfg.heartbeat_interval = Some(Duration::from_secs(2));
    cfg
}

/// The configuration of one simulated server of the reference game.
pub fn sim_config(ctx: &ServerCtx, opts: &SimGameOptions) -> GameConfig {
    let env = &ctx.env;
    let flavor = ctx.spec.flavor.clone().unwrap_or_else(|| "game".to_string());
    let mut cluster = cluster_config(ctx, RPC_PORT, Default::default());
    if flavor == "game" {
        cluster.tags.insert(GAME_TAG.to_string());
    }
    let mut account = AccountConfig::new(cluster.app_id.clone());
    account.session = cluster.session;
    account.redirection_secret = Some(SIM_REDIRECTION_SECRET.to_string());
    account.bugs = opts.account_bugs;
    if let Some(ttl) = opts.redirect_token_ttl {
        account.redirect_token_ttl = ttl;
    }
    GameConfig {
        flavor,
        sessions: vec![sim_session_config(env)],
        listeners: None,
        rpc: RpcConfig::new(cluster.rpc_addr),
        cluster,
        account,
        storage: StorageConfig::enabled(),
        bugs: opts.bugs,
        tick_period: opts.tick_period,
        observer: opts.observer.clone(),
        metrics: None,
    }
}

/// Runs one simulated server of the reference game until the run ends (or the node is
/// killed), retrying the start while services are unreachable.
pub async fn run_server(ctx: ServerCtx, opts: SimGameOptions) {
    let cfg = sim_config(&ctx, &opts);
    let server = loop {
        if ctx.phases.finished() {
            return;
        }
        match GameServer::start(ctx.env.clone(), cfg.clone()).await {
            Ok(s) => break s,
            Err(e) => {
                tracing::info!(error = %e, "game server start failed; retrying");
                ctx.env.clock.sleep(Duration::from_millis(500)).await;
            }
        }
    };
    while !ctx.phases.finished() {
        ctx.env.clock.sleep(STATUS_PERIOD).await;
    }
    drop(server);
}
