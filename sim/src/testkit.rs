//! Shared harness for madsim tests of engine modules (`sim/tests/*.rs`): the per-node `Env`
//! the runner builds, running one simulation on a fresh OS thread, and the small helpers on
//! madsim's simulated time those tests share (`sleep_ms`, `now_ms`, `eventually`).

use std::future::Future;
use std::time::Duration;

use madsim::runtime::{Handle, Runtime};

pub use crate::runner::{node_env, start_redis, start_zk, KV_COMMAND_TIMEOUT, REDIS_ADDR, ZK_ADDR};
pub use crate::sql::{sql_addr, sql_directory, sql_node_name, start_sql, SqlNode, DB_CALL_TIMEOUT};

/// Stack of a simulation thread (deep async state machines in debug builds).
const STACK_BYTES: usize = 32 * 1024 * 1024;

/// Runs `f` (which builds and drives a madsim runtime) on a fresh, named OS thread, with a
/// test-writer `tracing` subscriber honouring `RUST_LOG`, and returns its result; a panic
/// inside is resumed on the caller's thread.
///
/// Fresh thread because std's `HashMap` seeds its hasher once per thread, and madsim can only
/// make that seed deterministic on a thread that has not built a `HashMap` before (see
/// `docs/simulator.md`).
pub fn on_fresh_thread<T: Send + 'static>(seed: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name(format!("sim-seed-{seed}"))
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .finish();
            tracing::subscriber::with_default(subscriber, f)
        })
        .expect("spawn the simulation thread")
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Runs one simulation of `seed` on a fresh thread (see [`on_fresh_thread`]) and returns what
/// `f` returns: makes a madsim runtime with `seed` (default config), builds the test's world
/// with `world` from the runtime's handle (before the runtime runs: this is where the world
/// starts its nodes), then, inside the runtime, sleeps 10 ms of simulated time and runs
/// `f(world)`.
///
/// Why 10 ms: the service nodes the world started (ZooKeeper, Redis, ...) bind their ports in
/// their own init tasks, which have not run yet when `f` would start; 10 ms lets them bind
/// before the first connect.
pub fn simulate<W, T, Fut>(
    seed: u64,
    world: impl FnOnce(Handle) -> W + Send + 'static,
    f: impl FnOnce(W) -> Fut + Send + 'static,
) -> T
where
    T: Send + 'static,
    Fut: Future<Output = T>,
{
    on_fresh_thread(seed, move || {
        let rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
        let world = world(rt.handle().clone());
        rt.block_on(async move {
            sleep_ms(10).await; // let the service nodes bind their ports
            f(world).await
        })
    })
}

/// Sleeps `ms` milliseconds of simulated (madsim) time.
pub fn sleep_ms(ms: u64) -> impl Future<Output = ()> {
    madsim::time::sleep(Duration::from_millis(ms))
}

/// Simulated (madsim) milliseconds since the simulation started. Not any node's `Env` clock,
/// which the simulator may skew, jump or drift per node.
pub fn now_ms() -> u64 {
    madsim::time::TimeHandle::current().elapsed().as_millis() as u64
}

/// Polls `cond` every 50 ms of simulated time for at most `within`; true once it holds, false
/// if it still does not at the deadline. [`eventually_every`] with a period of 50 ms.
pub async fn eventually(within: Duration, cond: impl FnMut() -> bool) -> bool {
    eventually_every(Duration::from_millis(50), within, cond).await
}

/// Polls `cond` every `period` of simulated time for at most `within`; true once it holds, false
/// if it still does not at the deadline. It checks first and sleeps after, so a condition that
/// already holds costs no time.
pub async fn eventually_every(period: Duration, within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = madsim::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if madsim::time::Instant::now() >= deadline {
            return false;
        }
        madsim::time::sleep(period).await;
    }
}
