//! Simulated clocks with per-node faults.
//!
//! Fault model: every node reads the one simulated time, but through its own lens:
//! - **drift**: the node's monotonic clock runs at `1 + drift_ppm / 1e6` of simulated time
//!   (sleeps last correspondingly longer or shorter in simulated time);
//! - **skew / jumps**: the node's wall clock is its monotonic clock plus an offset that the
//!   fault injector can set or jump at any moment (forwards or backwards).
//!
//! Nothing outside the simulation sees these clocks; all state lives in one
//! [`ClockControl`] per run (no globals, so seeds never leak into each other).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::env::{Clock, MonoTime, WallTime};
use futures::future::BoxFuture;
use futures::FutureExt;

/// Wall-clock origin of every simulated run: 2026-01-01T00:00:00Z. Fixed (rather than drawn
/// from the seed) so traces of different seeds line up when read side by side.
pub const SIM_EPOCH_UNIX_MS: i64 = 1_767_225_600_000;

/// The clock lens of one node.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ClockState {
    /// Wall-clock offset from true simulated time, in milliseconds (skew; jumps add to it).
    pub wall_offset_ms: i64,
    /// Monotonic rate error in parts per million (positive = fast).
    pub drift_ppm: i64,
    /// Local monotonic reading at `anchor_sim` (re-anchored whenever the drift changes).
    anchor_local_ns: u64,
    /// Simulated elapsed time at the anchor.
    anchor_sim_ns: u64,
}

/// Per-run registry of node clocks, shared by every node's [`SimClock`] and by the injector.
#[derive(Clone, Default)]
pub struct ClockControl {
    nodes: Arc<Mutex<BTreeMap<String, Arc<Mutex<ClockState>>>>>,
}

fn with_cell<T>(cell: &Mutex<ClockState>, f: impl FnOnce(&mut ClockState) -> T) -> T {
    f(&mut cell.lock().expect("clock cell poisoned"))
}

