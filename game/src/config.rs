//! Everything one server of the reference game is started with, and why a start fails.

use std::sync::Arc;
use std::time::Duration;

use engine::account::{AccountConfig, AccountError};
use engine::cluster::ClusterConfig;
use engine::commands::CommandsError;
use engine::gate::{GateConfig, GateConfigError, GatewayConfig};
use engine::metrics::Metrics;
use engine::orm::{OrmConfig, OrmError, OrmObserver};
use engine::rpc::RpcConfig;
use engine::session::{ClientListeners, ServiceLimits, SessionConfig};
use engine::shard::{ShardConfig, ShardError};
use engine::storage::{StorageConfig, StorageError};

use crate::Flavor;

/// Planted bugs of the reference game (the simulator's `--bug` flags select them).
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
    /// This server just applied `cs_counter_add {n, seq}` of `account` (committed).
    fn counter_applied(&self, _account: &str, _seq: u64, _n: i64) {}
}

/// The object store of a game-flavor server (the inventory messages need it).
#[derive(Clone)]
pub struct ObjectsConfig {
    /// Where the objects' rows live: the SQL instances and the user -> shard -> instance map.
    /// The router runs on the account manager's session options.
    pub shard: ShardConfig,
    pub orm: OrmConfig,
    /// Told of every act on an object (the `object_lending` scenario's single-owner evidence).
    pub observer: Option<Arc<dyn OrmObserver>>,
}

impl std::fmt::Debug for ObjectsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectsConfig")
            .field("shard", &self.shard)
            .field("orm", &self.orm)
            .field("observer", &self.observer.as_ref().map(|_| "set"))
            .finish()
    }
}

/// Everything one reference-game server needs.
#[derive(Clone)]
pub struct GameConfig {
    pub flavor: Flavor,
    /// The client ports, at most one per transport (iFun's `tcp_json_port`,
    /// `tcp_protobuf_port`, `websocket_json_port`), all served by the same handlers. Each is
    /// announced to the cluster under its `Transport::name` (`tcp_json` is the one other
    /// servers name in `sc_enter_pvp` and redirects) unless `cluster.external_ports` already
    /// gives that name a non-zero port (e.g. a NAT mapping).
    pub sessions: Vec<SessionConfig>,
    /// Limits of the session service as a whole (memory budget, unauthenticated
    /// connections): the `SessionService` section's `session_memory_max_bytes`,
    /// `unauthenticated_max`, `unauthenticated_per_address_max`.
    pub session_limits: ServiceLimits,
    /// Where the client ports' listeners come from; `None`: the `Net` port
    /// (`NetClientListeners`, TCP transports only). The real backend passes its listeners,
    /// which also serve WebSocket.
    pub listeners: Option<Arc<dyn ClientListeners>>,
    pub cluster: ClusterConfig,
    pub rpc: RpcConfig,
    /// Game flavor only.
    pub account: AccountConfig,
    /// Login and gate flavors: the session-key secret and TTL (`Gate` section); it must have a secret.
    pub gate: GateConfig,
    /// Gate flavor: how players are routed to backends; its planted bugs also apply to the
    /// backend side of game servers.
    pub gateway: GatewayConfig,
    pub storage: StorageConfig,
    pub bugs: GameBugs,
    /// Send `sc_tick` to every logged-in account at this period (game flavor).
    pub tick_period: Option<Duration>,
    pub observer: Option<Arc<dyn GameObserver>>,
    /// The object store (game flavor): `None` runs the game without the inventory messages,
    /// and with no SQL at all.
    pub objects: Option<ObjectsConfig>,
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
            .field("gate", &self.gate)
            .field("tick_period", &self.tick_period)
            .field("objects", &self.objects)
            .finish_non_exhaustive()
    }
}

/// Why a server could not start. Every variant but a configuration error inside one of them
/// (see each service's error) may go away by itself: a service was unreachable; retry.
#[derive(Debug, thiserror::Error)]
pub enum GameError {
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
    /// A login server's `Gate` configuration is unusable (no or a bad `session_key_secret`):
    /// a configuration error, not retried.
    #[error("gate config: {0}")]
    Gate(#[from] GateConfigError),
    #[error("shard router: {0}")]
    Shard(#[from] ShardError),
    #[error("object store: {0}")]
    Objects(#[from] OrmError),
    /// The farm's command queues could not start (a configuration error: see the message).
    #[error("command queues: {0}")]
    Commands(#[from] CommandsError),
}
