//! tokio implementations of the engine's ports, and the real ZooKeeper and Redis clients.

mod clock;
mod net;
mod rand;
mod redis;
mod spawn;
mod zk;

pub use self::clock::TokioClock;
pub use self::net::TokioNet;
pub use self::rand::OsRand;
pub use self::redis::{RedisKv, RedisKvOptions};
pub use self::spawn::TokioSpawn;
pub use self::zk::{ZkConnector, ZkCoord};
