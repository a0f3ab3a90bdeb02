//! The typed sections: `AppInfo`, `RpcService`, `ZookeeperClient`.
//!
//! Field names are iFun Engine's parameter names, so an iFun MANIFEST section can be pasted
//! in unchanged; defaults are iFun's documented defaults.

use std::fmt;
use std::time::Duration;

use serde_json::Value;

use super::error::ManifestError;
use super::reader::Fields;

pub use crate::env::APP_ID_CHARS_MAX;

/// `AppInfo`: which application this server belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppInfo {
    /// Servers with the same `app_id` form one cluster (`/{app_id}/...` in ZooKeeper, key
    /// prefixes in Redis). Required. Because it becomes a znode path segment and a key
    /// prefix, it is limited to ASCII letters, digits, `_`, `-` and `.` (not `.` or `..`
    /// alone), at most [`APP_ID_CHARS_MAX`] characters.
    pub app_id: String,
}

impl AppInfo {
    pub(crate) const KEYS: &'static [&'static str] = &["app_id"];

    /// Parses the section; `partial` skips the check for required keys (used for one
    /// layer of a flavored manifest, which may leave them to the other layer).
    pub(crate) fn parse(path: &str, v: &Value, partial: bool) -> Result<Self, ManifestError> {
        let f = Fields::new(path, v, Self::KEYS)?;
        match f.opt_string("app_id")? {
            Some(app_id) => {
                validate_app_id(&f.path_of("app_id"), &app_id)?;
                Ok(AppInfo { app_id })
            }
            None if partial => Ok(AppInfo { app_id: String::new() }),
            None => Err(ManifestError::Missing { path: f.path_of("app_id") }),
        }
    }
}

/// The shared rule ([`crate::env::validate_app_id`]), reported at the manifest path.
fn validate_app_id(path: &str, id: &str) -> Result<(), ManifestError> {
    crate::env::validate_app_id(id)
        .map_err(|e| ManifestError::Invalid { path: path.to_owned(), message: e.to_string() })
}

/// Most RPC handlers one server runs at once (the upper bound of `rpc_threads_size`).
pub const RPC_HANDLERS_CONCURRENT_MAX: u64 = 1024;

/// How much of each RPC message is logged (`rpc_message_logging_level`).
pub const RPC_MESSAGE_LOGGING_LEVEL_MAX: u64 = 2;

/// `RpcService`: cross-server RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcService {
    /// Turns on RPC and everything built on it (cluster membership, AccountManager, ...).
    pub rpc_enabled: bool,
    /// TCP port the RPC server listens on.
    pub rpc_port: u16,
    /// Tags this server registers under; other servers find it with `get_peers_with_tag`.
    pub rpc_tags: Vec<String>,
    /// In iFun, the number of RPC worker threads. The engine is async on one runtime and
    /// never creates threads, so here it is the **number of RPC handlers that may run
    /// concurrently on this server**: a further request waits (in its order-key queue) until
    /// a handler finishes. It keeps iFun's meaning of "how much RPC work runs in parallel"
    /// and bounds memory under a request flood. `1..=`[`RPC_HANDLERS_CONCURRENT_MAX`]. The
    /// engine's own waiting handlers (gate forwards, binds, releases and deliveries, object
    /// lends: [`crate::rpc::Rpc::register_waiting_handler`]) do not count: they wait on other
    /// servers or on the game's handling, and their protocols bound their number.
    pub rpc_threads_size: u64,
    /// Network interface whose address peers use to reach this server; empty = the
    /// address the `Net` port reports for this node.
    pub rpc_nic_name: String,
    /// Advertise the public address instead of the NIC's (cloud hosts with NAT).
    pub rpc_use_public_address: bool,
    /// 0: no message logs; 1: transaction id, peer, type and length; 2: also the body.
    pub rpc_message_logging_level: u8,
    /// Set `TCP_NODELAY` on RPC connections (real backend only; the simulator has no Nagle).
    pub rpc_disable_tcp_nagle: bool,
    /// Discover peers through ZooKeeper. The engine has no other discovery backend, so
    /// `false` is rejected with [`ManifestError::Invalid`] rather than silently ignored.
    pub rpc_backend_zookeeper: bool,
    /// Warn when an RPC has no reply within 5 seconds.
    pub enable_rpc_reply_checker: bool,
}

