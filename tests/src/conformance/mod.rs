//! The sim-vs-real conformance suite (issues 6 and 13): one set of cases written against the
//! ports (`Coord`, `Kv`, `Db`), run against the simulated services under madsim and against
//! private real ZooKeeper 3.8 / Redis 7 / MariaDB and a SQLite file through the real
//! adapters; each run yields a normalised transcript and the two are diffed. A SQL case is
//! run twice: simulated SQL node vs SQLite, and vs MariaDB.
//!
//! - [`ops`]: what a case is (clients, steps, scripted time steps);
//! - [`gen`]: seeded generation of cases and greedy shrinking of diverging ones; [`gen_db`]:
//!   the SQL cases;
//! - [`fixed`]: the scripted cases (semantics and time-dependent behaviour); [`fixed_db`]:
//!   the scripted SQL cases;
//! - [`exec`]: runs a case through the ports and writes its transcript ([`exec_db`]: SQL);
//! - [`transcript`]: normalisation (session ids, zxids, times, TTLs);
//! - [`sim_backend`] / [`real_backend`]: the two worlds;
//! - [`diff`]: comparing transcripts.
//!
//! The `conformance` binary (`cargo run -p tests --release --bin conformance -- --cases N`)
//! runs N generated cases plus the fixed ones; `tests/tests/conformance.rs` runs the fixed
//! ones and a few generated ones under `cargo test`.

pub mod diff;
pub mod exec;
pub mod exec_db;
pub mod fixed;
pub mod fixed_db;
pub mod gen;
pub mod gen_db;
pub mod ops;
pub mod real_backend;
pub mod sim_backend;
pub mod transcript;

use self::diff::Divergence;
use self::ops::Case;
use self::real_backend::{RealBackend, Services};
use self::transcript::Transcript;

/// Both transcripts of one run of a case.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub sim: Transcript,
    pub real: Transcript,
    pub divergence: Option<Divergence>,
}

/// A run's real services plus the tokio runtime that drives them.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub real: RealBackend,
}

impl Harness {
    /// Starts private ZooKeeper and/or Redis and connects the shared clients.
    pub fn start(zk: bool, redis: bool) -> anyhow::Result<Harness> {
        Self::start_services(Services { zk, redis, ..Services::default() })
    }

    /// Starts the private services wanted (and the SQLite file) and connects the clients.
    pub fn start_services(services: Services) -> anyhow::Result<Harness> {
        let mut real = RealBackend::start(services)?;
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
        rt.block_on(real.connect())?;
        Ok(Harness { rt, real })
    }

    /// Runs `case` on both backends at once (the simulation on its own thread) and diffs.
    /// `sim_seed` seeds the madsim runtime.
    pub fn check(&self, case: &Case, sim_seed: u64) -> Outcome {
        let prefix = self.real.fresh_prefix(case.service);
        let (sim, real) = std::thread::scope(|s| {
            let sim = s.spawn(|| sim_backend::run(case, &prefix, sim_seed));
            let real = self.rt.block_on(self.real.run(case, &prefix));
            (sim.join().expect("sim thread"), real)
        });
        let divergence = diff::diff(&sim, &real);
        Outcome { sim, real, divergence }
    }
}
