//! The manifest's `SessionService` section -> one [`SessionConfig`] per enabled port.
//!
//! iFun's port keys are kept (`tcp_json_port`, `tcp_protobuf_port`, and Sandtable's
//! `websocket_json_port`; 0 = off). iFun's UDP and HTTP transports are not implemented: a
//! non-zero `udp_*_port` or `http_*_port` is an error rather than a port that silently never
//! opens. Sandtable's own knobs (`max_frame_bytes`, `idle_timeout_in_second`,
//! `heartbeat_interval_in_second`, `send_queue_max`, `send_queue_bytes_max`) apply to every
//! port; `session_memory_max_bytes`, `unauthenticated_max` and
//! `unauthenticated_per_address_max` to the service as a whole ([`service_limits`]).
//!
//! ```json
//! "SessionService": { "tcp_json_port": 8012, "tcp_protobuf_port": 8022, "websocket_json_port": 0 }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::{
    ServiceLimits, SessionConfig, Transport, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_FRAME_BYTES, DEFAULT_SEND_QUEUE_BYTES_MAX, DEFAULT_SEND_QUEUE_MAX, MIN_FRAME_BYTES,
    SESSION_BASE_BYTES,
};
use crate::manifest::reader::Fields;
use crate::manifest::{Manifest, ManifestError};

/// The manifest section this module reads.
pub const SECTION: &str = "SessionService";

/// Default `tcp_json_port` (iFun's).
pub const TCP_JSON_PORT_DEFAULT: u16 = 8012;

const PORT_KEYS: [(&str, Transport); 3] = [
    ("tcp_json_port", Transport::TcpJson),
    ("tcp_protobuf_port", Transport::TcpProtobuf),
    ("websocket_json_port", Transport::WebSocketJson),
];
const UNSUPPORTED_PORT_KEYS: [&str; 4] =
    ["udp_json_port", "http_json_port", "udp_protobuf_port", "http_protobuf_port"];
const KNOB_KEYS: [&str; 5] = [
    "max_frame_bytes",
    "idle_timeout_in_second",
    "heartbeat_interval_in_second",
    "send_queue_max",
    "send_queue_bytes_max",
];
const SERVICE_KEYS: [&str; 3] =
    ["session_memory_max_bytes", "unauthenticated_max", "unauthenticated_per_address_max"];

/// Largest accepted `send_queue_bytes_max` and `session_memory_max_bytes` (64 GiB).
pub const MEMORY_BYTES_LIMIT: u64 = 64 * 1024 * 1024 * 1024;
/// Largest accepted `unauthenticated_max` / `unauthenticated_per_address_max`.
pub const UNAUTHENTICATED_LIMIT: u64 = 1_000_000;

/// Largest accepted `max_frame_bytes` (64 MiB): far above any game message, small enough
/// that one frame cannot exhaust a server.
pub const MAX_FRAME_BYTES_LIMIT: u64 = 64 * 1024 * 1024;