impl Default for RpcService {
    fn default() -> Self {
        RpcService {
            rpc_enabled: false,
            rpc_port: 8015,
            rpc_tags: Vec::new(),
            rpc_threads_size: 4,
            rpc_nic_name: String::new(),
            rpc_use_public_address: false,
            rpc_message_logging_level: 0,
            rpc_disable_tcp_nagle: true,
            rpc_backend_zookeeper: true,
            enable_rpc_reply_checker: true,
        }
    }
}

impl RpcService {
    pub(crate) const KEYS: &'static [&'static str] = &[
        "rpc_enabled",
        "rpc_port",
        "rpc_tags",
        "rpc_threads_size",
        "rpc_nic_name",
        "rpc_use_public_address",
        "rpc_message_logging_level",
        "rpc_disable_tcp_nagle",
        "rpc_backend_zookeeper",
        "enable_rpc_reply_checker",
    ];

    pub(crate) fn parse(path: &str, v: &Value) -> Result<Self, ManifestError> {
        let f = Fields::new(path, v, Self::KEYS)?;
        let d = RpcService::default();
        let rpc_enabled = f.bool("rpc_enabled", d.rpc_enabled)?;
        let rpc_port = narrow(f.uint("rpc_port", 0..=u64::from(u16::MAX), u64::from(d.rpc_port))?);
        let rpc_tags = f.string_list("rpc_tags")?;
        if let Some(i) = rpc_tags.iter().position(|t| t.is_empty()) {
            return Err(ManifestError::Invalid {
                path: format!("{}[{i}]", f.path_of("rpc_tags")),
                message: "a tag must not be empty".to_owned(),
            });
        }
        let rpc_threads_size =
            f.uint("rpc_threads_size", 1..=RPC_HANDLERS_CONCURRENT_MAX, d.rpc_threads_size)?;
        let rpc_nic_name = f.string("rpc_nic_name", &d.rpc_nic_name)?;
        let rpc_use_public_address = f.bool("rpc_use_public_address", d.rpc_use_public_address)?;
        let rpc_message_logging_level = narrow(f.uint(
            "rpc_message_logging_level",
            0..=RPC_MESSAGE_LOGGING_LEVEL_MAX,
            u64::from(d.rpc_message_logging_level),
        )?);
        let rpc_disable_tcp_nagle = f.bool("rpc_disable_tcp_nagle", d.rpc_disable_tcp_nagle)?;
        let rpc_backend_zookeeper = f.bool("rpc_backend_zookeeper", d.rpc_backend_zookeeper)?;
        if !rpc_backend_zookeeper {
            return Err(ManifestError::Invalid {
                path: f.path_of("rpc_backend_zookeeper"),
                message: "only the ZooKeeper backend is supported; remove the key or set it to true"
                    .to_owned(),
            });
        }
        let enable_rpc_reply_checker = f.bool("enable_rpc_reply_checker", d.enable_rpc_reply_checker)?;
        Ok(RpcService {
            rpc_enabled,
            rpc_port,
            rpc_tags,
            rpc_threads_size,
            rpc_nic_name,
            rpc_use_public_address,
            rpc_message_logging_level,
            rpc_disable_tcp_nagle,
            rpc_backend_zookeeper,
            enable_rpc_reply_checker,
        })
    }
}

/// Narrows a value already range-checked to fit `T`.
fn narrow<T: TryFrom<u64>>(v: u64) -> T {
    T::try_from(v).unwrap_or_else(|_| unreachable!("range-checked value {v} does not fit"))
}

