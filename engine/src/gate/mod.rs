//! Gateways (DESIGN.md §3 and §10; seeds 003 and 004: RedRabbit's gate, the classic
//! LoginServer / GameGate): login servers hand out signed session keys, gates hold the client
//! connections and route each player to a backend by tag.
//!
//! What exists so far (issue 16, item 1):
//!
//! | piece | what |
//! |---|---|
//! | [`session_key`] | the signed key a login server issues and a gate checks: user, expiry, nonce; [`issue`], [`verify`], [`verify_for`] |
//! | [`GateConfig`] / [`SessionKeys`] | the manifest's `Gate` section (`session_key_secret`, `session_key_ttl_in_second`) and its checked form |
//! | [`GATE_TAG`], [`GATE_LOAD_FIELD`] | how a login server finds the gates in the cluster view and orders them |
//!
//! The login flow (the reference game's `login` flavor): the client sends the login server
//! `cs_login {user_name}`; it answers `sc_login {error: false, session_key, gates}` with the
//! members tagged [`GATE_TAG`], least loaded first by [`GATE_LOAD_FIELD`]
//! ([`Cluster::peers_by_load`](crate::cluster::Cluster::peers_by_load)), each as the
//! host and port of its client port ([`Cluster::peer_client_addr`](crate::cluster::Cluster::peer_client_addr)).
//! The client then shows the key to one of the gates. See `docs/gate.md`.
//!
//! # Layout
//! - `session_key.rs`: the key format (pure), on the signing machinery shared with redirect
//!   tokens ([`crate::signed`]);
//! - `config.rs`: [`GateConfig`], [`SessionKeys`], the TTL limits;
//! - `error.rs`: [`SessionKeyError`], [`IssueError`], [`GateConfigError`].

mod config;
mod error;
pub mod session_key;

pub use self::config::{GateConfig, SessionKeys, SECTION, SESSION_KEY_TTL_DEFAULT, SESSION_KEY_TTL_MAX};
pub use self::error::{GateConfigError, IssueError, SessionKeyError};
pub use self::session_key::{issue, verify, verify_for, SessionKeyClaims};

/// The cluster tag of gate servers: a login server lists the members carrying it.
pub const GATE_TAG: &str = "gate";
/// The integer field of a gate's shared status (`Cluster::set_status`) that says how loaded it
/// is: the players it holds. A login server lists gates by it, smallest first; gates that
/// publish no such field are listed last.
pub const GATE_LOAD_FIELD: &str = "player_count";