/// The session ports of a loaded manifest, listening on `ip` (the server's bind address),
/// in the order tcp_json, tcp_protobuf, websocket_json. Without a section: one TCP JSON port
/// on iFun's default 8012.
pub fn session_configs(m: &Manifest, ip: IpAddr) -> Result<Vec<SessionConfig>, ManifestError> {
    let Some(v) = m.section(SECTION) else {
        return Ok(vec![SessionConfig::new(SocketAddr::new(ip, TCP_JSON_PORT_DEFAULT), Transport::TcpJson)]);
    };
    let f = Fields::new(SECTION, v, &section_keys())?;
    for key in UNSUPPORTED_PORT_KEYS {
        if f.uint(key, 0..=u64::from(u16::MAX), 0)? != 0 {
            return Err(ManifestError::Invalid {
                path: f.path_of(key),
                message: "UDP and HTTP client transports are not supported; set it to 0 or remove it"
                    .to_owned(),
            });
        }
    }
    let max_frame_bytes = f.uint(
        "max_frame_bytes",
        MIN_FRAME_BYTES as u64..=MAX_FRAME_BYTES_LIMIT,
        DEFAULT_MAX_FRAME_BYTES as u64,
    )?;
    let idle = f.uint("idle_timeout_in_second", 1..=86_400, DEFAULT_IDLE_TIMEOUT.as_secs())?;
    let heartbeat =
        f.uint("heartbeat_interval_in_second", 0..=86_400, DEFAULT_HEARTBEAT_INTERVAL.as_secs())?;
    if heartbeat >= idle {
        return Err(ManifestError::Invalid {
            path: f.path_of("heartbeat_interval_in_second"),
            message: format!("must be shorter than idle_timeout_in_second ({idle}); 0 turns pings off"),
        });
    }
    let send_queue_max = f.uint("send_queue_max", 1..=1_000_000, DEFAULT_SEND_QUEUE_MAX as u64)?;
    let send_queue_bytes_max = f.uint(
        "send_queue_bytes_max",
        max_frame_bytes..=MEMORY_BYTES_LIMIT,
        (DEFAULT_SEND_QUEUE_BYTES_MAX as u64).max(max_frame_bytes),
    )?;
    let mut out = Vec::new();
    let mut used = Vec::new();
    for (key, transport) in PORT_KEYS {
        let default = if transport == Transport::TcpJson { TCP_JSON_PORT_DEFAULT } else { 0 };
        let port = u16::try_from(f.uint(key, 0..=u64::from(u16::MAX), u64::from(default))?).unwrap_or(0);
        if port == 0 {
            continue;
        }
        if let Some((other, _)) = used.iter().find(|(_, p)| *p == port) {
            return Err(ManifestError::Invalid {
                path: f.path_of(key),
                message: format!("port {port} is already used by {other}"),
            });
        }
        used.push((key, port));
        let mut cfg = SessionConfig::new(SocketAddr::new(ip, port), transport);
        cfg.max_frame_bytes = usize::try_from(max_frame_bytes).unwrap_or(DEFAULT_MAX_FRAME_BYTES);
        cfg.idle_timeout = Duration::from_secs(idle);
        cfg.heartbeat_interval = (heartbeat > 0).then(|| Duration::from_secs(heartbeat));
        cfg.send_queue_max = usize::try_from(send_queue_max).unwrap_or(DEFAULT_SEND_QUEUE_MAX);
        cfg.send_queue_bytes_max = usize::try_from(send_queue_bytes_max).unwrap_or(usize::MAX);
        out.push(cfg);
    }
    Ok(out)
}

fn section_keys() -> Vec<&'static str> {
    PORT_KEYS
        .iter()
        .map(|(k, _)| *k)
        .chain(UNSUPPORTED_PORT_KEYS)
        .chain(KNOB_KEYS)
        .chain(SERVICE_KEYS)
        .collect()
}

/// The service-wide limits of a loaded manifest's `SessionService` section (defaults without
/// it): `session_memory_max_bytes` (at least one session's [`SESSION_BASE_BYTES`]),
/// `unauthenticated_max`, `unauthenticated_per_address_max` (at least 1).
pub fn service_limits(m: &Manifest) -> Result<ServiceLimits, ManifestError> {
    let d = ServiceLimits::default();
    let Some(v) = m.section(SECTION) else { return Ok(d) };
    let f = Fields::new(SECTION, v, &section_keys())?;
    let size = |key: &str, lo: u64, hi: u64, default: usize| -> Result<usize, ManifestError> {
        Ok(usize::try_from(f.uint(key, lo..=hi, default as u64)?).unwrap_or(usize::MAX))
    };
    Ok(ServiceLimits {
        memory_max: size(
            "session_memory_max_bytes",
            SESSION_BASE_BYTES as u64,
            MEMORY_BYTES_LIMIT,
            d.memory_max,
        )?,
        unauthenticated_max: size("unauthenticated_max", 1, UNAUTHENTICATED_LIMIT, d.unauthenticated_max)?,
        unauthenticated_per_address_max: size(
            "unauthenticated_per_address_max",
            1,
            UNAUTHENTICATED_LIMIT,
            d.unauthenticated_per_address_max,
        )?,
    })
}