/// One ZooKeeper server address from `zookeeper_nodes`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ZookeeperNode {
    /// Host name or IP (an IPv6 address without its brackets).
    pub host: String,
    pub port: u16,
}

impl fmt::Display for ZookeeperNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Most ZooKeeper sessions one server may be asked to open (`zookeeper_client_count`).
pub const ZOOKEEPER_CLIENTS_MAX: u64 = 64;
/// Longest accepted `zookeeper_session_timeout_in_second` (one day).
pub const ZOOKEEPER_SESSION_TIMEOUT_SECONDS_MAX: u64 = 86_400;
/// Highest ZooKeeper C client log level (4 = debug).
pub const ZOOKEEPER_LOG_LEVEL_MAX: u64 = 4;

/// `ZookeeperClient`: the connection to the coordination service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZookeeperClient {
    /// The ensemble, parsed from iFun's comma-separated `host:port` list
    /// (`"10.0.0.1:2181,10.0.0.2:2181"`; IPv6 as `[::1]:2181`). Never empty.
    pub zookeeper_nodes: Vec<ZookeeperNode>,
    /// Sessions per server in iFun. Accepted (`1..=`[`ZOOKEEPER_CLIENTS_MAX`]) for
    /// compatibility; how many sessions the engine opens is the cluster module's choice.
    pub zookeeper_client_count: u64,
    /// Requested session timeout. The service clamps it (ZooKeeper's default bounds are
    /// 4 s to 40 s), so iFun's default of 60 s is granted as 40 s; see
    /// [`Coord::negotiated_timeout`](crate::env::Coord::negotiated_timeout).
    pub zookeeper_session_timeout_in_second: u64,
    /// ZooKeeper client library log level, 0 (off) to 4 (debug); the real backend maps it
    /// to its client's logging.
    pub zookeeper_log_level: u64,
}

impl Default for ZookeeperClient {
    fn default() -> Self {
        ZookeeperClient {
            zookeeper_nodes: vec![ZookeeperNode { host: "localhost".to_owned(), port: 2181 }],
            zookeeper_client_count: 4,
            zookeeper_session_timeout_in_second: 60,
            zookeeper_log_level: 1,
        }
    }
}

impl ZookeeperClient {
    pub(crate) const KEYS: &'static [&'static str] = &[
        "zookeeper_nodes",
        "zookeeper_client_count",
        "zookeeper_session_timeout_in_second",
        "zookeeper_log_level",
    ];

    /// The session timeout to request.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_secs(self.zookeeper_session_timeout_in_second)
    }

    /// The ensemble in iFun's (and ZooKeeper's) connect-string form.
    pub fn connect_string(&self) -> String {
        self.zookeeper_nodes.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    }

    pub(crate) fn parse(path: &str, v: &Value) -> Result<Self, ManifestError> {
        let f = Fields::new(path, v, Self::KEYS)?;
        let d = ZookeeperClient::default();
        let zookeeper_nodes = match f.opt_string("zookeeper_nodes")? {
            None => d.zookeeper_nodes,
            Some(s) => parse_nodes(&s)
                .map_err(|message| ManifestError::Invalid { path: f.path_of("zookeeper_nodes"), message })?,
        };
        Ok(ZookeeperClient {
            zookeeper_nodes,
            zookeeper_client_count: f.uint(
                "zookeeper_client_count",
                1..=ZOOKEEPER_CLIENTS_MAX,
                d.zookeeper_client_count,
            )?,
            zookeeper_session_timeout_in_second: f.uint(
                "zookeeper_session_timeout_in_second",
                1..=ZOOKEEPER_SESSION_TIMEOUT_SECONDS_MAX,
                d.zookeeper_session_timeout_in_second,
            )?,
            zookeeper_log_level: f.uint(
                "zookeeper_log_level",
                0..=ZOOKEEPER_LOG_LEVEL_MAX,
                d.zookeeper_log_level,
            )?,
        })
    }
}

