//! What a charted run records as it goes: every framed connection and frame (by the `Net`
//! adapter), every node incarnation (by the runner), every fault applied, skipped and repaired
//! (by the injector), all stamped with true simulated time.
//!
//! Recording only reads madsim's clock: it draws no randomness, emits no `tracing` event and
//! adds no await point, so a charted run is the same run as an uncharted one (same trace
//! hash). Uncharted runs (sweeps) have no tap at all and pay nothing.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use scenarios::faults::Fault;

/// At most this many frames are recorded per run; later ones are only counted (the chart says
/// how many). A 23-second scenario sends some tens of thousands.
pub const FRAMES_RECORDED_MAX: usize = 1_000_000;

/// True simulated time since the start of the run, ns (the runner's and the histories' clock).
fn now_ns() -> u64 {
    madsim::time::TimeHandle::try_current()
        .map(|h| u64::try_from(h.elapsed().as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// One side of a framed connection, as one node saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnRecord {
    pub node: String,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// This side accepted it (else it connected).
    pub accepted: bool,
    pub opened_ns: u64,
}

/// One frame sent or received on a connection side ([`ConnRecord`] index `conn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRecord {
    pub conn: usize,
    pub sent: bool,
    /// Position among the frames this side sent (or received) on the connection.
    pub seq: u64,
    pub at_ns: u64,
    pub bytes: usize,
}

/// A fault-injector event.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultEvent {
    /// Plan entry `index` took effect.
    Applied {
        index: usize,
        fault: Fault,
        duration_ms: u64,
    },
    /// Plan entry `fault` was skipped (its node was already down).
    Skipped {
        fault: Fault,
    },
    /// Plan entry `index` was repaired at the end of its duration.
    Repaired {
        index: usize,
    },
    Restarted {
        node: String,
    },
    Resumed {
        node: String,
    },
    /// Every fault repaired (the start of the heal phase).
    Healed,
}

/// Everything recorded, in recording (= simulated time) order.
#[derive(Debug, Default, Clone)]
pub struct ChartLog {
    pub conns: Vec<ConnRecord>,
    pub frames: Vec<FrameRecord>,
    /// Frames not recorded because of [`FRAMES_RECORDED_MAX`].
    pub frames_unrecorded: u64,
    /// `(node, process, started_ns)` of every server and client incarnation.
    pub incarnations: Vec<(String, u64, u64)>,
    pub faults: Vec<(u64, FaultEvent)>,
}

/// Where a charted run's recorders write; cheap to clone into every node.
#[derive(Debug, Clone, Default)]
pub struct ChartTap {
    log: Arc<Mutex<ChartLog>>,
}

impl ChartTap {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut ChartLog) -> T) -> T {
        f(&mut engine::env::lock(&self.log))
    }

    /// A copy of everything recorded so far.
    pub fn log(&self) -> ChartLog {
        self.with(|l| l.clone())
    }

    /// Records a new connection side; returns its index for [`ChartTap::frame`].
    pub fn open(&self, node: &str, local: SocketAddr, peer: SocketAddr, accepted: bool) -> usize {
        let opened_ns = now_ns();
        self.with(|l| {
            l.conns.push(ConnRecord { node: node.to_string(), local, peer, accepted, opened_ns });
            l.conns.len() - 1
        })
    }

    /// Records frame `seq` of `bytes` sent (or received) on connection side `conn`.
    pub fn frame(&self, conn: usize, sent: bool, seq: u64, bytes: usize) {
        let at_ns = now_ns();
        self.with(|l| {
            if l.frames.len() < FRAMES_RECORDED_MAX {
                l.frames.push(FrameRecord { conn, sent, seq, at_ns, bytes });
            } else {
                l.frames_unrecorded += 1;
            }
        })
    }

    /// Records that `node` started an incarnation with process id `process`.
    pub fn incarnation(&self, node: &str, process: u64) {
        let at = now_ns();
        self.with(|l| l.incarnations.push((node.to_string(), process, at)));
    }

    /// Records a fault-injector event.
    pub fn fault(&self, event: FaultEvent) {
        let at = now_ns();
        self.with(|l| l.faults.push((at, event)));
    }
}

/// A node's handle on the tap: what its `Net` adapter records under.
#[derive(Debug, Clone)]
pub struct NodeTap {
    pub node: String,
    pub tap: ChartTap,
}