/// The unspecified address (`0.0.0.0`): listen on every interface, what servers usually bind.
pub const ANY_IP: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use super::*;

    fn load(section: &str) -> Result<Vec<SessionConfig>, ManifestError> {
        let text = format!(r#"{{"AppInfo": {{"app_id": "g"}}, "SessionService": {section}}}"#);
        session_configs(&Manifest::load(&text, None).unwrap(), ANY_IP)
    }

    #[test]
    fn ports_map_to_transports() {
        let v = load(r#"{"tcp_json_port": 8012, "tcp_protobuf_port": 8022, "websocket_json_port": 8032, "idle_timeout_in_second": 20, "heartbeat_interval_in_second": 5}"#).unwrap();
        let got: Vec<(u16, Transport)> = v.iter().map(|c| (c.listen.port(), c.transport)).collect();
        assert_eq!(
            got,
            vec![
                (8012, Transport::TcpJson),
                (8022, Transport::TcpProtobuf),
                (8032, Transport::WebSocketJson)
            ]
        );
        assert!(v.iter().all(|c| c.idle_timeout == Duration::from_secs(20)
            && c.heartbeat_interval == Some(Duration::from_secs(5))));
        // iFun's section with the unsupported ports at 0 is fine; tcp_json defaults to 8012.
        let v = load(r#"{"udp_json_port": 0, "http_json_port": 0, "tcp_protobuf_port": 0}"#).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].listen.port(), 8012);
        assert!(load(r#"{"tcp_json_port": 0}"#).unwrap().is_empty());
    }

    #[test]
    fn bad_sections_name_the_key() {
        let msg = |s: &str| load(s).unwrap_err().to_string();
        assert!(msg(r#"{"udp_json_port": 9000}"#).contains("SessionService.udp_json_port"));
        assert!(msg(r#"{"tcp_json_port": "8012"}"#).contains("SessionService.tcp_json_port"));
        assert!(msg(r#"{"tcp_json_port": 70000}"#).contains("0..=65535"));
        assert!(msg(r#"{"tcp_jsn_port": 1}"#).contains("tcp_json_port"));
        assert!(msg(r#"{"tcp_json_port": 9000, "websocket_json_port": 9000}"#).contains("already used"));
        assert!(msg(r#"{"idle_timeout_in_second": 5, "heartbeat_interval_in_second": 5}"#)
            .contains("heartbeat_interval_in_second"));
        assert!(msg(r#"{"max_frame_bytes": 10}"#).contains("max_frame_bytes"));
    }

    #[test]
    fn memory_limits_are_read_and_checked_against_the_frame_size() {
        let v = load(r#"{"max_frame_bytes": 65536, "send_queue_bytes_max": 131072}"#).unwrap();
        assert_eq!(v[0].send_queue_bytes_max, 131_072);
        let v = load(r#"{"max_frame_bytes": 8388608}"#).unwrap();
        assert_eq!(v[0].send_queue_bytes_max, 8_388_608, "the default grows to one largest frame");
        let e = load(r#"{"max_frame_bytes": 65536, "send_queue_bytes_max": 1024}"#).unwrap_err().to_string();
        assert!(e.contains("SessionService.send_queue_bytes_max") && e.contains("65536.."), "{e}");
    }

    #[test]
    fn service_limits_default_and_parse() {
        let limits = |section: &str| {
            let text = format!(r#"{{"AppInfo": {{"app_id": "g"}}, "SessionService": {section}}}"#);
            service_limits(&Manifest::load(&text, None).unwrap())
        };
        assert_eq!(limits("{}").unwrap(), ServiceLimits::default());
        let l = limits(
            r#"{"session_memory_max_bytes": 1048576, "unauthenticated_max": 10, "unauthenticated_per_address_max": 2}"#,
        )
        .unwrap();
        assert_eq!(
            (l.memory_max, l.unauthenticated_max, l.unauthenticated_per_address_max),
            (1_048_576, 10, 2)
        );
        assert!(limits(r#"{"unauthenticated_max": 0}"#)
            .unwrap_err()
            .to_string()
            .contains("unauthenticated_max"));
        assert!(limits(r#"{"session_memory_max_bytes": 100}"#)
            .unwrap_err()
            .to_string()
            .contains("session_memory_max_bytes"));
    }
}