/// Parses `host:port[,host:port...]`; the error message names the offending entry.
pub(crate) fn parse_nodes(s: &str) -> Result<Vec<ZookeeperNode>, String> {
    if s.trim().is_empty() {
        return Err("empty: expected a comma-separated list of host:port".to_owned());
    }
    s.split(',')
        .enumerate()
        .map(|(i, entry)| {
            parse_node(entry.trim()).map_err(|why| format!("entry {} ({entry:?}): {why}", i + 1))
        })
        .collect()
}

fn parse_node(entry: &str) -> Result<ZookeeperNode, String> {
    if entry.is_empty() {
        return Err("empty entry: expected host:port".to_owned());
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        let port = after.strip_prefix(':').ok_or("missing port: expected [ipv6]:port")?;
        (host, port)
    } else {
        let (host, port) = entry.rsplit_once(':').ok_or("missing port: expected host:port")?;
        if host.contains(':') {
            return Err("an IPv6 address must be in brackets: [addr]:port".to_owned());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("missing host: expected host:port".to_owned());
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("the host contains whitespace".to_owned());
    }
    let port = match port.parse::<u16>() {
        Ok(0) | Err(_) => return Err(format!("port {port:?} is not a number 1..=65535")),
        Ok(p) => p,
    };
    Ok(ZookeeperNode { host: host.to_owned(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: u16) -> ZookeeperNode {
        ZookeeperNode { host: host.to_owned(), port }
    }

    #[test]
    fn zookeeper_nodes_parse() {
        assert_eq!(parse_nodes("localhost:2181"), Ok(vec![node("localhost", 2181)]));
        assert_eq!(
            parse_nodes("10.0.0.1:2181, 10.0.0.2:2182 ,[::1]:2183"),
            Ok(vec![node("10.0.0.1", 2181), node("10.0.0.2", 2182), node("::1", 2183)])
        );
    }

    #[test]
    fn zookeeper_nodes_errors() {
        let cases = [
            ("", "empty: expected a comma-separated list of host:port"),
            ("a:1,,b:2", "entry 2 (\"\"): empty entry: expected host:port"),
            ("zk1", "entry 1 (\"zk1\"): missing port: expected host:port"),
            ("zk1:", "entry 1 (\"zk1:\"): port \"\" is not a number 1..=65535"),
            ("zk1:0", "entry 1 (\"zk1:0\"): port \"0\" is not a number 1..=65535"),
            ("zk1:70000", "entry 1 (\"zk1:70000\"): port \"70000\" is not a number 1..=65535"),
            (":2181", "entry 1 (\":2181\"): missing host: expected host:port"),
            ("::1:2181", "entry 1 (\"::1:2181\"): an IPv6 address must be in brackets: [addr]:port"),
            ("[::1:2181", "entry 1 (\"[::1:2181\"): unclosed '[' in IPv6 address"),
            ("[::1]2181", "entry 1 (\"[::1]2181\"): missing port: expected [ipv6]:port"),
            ("zk 1:2181", "entry 1 (\"zk 1:2181\"): the host contains whitespace"),
        ];
        for (input, want) in cases {
            assert_eq!(parse_nodes(input), Err(want.to_owned()), "input {input:?}");
        }
    }

    #[test]
    fn connect_string_round_trips() {
        let zk = ZookeeperClient {
            zookeeper_nodes: parse_nodes("a:1,[::1]:2").unwrap(),
            ..ZookeeperClient::default()
        };
        assert_eq!(zk.connect_string(), "a:1,[::1]:2");
        assert_eq!(parse_nodes(&zk.connect_string()).unwrap(), zk.zookeeper_nodes);
    }

    #[test]
    fn app_id_rules() {
        assert!(validate_app_id("p", "MyGame_1.0-beta").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "게임"] {
            assert!(validate_app_id("p", bad).is_err(), "{bad:?}");
        }
        assert!(validate_app_id("p", &"a".repeat(APP_ID_CHARS_MAX + 1)).is_err());
    }
}
