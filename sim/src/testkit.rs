//! Shared harness for madsim tests of engine modules (`sim/tests/*.rs`): the per-node `Env`
//! the runner builds, and running one simulation on a fresh OS thread.

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
