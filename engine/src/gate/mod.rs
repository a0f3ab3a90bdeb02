//! Gateways (DESIGN.md §3 and §10; seeds 003 and 004: RedRabbit's gate, the classic
//! LoginServer / GameGate): login servers hand out signed session keys, gates hold the client
//! connections and route each player to a backend by tag.
//!
//! | piece | what |
//! |---|---|
//! | [`session_key`] | the signed key a login server issues and a gate checks: user, expiry, nonce; [`issue`], [`verify`], [`verify_for`] |
//! | [`GateConfig`] / [`SessionKeys`] | the manifest's `Gate` section (`session_key_secret`, `session_key_ttl_in_second`) and its checked form |
//! | [`GATE_TAG`], [`GATE_LOAD_FIELD`] | how a login server finds the gates in the cluster view and orders them |
//! | [`Gateway`] | the gate: client sessions, the cluster-wide login on `cs_gate_login`, the binding of each player to a backend, forwarding, and the switch between backends |
//! | [`GateHost`] | the backend side: hosting a gated player (anchor object, gated session, fencing per frame), forwards, deliveries, releases, [`GateHost::move_player`] |
//! | [`route`] | a player's route at the gate as an I/O-free state machine: bound, moving, recovering, held frames |
//! | [`outflow`] | what a hosted player's game sends the client, numbered: in a forward's answer or by delivery, put back in order at the gate |
//!
//! The login flow (the reference game's `login` flavor): the client sends the login server
//! `cs_login {user_name}`; it answers `sc_login {error: false, session_key, gates}` with the
//! members tagged [`GATE_TAG`], least loaded first by [`GATE_LOAD_FIELD`]
//! ([`Cluster::peers_by_load`](crate::cluster::Cluster::peers_by_load)), each as the
//! host and port of its client port ([`Cluster::peer_client_addr`](crate::cluster::Cluster::peer_client_addr)).
//! The client then shows the key to one of the gates, which logs the player in and binds it
//! to a backend tagged `game`. See `docs/gate.md`.
//!
//! # Layout
//! - `session_key.rs`: the key format (pure), on the signing machinery shared with redirect
//!   tokens ([`crate::signed`]);
//! - `config.rs`: [`GateConfig`], [`SessionKeys`], the TTL limits;
//! - `error.rs`: [`SessionKeyError`], [`IssueError`], [`GateConfigError`];
//! - `gateway.rs`: [`Gateway`] and [`GatewayConfig`] (the gate);
//! - `route.rs`: [`route::Route`], one player's routing state at the gate;
//! - `host.rs`: [`GateHost`] (the backend), its anchor model [`GatedPlayer`];
//! - `outflow.rs`: [`outflow::Outflow`] (backend) and [`outflow::OutOrder`] (gate).

mod config;
mod error;
pub mod gateway;
pub mod host;
pub mod outflow;
pub mod route;
pub mod session_key;

pub use self::config::{GateConfig, SessionKeys, SECTION, SESSION_KEY_TTL_DEFAULT, SESSION_KEY_TTL_MAX};
pub use self::error::{GateConfigError, IssueError, SessionKeyError};
pub use self::gateway::{Gateway, GatewayConfig, GatewayObserver, CS_GATE_LOGIN, SC_GATE_LOGIN, SC_MOVED};
pub use self::host::{GateHost, GatedPlayer, HostObserver, MoveError};
pub use self::session_key::{issue, verify, verify_for, SessionKeyClaims};

use crate::session::Transport;

/// Messages gates and backends exchange (`proto/gate.proto`).
#[allow(clippy::all, missing_docs)]
pub mod messages {
    include!(concat!(env!("OUT_DIR"), "/sandtable.gate.rs"));
}

/// The `tracing` target of the gate and the backend side.
pub const LOG_TARGET: &str = "engine::gate";
/// RPC types: gate -> backend.
pub const RPC_BIND: &str = "_gate.bind";
pub const RPC_FORWARD: &str = "_gate.forward";
pub const RPC_RELEASE: &str = "_gate.release";
/// RPC types: backend -> gate.
pub const RPC_DELIVER: &str = "_gate.deliver";
pub const RPC_MOVE: &str = "_gate.move";

/// Planted bugs, each caught by the `gate_route` scenario.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateBugs {
    /// The gate does not hold a player's frames during a move: they keep going to the old
    /// backend, and the target is bound without waiting for the old one to finish.
    pub forward_during_move: bool,
    /// A backend hosts a player without owning its anchor object, and handles its frames
    /// without checking that it still hosts it (no anchor taken at bind, no binding or anchor
    /// check per frame, hosting never swept): an old backend keeps handling after losing the
    /// player.
    pub no_player_fence: bool,
    /// The gate logs a player in without checking the session key.
    pub unchecked_session_key: bool,
    /// A backend releasing a player ends the binding (and unpins the anchor) *before* the
    /// gated session has handled the frames it already accepted: the per-frame guard then
    /// drops them although the gate had them acknowledged and will not send them on (the
    /// engine's own bug fixed on 2026-12-05, kept as a planted bug so the check stays proven).
    pub release_before_drain: bool,
}

/// A client transport as `BindPlayer.transport` carries it.
pub fn transport_to_wire(t: Transport) -> u32 {
    match t {
        Transport::TcpJson => 0,
        Transport::TcpProtobuf => 1,
        Transport::WebSocketJson => 2,
    }
}

/// The inverse of [`transport_to_wire`]; `None` for an unknown number.
pub fn transport_from_wire(n: u32) -> Option<Transport> {
    match n {
        0 => Some(Transport::TcpJson),
        1 => Some(Transport::TcpProtobuf),
        2 => Some(Transport::WebSocketJson),
        _ => None,
    }
}

/// The cluster tag of gate servers: a login server lists the members carrying it.
pub const GATE_TAG: &str = "gate";
/// The integer field of a gate's shared status (`Cluster::set_status`) that says how loaded it
/// is: the players it holds. A login server lists gates by it, smallest first; gates that
/// publish no such field are listed last.
pub const GATE_LOAD_FIELD: &str = "player_count";
