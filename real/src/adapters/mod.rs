//! tokio implementations of the engine's ports.

mod clock;
mod net;
mod rand;
mod spawn;

pub use self::clock::TokioClock;
pub use self::net::TokioNet;
pub use self::rand::OsRand;
pub use self::spawn::TokioSpawn;
