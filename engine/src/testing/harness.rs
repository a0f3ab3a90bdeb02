//! [`Harness`]: one manual clock, one executor and one in-memory ZooKeeper and Redis shared
//! by any number of nodes' [`Env`]s, stepped like quinn's test pair.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;

use super::clock::ManualClock;
use super::coord::FakeZk;
use super::exec::Executor;
use super::kv::FakeKv;
use super::net::NoNet;
use super::rand::SeedRand;
use crate::env::{lock, Clock, DbInstances, Env, MonoTime};

/// Most deadline jumps [`Harness::block_on`] makes before it gives up: a future still pending
/// after that many is waiting on a retry loop that never ends.
pub const BLOCK_ON_STEPS_MAX: usize = 10_000;

/// A deterministic world for I/O-free unit tests.
///
/// Method groups:
/// - **setup**: [`Harness::new`], [`Harness::env`] (one per node; all share the clock,
///   executor, ZooKeeper and Redis, each gets its own seeded `Rand`);
/// - **driving**: [`run_until_stalled`](Harness::run_until_stalled) (run everything runnable
///   at the current instant), [`advance_to_next_deadline`](Harness::advance_to_next_deadline)
///   (jump time to the next sleep or session expiry), [`step`](Harness::step) (both, capped),
///   [`advance`](Harness::advance) (run through a span of time), [`block_on`](Harness::block_on)
///   (drive until one future finishes);
/// - **faults**: on the public [`zk`](Harness::zk) and [`kv`](Harness::kv) fakes.
pub struct Harness {
    pub clock: ManualClock,
    pub exec: Executor,
    pub zk: FakeZk,
    pub kv: FakeKv,
    seed: u64,
    nodes: Mutex<u64>,
}

impl Harness {
    /// A fresh world; `seed` decides every node's randomness.
    pub fn new(seed: u64) -> Self {
        let clock = ManualClock::new();
        Harness {
            zk: FakeZk::new(clock.clone()),
            kv: FakeKv::new(clock.clone()),
            exec: Executor::new(),
            clock,
            seed,
            nodes: Mutex::new(0),
        }
    }

    /// The ports of a node named `node`: the shared clock, executor, ZooKeeper and Redis, no
    /// network, and a `Rand` seeded from the harness seed and the node's number.
    pub fn env(&self, node: &str) -> Env {
        let n = {
            let mut nodes = lock(&self.nodes);
            *nodes += 1;
            *nodes
        };
        Env {
            node: node.into(),
            clock: Arc::new(self.clock.clone()),
            rand: Arc::new(SeedRand::new(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))),
            spawn: self.exec.spawner(),
            net: Arc::new(NoNet),
            coord: Arc::new(self.zk.clone()),
            kv: Arc::new(self.kv.clone()),
            db: Arc::new(DbInstances::empty()),
        }
    }

    pub fn now(&self) -> MonoTime {
        self.clock.now()
    }

    /// Runs every task that can make progress at the current instant (letting ZooKeeper
    /// expire what is due) until all wait for time or an event. Returns the polls made.
    pub fn run_until_stalled(&self) -> usize {
        let mut total = 0;
        loop {
            self.zk.tick();
            let polls = self.exec.run_until_stalled();
            if polls == 0 {
                return total;
            }
            total += polls;
        }
    }

    /// The next instant something is due: a sleep ends or a silent session expires.
    pub fn next_deadline(&self) -> Option<MonoTime> {
        match (self.clock.next_deadline(), self.zk.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Jumps to the next deadline and runs what it unblocks. False if nothing is due ever.
    pub fn advance_to_next_deadline(&self) -> bool {
        let Some(t) = self.next_deadline() else { return false };
        self.clock.advance_to(t);
        self.run_until_stalled();
        true
    }

    /// Runs and jumps from deadline to deadline at most `steps_max` times; returns the jumps
    /// made (fewer if nothing was due any more).
    pub fn step(&self, steps_max: usize) -> usize {
        self.run_until_stalled();
        for jumps in 0..steps_max {
            if !self.advance_to_next_deadline() {
                return jumps;
            }
        }
        steps_max
    }

    /// Runs everything due within the next `d`, deadline by deadline, and ends at `now + d`.
    pub fn advance(&self, d: Duration) {
        let target = self.now().saturating_add(d);
        self.run_until_stalled();
        while let Some(t) = self.next_deadline().filter(|t| *t <= target) {
            self.clock.advance_to(t);
            self.run_until_stalled();
        }
        self.clock.advance_to(target);
        self.run_until_stalled();
    }

    /// Drives the world until `fut` finishes, jumping time as needed; returns its output.
    ///
    /// # Panics
    /// If `fut` is still pending when nothing is due any more (it waits for something that
    /// cannot happen), or after [`BLOCK_ON_STEPS_MAX`] jumps.
    pub fn block_on<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let out = Arc::new(Mutex::new(None));
        let slot = out.clone();
        let _task =
            self.exec.spawner().spawn("block_on", async move { *lock(&slot) = Some(fut.await) }.boxed());
        self.run_until_stalled();
        for _ in 0..BLOCK_ON_STEPS_MAX {
            if let Some(v) = lock(&out).take() {
                return v;
            }
            assert!(
                self.advance_to_next_deadline(),
                "block_on: the future waits for something that never comes"
            );
        }
        panic!("block_on: still pending after {BLOCK_ON_STEPS_MAX} deadline jumps");
    }
}
