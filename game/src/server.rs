//! One running server of the reference game: [`GameServer::start`] brings up the services in
//! dependency order and wires the flavor's handlers (one line per message, see the crate's
//! `# Layout`); [`GameServer::stop`] takes them down in reverse.

use std::sync::{Arc, Mutex};

use engine::account::AccountManager;
use engine::cluster::Cluster;
use engine::commands::Commands;
use engine::env::{Env, TaskHandle};
use engine::gate::{GateHost, Gateway, GatewayConfig};
use engine::orm::Orm;
use engine::rpc::Rpc;
use engine::session::{GlobalSessions, NetClientListeners, SessionService};
use engine::shard::ShardRouter;
use engine::storage::CrossServerStorage;
use futures::FutureExt;

use crate::farm::{self, Farm, FarmConfig};
use crate::state::{GameState, LoginState, PvpState};
use crate::wire::register;
use crate::{
    broadcast, counter, enter_pvp, gift, inventory, login, login_server, logout, moving, redirect, send,
    status, tick, trade, transfer,
};
use crate::{Flavor, GameConfig, GameError};

/// One running server of the reference game.
pub struct GameServer {
    flavor: Flavor,
    sessions: SessionService,
    cluster: Cluster,
    rpc: Rpc,
    accounts: Option<AccountManager>,
    /// The object store and its shard router (game flavor with `objects` configured).
    objects: Option<(Orm, ShardRouter)>,
    /// The farm's command queues (with objects and a [`FarmConfig`]).
    commands: Option<Commands<Farm>>,
    /// Game flavor with objects: hosts players behind gates.
    gate_host: Option<GateHost>,
    /// Gate flavor: set once started.
    gateway: Mutex<Option<Gateway>>,
    /// The status publisher and (game flavor, if configured) the ticker; aborted on stop.
    tasks: Mutex<Vec<TaskHandle>>,
}

impl GameServer {
    /// Checks the login flavor's `Gate` configuration (a missing or bad `session_key_secret`
    /// is [`GameError::Gate`], before anything starts), binds the client ports (a bind failure
    /// is reported before anything else starts), joins the cluster (announcing the bound
    /// ports), starts RPC and (game flavor) the account manager and (if configured) the shard
    /// router and object store, registers the flavor's handlers, and only then serves the
    /// client ports: a client never reaches a server that would answer its messages with
    /// `unknown_type`. On error everything started is stopped.
    pub async fn start(env: Env, cfg: GameConfig) -> Result<GameServer, GameError> {
        GameServer::start_with(env, cfg, None).await
    }