fn sim_elapsed_ns() -> u64 {
    u64::try_from(madsim::time::TimeHandle::current().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl ClockControl {
    pub fn new() -> Self {
        Self::default()
    }

    /// The clock cell of `node`, made on first use. A [`SimClock`] keeps its node's cell, so
    /// a clock read locks only that cell and never searches the registry by name (the
    /// search was 4% of a scenario's instructions; issue 19).
    fn cell(&self, node: &str) -> Arc<Mutex<ClockState>> {
        let mut nodes = self.nodes.lock().expect("clock registry poisoned");
        match nodes.get(node) {
            Some(cell) => cell.clone(),
            None => nodes.entry(node.to_string()).or_default().clone(),
        }
    }

    fn with<T>(&self, node: &str, f: impl FnOnce(&mut ClockState) -> T) -> T {
        with_cell(&self.cell(node), f)
    }

    fn local_ns(state: &ClockState, sim_ns: u64) -> u64 {
        let dt = sim_ns.saturating_sub(state.anchor_sim_ns) as i128;
        let scaled = dt + dt * i128::from(state.drift_ppm) / 1_000_000;
        state.anchor_local_ns.saturating_add(scaled.max(0) as u64)
    }

    /// The node's monotonic reading now.
    pub fn mono_ns(&self, node: &str) -> u64 {
        Self::cell_mono_ns(&self.cell(node))
    }

    fn cell_mono_ns(cell: &Mutex<ClockState>) -> u64 {
        let sim = sim_elapsed_ns();
        with_cell(cell, |s| Self::local_ns(s, sim))
    }

    /// The node's wall clock now.
    pub fn wall_ms(&self, node: &str) -> i64 {
        Self::cell_wall_ms(&self.cell(node))
    }

    fn cell_wall_ms(cell: &Mutex<ClockState>) -> i64 {
        let sim = sim_elapsed_ns();
        with_cell(cell, |s| {
            let local_ms = (Self::local_ns(s, sim) / 1_000_000) as i64;
            SIM_EPOCH_UNIX_MS + local_ms + s.wall_offset_ms
        })
    }

    /// How much simulated time a local sleep of `d` takes on `node`.
    pub fn sim_duration(&self, node: &str, d: Duration) -> Duration {
        Self::cell_sim_duration(&self.cell(node), d)
    }

    fn cell_sim_duration(cell: &Mutex<ClockState>, d: Duration) -> Duration {
        let ppm = with_cell(cell, |s| s.drift_ppm);
        let ns = d.as_nanos() as i128;
        let sim = ns * 1_000_000 / (1_000_000 + i128::from(ppm)).max(1);
        Duration::from_nanos(sim.clamp(0, u64::MAX as i128) as u64)
    }

    /// Sets the wall-clock skew of `node` (replacing any earlier skew or jumps).
    pub fn set_skew(&self, node: &str, offset_ms: i64) {
        self.with(node, |s| s.wall_offset_ms = offset_ms);
    }

    /// Jumps the wall clock of `node` by `delta_ms` (negative = backwards).
    pub fn jump(&self, node: &str, delta_ms: i64) {
        self.with(node, |s| s.wall_offset_ms += delta_ms);
    }

    /// Sets the monotonic drift of `node`; the clock stays continuous.
    pub fn set_drift(&self, node: &str, drift_ppm: i64) {
        let sim = sim_elapsed_ns();
        self.with(node, |s| {
            s.anchor_local_ns = Self::local_ns(s, sim);
            s.anchor_sim_ns = sim;
            s.drift_ppm = drift_ppm;
        });
    }

    /// Removes every skew and drift (the heal phase); clocks stay monotonic.
    pub fn heal_all(&self) {
        let names: Vec<String> =
            self.nodes.lock().expect("clock registry poisoned").keys().cloned().collect();
        for n in names {
            self.set_drift(&n, 0);
            self.set_skew(&n, 0);
        }
    }

    /// Current lens of `node` (for traces and tests).
    pub fn state(&self, node: &str) -> ClockState {
        self.with(node, |s| *s)
    }
}

/// The `Clock` port of one simulated node.
#[derive(Clone)]
pub struct SimClock {
    /// This node's lens in the run's [`ClockControl`] (the injector changes it there).
    cell: Arc<Mutex<ClockState>>,
}

impl SimClock {
    pub fn new(node: impl Into<Arc<str>>, control: ClockControl) -> Self {
        let node: Arc<str> = node.into();
        SimClock { cell: control.cell(&node) }
    }
}

impl Clock for SimClock {
    fn now(&self) -> MonoTime {
        MonoTime(ClockControl::cell_mono_ns(&self.cell))
    }

    fn wall_now(&self) -> WallTime {
        WallTime(ClockControl::cell_wall_ms(&self.cell))
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        let sim = ClockControl::cell_sim_duration(&self.cell, d);
        OnceRegisteredSleep::new(madsim::time::sleep(sim)).boxed()
    }
}

/// A madsim sleep that registers its timer once per waker.
///
/// madsim's `Sleep::poll` adds a new timer to the runtime's heap on *every* pending poll, and
/// the entry stays until the deadline. A sleep raced against other work (an RPC timeout in a
/// `select`, a heartbeat beside a socket read) is polled on every wake of its task, so the
/// heap grew with the number of wakes inside the timeout window: with 16 RPC calls in flight
/// each call cost five times what it cost alone (issue 19). This wrapper polls the inner
/// sleep only the first time and when the task's waker changes; the one timer it registered
/// wakes the task at the deadline either way. Simulated time and what wakes when are
/// unchanged; only the duplicate heap entries (and their spurious wakes at the deadline)
/// are gone.
struct OnceRegisteredSleep {
    inner: madsim::time::Sleep,
    /// The waker the inner sleep's timer will wake, if it registered one.
    registered: Option<std::task::Waker>,
}

impl OnceRegisteredSleep {
    fn new(inner: madsim::time::Sleep) -> Self {
        OnceRegisteredSleep { inner, registered: None }
    }
}

impl std::future::Future for OnceRegisteredSleep {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.inner.is_elapsed() {
            return std::task::Poll::Ready(());
        }
        if self.registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return std::task::Poll::Pending;
        }
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll(cx);
        this.registered = Some(cx.waker().clone());
        polled
    }
}
