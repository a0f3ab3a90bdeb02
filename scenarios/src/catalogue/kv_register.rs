//! `kv_register`: clients read, write and compare-and-set a few registers on the `Kv` port
//! while the network, the Redis node and the clients' clocks misbehave.
//!
//! Invariant: per-key linearizability of the register/CAS history (an `info` outcome may or
//! may not have taken effect), including a final read of every key after the heal.
//! Liveness: after the heal, every client that issues operations completes one within the
//! bound. Planted bug `stale-read`: the simulated Redis answers a GET with the key's
//! previous value now and then; the linearizability checker must see it.
//!
//! Redis is persistent here (AOF `always`): a register model has no notion of "the store
//! forgot everything", which is what a non-persistent restart would be.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::env::{Env, KvError, RandExt, SetOptions};
use futures::future::BoxFuture;
use futures::FutureExt;

use crate::checker::{check_registers, KeyedOp, RegisterOp, RegisterResult, Report};
use crate::faults::FaultSpace;
use crate::history::{Recorder, TimeSource};
use crate::scenario::{
    ClientCtx, Nodes, Phases, PlantedBug, RedisSpec, Scenario, ScenarioMeta, ScenarioRun, Topology,
};

const KEYS: [&str; 3] = ["reg-0", "reg-1", "reg-2"];
const CLIENTS: usize = 4;
/// Process id of the observer that reads every key after the heal.
const OBSERVER: u64 = u64::MAX;

const BUGS: &[PlantedBug] = &[PlantedBug {
    name: "stale-read",
    description: "the simulated Redis answers 5% of GETs with the key's previous value",
    caught_within_seeds: 20,
}];

pub struct KvRegister;

/// Coverage probes every sweep must reach besides its fault kinds (see [`ScenarioMeta::probes`]).
const PROBES: &[&str] = &["redis client: outcome unknown (maybe applied)"];

/// Checked on the clients only, so it runs live too.
const META: ScenarioMeta = ScenarioMeta {
    name: "kv_register",
    description: "registers with read/write/CAS on Redis under partitions, kills, pauses, loss; per-key linearizability",
    bugs: BUGS,
    runs_live: true,
    probes: PROBES,
};

impl Scenario for KvRegister {
    fn meta(&self) -> &'static ScenarioMeta {
        &META
    }
    fn topology(&self, bug: Option<&str>) -> Topology {
        let stale = if bug == Some("stale-read") { 0.05 } else { 0.0 };
        Topology {
            zookeeper: false,
            redis: Some(RedisSpec { persistent: true, stale_read_probability: stale }),
            sql: None,
            servers: vec![],
            clients: CLIENTS,
        }
    }
    fn fault_space(&self, topology: &Topology) -> FaultSpace {
        FaultSpace::builder(topology, 15_000, 8_000)
            .liveness_bound_ms(5_000)
            .faults(2, 8, 5_000)
            .kill(&[Nodes::All])
            .pause(&[Nodes::All])
            .partition(&[Nodes::All])
            .clock(&[Nodes::All], 10_000, 100_000)
            .network()
            .build()
    }
    fn start(&self, _bug: Option<&str>, now: TimeSource) -> Arc<dyn ScenarioRun> {
        Arc::new(Run { rec: Recorder::new(now) })
    }
}

struct Run {
    rec: Recorder<KeyedOp, RegisterResult>,
}

/// Records the outcome of a KV call: errors that may have applied are `info`, others `fail`.
fn complete<T>(
    rec: &Recorder<KeyedOp, RegisterResult>,
    h: crate::history::OpHandle,
    r: Result<T, KvError>,
    f: impl FnOnce(T) -> RegisterResult,
) {
    match r {
        Ok(v) => rec.ok(h, f(v)),
        Err(e) if e.maybe_applied() => rec.info(h),
        Err(_) => rec.fail(h),
    }
}

fn utf8(b: Bytes) -> String {
    String::from_utf8_lossy(&b).into_owned()
}

impl ScenarioRun for Run {
    fn chart_ops(&self) -> Vec<crate::history::OpView> {
        self.rec.snapshot().views_named(|o| format!("{} {}", crate::history::debug_name(&o.op), o.key))
    }

    fn client(&self, ctx: ClientCtx) -> BoxFuture<'static, ()> {
        let rec = self.rec.clone();
        async move {
            let env = ctx.env;
            let mut n = 0u64;
            let mut last_seen: [Option<String>; KEYS.len()] = Default::default();
            // One operation: a read, write or compare-and-set.
            while !ctx.phases.finished() && ctx.budget.take() {
                let k = env.rand.gen_range(0..KEYS.len() as u64) as usize;
                let key = KEYS[k];
                n += 1;
                let value = format!("p{}-{}", ctx.process, n);
                match env.rand.gen_range(0..10) {
                    0..=3 => {
                        let h = rec.invoke(ctx.process, KeyedOp { key: key.into(), op: RegisterOp::Read });
                        let r = env.kv.get(key).await;
                        if let Ok(v) = &r {
                            last_seen[k] = v.clone().map(utf8);
                        }
                        complete(&rec, h, r, |v| RegisterResult::Read(v.map(utf8)));
                    }
                    4..=6 => {
                        let h = rec.invoke(
                            ctx.process,
                            KeyedOp { key: key.into(), op: RegisterOp::Write(value.clone()) },
                        );
                        let r = env.kv.set(key, Bytes::from(value), SetOptions::default()).await;
                        complete(&rec, h, r, |_| RegisterResult::Written);
                    }
                    _ => {
                        let expected = last_seen[k].clone();
                        let op = RegisterOp::Cas { expected: expected.clone(), new: value.clone() };
                        let h = rec.invoke(ctx.process, KeyedOp { key: key.into(), op });
                        let r = env
                            .kv
                            .compare_and_set(key, expected.map(Bytes::from), Some(Bytes::from(value)), None)
                            .await;
                        complete(&rec, h, r, RegisterResult::Cas);
                    }
                }
                env.clock.sleep(Duration::from_millis(env.rand.gen_range(0..60))).await;
            }
        }
        .boxed()
    }

    fn check(&self, env: Env, phases: Phases) -> BoxFuture<'static, Report> {
        let rec = self.rec.clone();
        async move {
            let mut report = Report::default();
            // A final read of every key: catches lost writes that no client read afterwards.
            for key in KEYS {
                let h = rec.invoke(OBSERVER, KeyedOp { key: key.into(), op: RegisterOp::Read });
                let r = read_retrying(&env, key).await;
                complete(&rec, h, r, |v| RegisterResult::Read(v.map(utf8)));
            }
            let history = rec.snapshot();
            report.merge(check_registers(&history));
            report.merge(crate::checker::liveness_after_heal(&history, &phases, |p| p != OBSERVER));
            report.count("ops", history.ops.len() as u64);
            report
        }
        .boxed()
    }
}

/// The observer runs after the heal; a few retries ride out a reconnect.
async fn read_retrying(env: &Env, key: &str) -> Result<Option<Bytes>, KvError> {
    let mut last = Err(KvError::ConnectionLoss { maybe_applied: false });
    for _ in 0..10 {
        last = env.kv.get(key).await;
        if last.is_ok() {
            break;
        }
        env.clock.sleep(Duration::from_millis(200)).await;
    }
    last
}
