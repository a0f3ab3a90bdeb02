//! tokio implementations of the engine's ports, the real ZooKeeper, Redis and SQL (SQLite,
//! MariaDB: [`db`]) clients, and the client-port listeners (TCP and WebSocket) of the session
//! service.

mod client_ports;
mod clock;
pub mod db;
mod net;
mod rand;
mod redis;
mod spawn;
mod ws;
mod zk;

pub use self::client_ports::RealClientListeners;
pub use self::clock::{
    follow_clock_control, parse_clock_control, ClockControlError, ClockFaults, TokioClock,
};
pub use self::db::{
    open_db, open_db_with, DbOptions, FastPathCounts, MariaDb, SqliteDb, DB_CALL_TIMEOUT, DB_CONNECT_TIMEOUT,
    MARIADB_WRITE_CONCURRENCY,
};
pub(crate) use self::net::bind_listener;
pub use self::net::TokioNet;
pub use self::net::LISTEN_BACKLOG;
pub use self::rand::OsRand;
pub use self::redis::{RedisKv, RedisKvOptions};
pub use self::spawn::TokioSpawn;
pub use self::ws::{
    WebSocketListener, WsOptions, WS_CLOSE_TIMEOUT, WS_CONTROL_FRAMES_PER_SECOND_MAX, WS_HANDSHAKE_TIMEOUT,
    WS_MAX_PENDING_HANDSHAKES, WS_MAX_PENDING_HANDSHAKES_PER_ADDRESS, WS_WRITE_BUFFER_BYTES,
};
pub use self::zk::{ZkConnector, ZkCoord};