    /// [`start`](Self::start), plus the farm ([`crate::farm`]) when `farm` is given and the
    /// object store is configured: its command queues start on the object store (stopped
    /// before it) and its messages are registered.
    ///
    /// The farm's settings are an argument rather than a [`GameConfig`] field so that the
    /// configurations built field by field elsewhere (the real server's manifest reader) keep
    /// compiling; it can move into `GameConfig` when the real server serves the farm.
    pub async fn start_with(
        env: Env,
        cfg: GameConfig,
        farm: Option<FarmConfig>,
    ) -> Result<GameServer, GameError> {
        // The login flavor's keys: a configuration error is reported before anything starts.
        let login_keys = match cfg.flavor {
            Flavor::Login | Flavor::Gate => Some(cfg.gate.session_keys()?),
            Flavor::Game | Flavor::Pvp => None,
        };
        let mut storage = CrossServerStorage::from_env(&env, cfg.storage.clone())?;
        if let Some(m) = &cfg.metrics {
            storage = storage.with_metrics(m);
        }
        let storage = Arc::new(storage);
        let (ports, limits) = (cfg.sessions.clone(), cfg.session_limits);
        let sessions = match &cfg.listeners {
            Some(l) => SessionService::bind_with_limits(env.clone(), ports, limits, &**l).await?,
            None => {
                let l = NetClientListeners::new(env.net.clone());
                SessionService::bind_with_limits(env.clone(), ports, limits, &l).await?
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
        let account_session = cfg.account.session;
        let accounts = match cfg.flavor {
            Flavor::Game | Flavor::Gate => {
                match AccountManager::start(env.clone(), cluster.clone(), rpc.clone(), cfg.account).await {
                    Ok(a) => Some(a),
                    Err(e) => {
                        rpc.shutdown().await;
                        cluster.leave().await;
                        sessions.shutdown().await;
                        return Err(e.into());
                    }
                }
            }
            Flavor::Pvp | Flavor::Login => None,
        };
        let objects = match (&accounts, &cfg.objects) {
            (Some(a), Some(o)) if cfg.flavor == Flavor::Game => {
                match start_objects(&env, &cluster, &rpc, a, o, account_session).await {
                    Ok(started) => Some(started),
                    Err(e) => {
                        a.stop().await;
                        rpc.shutdown().await;
                        cluster.leave().await;
                        sessions.shutdown().await;
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        let commands = match (&objects, farm) {
            (Some((orm, _)), Some(f)) => {
                match Commands::start(env.clone(), orm.clone(), farm::command_set(), f.commands, f.observer) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        if let Some((orm, router)) = &objects {
                            orm.stop().await;
                            router.stop();
                        }
                        if let Some(a) = &accounts {
                            a.stop().await;
                        }
                        rpc.shutdown().await;
                        cluster.leave().await;
                        sessions.shutdown().await;
                        return Err(e.into());
                    }
                }
            }
            _ => None,
        };
        let gate_host = objects.as_ref().map(|(orm, _)| {
            let accounts = accounts.clone().expect("objects run only with an account manager");
            GateHost::start(
                env.clone(),
                rpc.clone(),
                orm.clone(),
                accounts,
                sessions.clone(),
                cluster.clone(),
                &cfg.gateway,
            )
        });
        let server = GameServer {
            flavor: cfg.flavor,
            sessions,
            cluster,
            rpc,
            accounts,
            objects,
            commands,
            gate_host,
            gateway: Mutex::new(None),
            tasks: Default::default(),
        };
        if let Some(m) = &cfg.metrics {
            if let Some(a) = &server.accounts {
                a.attach_metrics(m);
            }
            // After a stop the service lists no sessions, so the gauge falls to 0.
            let service = server.sessions.clone();
            m.register_gauge_fn("sandtable_sessions", "Open client sessions on every port.", move || {
                service.sessions().len() as f64
            });
            register_session_limit_metrics(m, &server.sessions);
        }
        // One of three per flavor: login keys (login), an account manager (game), neither (pvp).
        match (&server.accounts, login_keys) {
            (Some(accounts), Some(keys)) => server.start_gate(&env, accounts.clone(), keys, cfg.gateway),
            (None, Some(keys)) => server.start_login(LoginState {
                cluster: server.cluster.clone(),
                keys,
                clock: env.clock.clone(),
                rand: env.rand.clone(),
            }),
            (None, None) => server.start_pvp(&env, PvpState { storage, bugs: cfg.bugs }),
            (Some(accounts), None) => {
                let game = GameState {
                    accounts: accounts.clone(),
                    cluster: server.cluster.clone(),
                    kv: env.kv.clone(),
                    storage,
                    observer: cfg.observer,
                    orm: server.objects.as_ref().map(|(orm, _)| orm.clone()),
                    clock: env.clock.clone(),
                    farm: server.commands.clone(),
                    gates: server.gate_host.clone(),
                    server_name: cfg.cluster.name.clone(),
                };
                server.start_game(&env, Arc::new(game), cfg.tick_period);
            }
        }
        // Every handler is registered: now clients are accepted, on every port.
        server.sessions.serve();
        Ok(server)
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
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
        // The command queues first (no new turns), then the objects they run on: the store
        // releases its owner records on the account manager's session.
        if let Some(c) = &self.commands {
            c.stop();
        }
        let gateway = self.gateway.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(g) = gateway {
            g.stop();
        }
        if let Some(h) = &self.gate_host {
            h.stop().await;
        }
        if let Some((orm, router)) = &self.objects {
            orm.stop().await;
            router.stop();
        }
        if let Some(a) = &self.accounts {
            a.stop().await;
        }
        self.sessions.shutdown().await;
        self.rpc.shutdown().await;
        self.cluster.leave().await;
    }

    /// The game flavor's handlers and tasks.
    fn start_game(&self, env: &Env, game: Arc<GameState>, tick_period: Option<std::time::Duration>) {
        let service = &self.sessions;
        game.accounts.attach_sessions(service);
        let global = GlobalSessions::attach(service.clone(), self.cluster.clone(), self.rpc.clone());
        drop(global); // the game broadcasts to accounts; the port still serves other servers' session broadcasts
        register(service, &game, login::handle);
        game.register_logged_in(service, enter_pvp::handle);
        game.register_logged_in(service, redirect::handle);
        let observer = game.observer.clone();
        game.accounts.register_redirection_handler(move |account, link, success, extra| {
            redirect::on_redirected(observer.as_deref(), account, link, success, extra);
        });
        game.register_logged_in(service, send::handle);
        game.register_logged_in(service, broadcast::handle);
        game.register_logged_in(service, logout::handle);
        if game.orm.is_some() {
            // Both body forms: JSON objects on JSON ports, `game/proto/inventory.proto` on the
            // protobuf port.
            game.register_logged_in_dual(service, inventory::handle);
            game.register_logged_in_dual(service, gift::handle);
            game.register_logged_in_dual(service, trade::handle);
        }
        if game.orm.is_some() {
            game.register_logged_in(service, counter::handle);
            game.register_logged_in(service, moving::handle);
        }
        if game.farm.is_some() {
            game.register_logged_in(service, farm::cs_state::handle);
            game.register_logged_in(service, farm::cs_commands::handle);
            game.register_logged_in(service, farm::cs_buy_now::handle);
        }
        self.spawn(env, "game-status", status::run_game(game.clone(), env.clock.clone()).boxed());
        if let Some(period) = tick_period {
            self.spawn(env, "game-ticks", tick::run(game, env.clock.clone(), period).boxed());
        }
    }

    /// The pvp flavor's handler and task.
    fn start_pvp(&self, env: &Env, pvp: PvpState) {
        register(&self.sessions, &Arc::new(pvp), transfer::handle);
        let publisher = status::run_pvp(self.cluster.clone(), self.sessions.clone(), env.clock.clone());
        self.spawn(env, "pvp-status", publisher.boxed());
    }

    /// The login flavor's handler: `cs_login` only (no account manager, no task).
    fn start_gate(
        &self,
        env: &Env,
        accounts: AccountManager,
        keys: engine::gate::SessionKeys,
        cfg: GatewayConfig,
    ) {
        accounts.attach_sessions(&self.sessions);
        let gateway = Gateway::start(
            env.clone(),
            self.rpc.clone(),
            accounts,
            self.sessions.clone(),
            self.cluster.clone(),
            keys,
            cfg,
            None,
        );
        *self.gateway.lock().unwrap_or_else(|e| e.into_inner()) = Some(gateway);
    }

    /// The gateway of a gate-flavor server.
    pub fn gateway(&self) -> Option<Gateway> {
        self.gateway.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The backend side of gateways (game flavor with objects).
    pub fn gate_host(&self) -> Option<&GateHost> {
        self.gate_host.as_ref()
    }

    fn start_login(&self, login: LoginState) {
        register(&self.sessions, &Arc::new(login), login_server::handle);
    }

    /// The game's shard router and object store.
    pub fn orm(&self) -> Option<&Orm> {
        self.objects.as_ref().map(|(orm, _)| orm)
    }

    /// The farm's command queues (started with [`start_with`](Self::start_with)).
    pub fn commands(&self) -> Option<&Commands<Farm>> {
        self.commands.as_ref()
    }

    fn spawn(&self, env: &Env, name: &str, task: futures::future::BoxFuture<'static, ()>) {
        let handle = env.spawn.spawn(name, task);
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(handle);
    }
}

/// Starts the shard router (on the account manager's session options) and the object store.
async fn start_objects(
    env: &Env,
    cluster: &Cluster,
    rpc: &Rpc,
    accounts: &AccountManager,
    objects: &crate::config::ObjectsConfig,
    session: engine::env::SessionOptions,
) -> Result<(Orm, ShardRouter), GameError> {
    let router = ShardRouter::start(env.clone(), &objects.orm.app_id, objects.shard.clone(), session).await?;
    let started = Orm::start(
        env.clone(),
        objects.orm.clone(),
        accounts.clone(),
        router.clone(),
        rpc.clone(),
        cluster.id(),
        objects.observer.clone(),
    )
    .await;
    match started {
        Ok(orm) => Ok((orm, router)),
        Err(e) => {
            router.stop();
            Err(e.into())
        }
    }
}

/// Gauges of the session service's limits: memory held against its budget, connections not
/// yet authenticated, and (monotonic) counts of refusals and of closes for each abuse reason.
fn register_session_limit_metrics(m: &engine::metrics::Metrics, sessions: &SessionService) {
    type Read = fn(&engine::session::SessionStats) -> f64;
    let gauges: [(&str, &str, Read); 4] = [
        (
            "sandtable_session_memory_bytes",
            "Bytes held by client sessions (queues and per-connection buffers, as budgeted).",
            |s| s.memory_bytes as f64,
        ),
        (
            "sandtable_session_memory_max_bytes",
            "The session memory budget (session_memory_max_bytes).",
            |s| s.memory_max_bytes as f64,
        ),
        (
            "sandtable_sessions_unauthenticated",
            "Client connections that have not sent a handled message yet.",
            |s| s.unauthenticated as f64,
        ),
        (
            "sandtable_sessions_refused_busy_total",
            "Connections refused with server_busy: the session memory budget was full.",
            |s| s.refused_busy as f64,
        ),
    ];
    for (name, help, f) in gauges {
        let service = sessions.clone();
        m.register_gauge_fn(name, help, move || f(&service.stats()));
    }
    for (kind, name, help) in [
        (
            "slow_reader",
            "sandtable_sessions_closed_slow_reader_total",
            "Sessions closed as slow readers (send queue frames, bytes or the memory budget).",
        ),
        (
            "evicted",
            "sandtable_sessions_closed_evicted_total",
            "Unauthenticated connections closed to make room for newer ones.",
        ),
        (
            "abuse",
            "sandtable_sessions_closed_abuse_total",
            "Sessions closed for transport abuse (e.g. WebSocket control-frame floods).",
        ),
        (
            "protocol",
            "sandtable_sessions_closed_protocol_total",
            "Sessions closed after a frame-level protocol error.",
        ),
    ] {
        let service = sessions.clone();
        m.register_gauge_fn(name, help, move || {
            service.stats().closed.get(kind).copied().unwrap_or(0) as f64
        });
    }
}
