//! madsim implementations of the engine's ports, and the per-run controls the fault
//! injector turns (clock faults).

pub mod clock;
pub mod net;
pub mod rand;
pub mod spawn;

pub use self::clock::{ClockControl, ClockState, SimClock};
pub use self::net::SimNet;
pub use self::rand::{NodeRand, SimRand};
pub use self::spawn::SimSpawn;
