//! Generated cases and their shrinking.
//!
//! **Why a seeded generator with a greedy shrinker, not proptest's `TestRunner`.** A case is
//! judged by running it against *two* backends (one of them a real service reached over
//! TCP) and diffing transcripts; proptest's runner wants a pass/fail closure per value and
//! owns the loop, its seed handling and its failure persistence. Here every case must be
//! reproducible from `(--seed, index)` alone and printed as an exact command; the shrinker
//! must re-run both backends per attempt (each attempt costs milliseconds against the real
//! services, so the number of attempts matters more than proptest's generic value-tree
//! minimisation); and operation sequences are stateful, where deleting steps (delta
//! debugging) is what shrinks well. So: [`generate`] draws a case from a splitmix64 stream
//! seeded by the case's seed, and [`shrink`] greedily removes chunks of steps (halves, then
//! quarters, ..., then single steps), then sub-operations of `multi`s, then clients, keeping
//! every removal after which the case still diverges.

use engine::env::{CreateMode, SetCondition};

use super::ops::{AnyOp, Case, DbOp, KvOp, MultiOp, RelPath, Service, Step, ZkOp};

/// splitmix64: a small, fast, seedable stream (the same seed gives the same case everywhere).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// The seed of case `index` of a run seeded `seed`.
pub fn case_seed(seed: u64, index: u64) -> u64 {
    Rng::new(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).next_u64()
}

/// Relative paths generated cases use: plain nodes, an ephemeral parent, sequential names
/// that sequential creates may produce, and malformed paths (prefixed `!`: used verbatim).
const PATHS: &[&str] = &[
    "",
    "a",
    "a",
    "b",
    "a/x",
    "a/x",
    "a/y",
    "b/x",
    "a/x/q",
    "e",
    "e/k",
    "a/s-0000000000",
    "a/s-0000000001",
    "a/s-0000000002",
    "a/s-0000000003",
    "a/0000000001",
    "s-0000000000",
    "s-0000000001",
];
const BAD_PATHS: &[&str] = &["!rel", "!", "a/", "!//x", "a/./x", "a/../b"];
/// Prefixes for sequential creates (`a/` creates `a/0000000007`).
const SEQ_PATHS: &[&str] = &["a/s-", "a/s-", "a/", "s-", "e/s-"];
const DATA: &[&str] = &["", "x", "yy"];
const VERSIONS: &[Option<i32>] = &[None, None, Some(0), Some(1), Some(2)];
/// Requested session timeouts: inside the private ZooKeeper's bounds, one above (clamped).
const TIMEOUTS_MS: &[u64] = &[4_000, 10_000, 60_000];
const MODES: &[CreateMode] = &[
    CreateMode::Persistent,
    CreateMode::Persistent,
    CreateMode::Ephemeral,
    CreateMode::PersistentSequential,
    CreateMode::EphemeralSequential,
];

fn path(r: &mut Rng) -> RelPath {
    if r.chance(5) {
        RelPath::new(r.pick(BAD_PATHS))
    } else {
        RelPath::new(r.pick(PATHS))
    }
}

fn create_parts(r: &mut Rng) -> (RelPath, String, CreateMode) {
    let mode = r.pick(MODES);
    let mut p = if mode.is_sequential() && r.chance(70) { RelPath::new(r.pick(SEQ_PATHS)) } else { path(r) };
    if mode.is_sequential() && p.0.is_empty() {
        // A sequential create "on" the case root makes a sibling of it under `/`, numbered by
        // `/`'s counter, which every case shares on the real service: not comparable.
        p = RelPath::new("s-");
    }
    (p, r.pick(DATA).to_string(), mode)
}

fn multi_op(r: &mut Rng) -> MultiOp {
    match r.below(4) {
        0 => {
            let (path, data, mode) = create_parts(r);
            MultiOp::Create { path, data, mode }
        }
        1 => MultiOp::Delete { path: path(r), version: r.pick(VERSIONS) },
        2 => MultiOp::SetData { path: path(r), data: r.pick(DATA).to_string(), version: r.pick(VERSIONS) },
        _ => MultiOp::Check { path: path(r), version: r.pick(VERSIONS) },
    }
}

fn zk_op(r: &mut Rng) -> ZkOp {
    match r.below(100) {
        0..=29 => {
            let (path, data, mode) = create_parts(r);
            ZkOp::Create { path, data, mode }
        }
        30..=41 => ZkOp::Delete { path: path(r), version: r.pick(VERSIONS) },
        42..=53 => ZkOp::SetData { path: path(r), data: r.pick(DATA).to_string(), version: r.pick(VERSIONS) },
        54..=63 => ZkOp::GetData { path: path(r), watch: r.chance(50) },
        64..=72 => ZkOp::Exists { path: path(r), watch: r.chance(50) },
        73..=82 => ZkOp::GetChildren { path: path(r), watch: r.chance(50) },
        83..=94 => ZkOp::Multi((0..r.below(4)).map(|_| multi_op(r)).collect()),
        95..=96 => ZkOp::Close,
        97 => ZkOp::Reconnect { timeout_ms: r.pick(TIMEOUTS_MS) },
        _ => ZkOp::State,
    }
}

const KEYS: &[&str] = &["a", "a", "b", "l"];
const VALUES: &[&str] = &["", "1", "22"];
/// TTLs are whole seconds plus 500 ms (see the transcript's rounding), or invalid (0).
const PX_MS: &[Option<u64>] =
    &[None, None, None, None, Some(1_500), Some(1_500), Some(60_500), Some(60_500), Some(0)];
const PEXPIRE_MS: &[u64] = &[0, 2_500, 90_500];
const INDICES: &[i64] = &[0, 1, 2, -1, -2, -5, 5, 100];

fn opt_value(r: &mut Rng) -> Option<String> {
    if r.chance(30) {
        None
    } else {
        Some(r.pick(VALUES).to_string())
    }
}

fn kv_op(r: &mut Rng) -> KvOp {
    let key = r.pick(KEYS).to_string();
    match r.below(100) {
        0..=14 => KvOp::Get { key },
        15..=34 => KvOp::Set {
            key,
            value: r.pick(VALUES).to_string(),
            cond: r.pick(&[SetCondition::Always, SetCondition::IfAbsent, SetCondition::IfPresent]),
            px_ms: r.pick(PX_MS),
            keep_ttl: r.chance(20),
        },
        35..=41 => KvOp::Del { key },
        42..=48 => KvOp::PExpire { key, ms: r.pick(PEXPIRE_MS) },
        49..=56 => KvOp::PTtl { key },
        57..=66 => KvOp::Cas { key, expected: opt_value(r), new: opt_value(r), px_ms: r.pick(PX_MS) },
        67..=72 => KvOp::Take { key },
        73..=82 => KvOp::RPush { key, values: (0..r.below(4)).map(|_| r.pick(VALUES).to_string()).collect() },
        83..=88 => KvOp::LPop { key },
        89..=95 => KvOp::LRange { key, start: r.pick(INDICES), stop: r.pick(INDICES) },
        _ => KvOp::LLen { key },
    }
}

/// Draws one case of `service` from `seed`.
pub fn generate(service: Service, seed: u64) -> Case {
    if service.is_sql() {
        return super::gen_db::generate_db(service, seed);
    }
    let mut r = Rng::new(seed);
    let n_clients = 1 + r.below(3);
    let n_steps = 1 + r.below(30);
    let clients: Vec<u64> = match service {
        Service::Zk => (0..n_clients).map(|_| r.pick(TIMEOUTS_MS)).collect(),
        Service::Redis | Service::Sqlite | Service::Mariadb => vec![0; n_clients.min(2)],
    };
    let mut steps = Vec::new();
    if service == Service::Zk {
        // Most interesting paths live under `a`: often start with it (and a child) in place.
        if r.chance(60) {
            steps.push(Step {
                client: 0,
                op: AnyOp::Zk(ZkOp::Create {
                    path: RelPath::new("a"),
                    data: "".into(),
                    mode: CreateMode::Persistent,
                }),
            });
            if r.chance(50) {
                let mode = r.pick(&[CreateMode::Persistent, CreateMode::Ephemeral]);
                steps.push(Step {
                    client: 0,
                    op: AnyOp::Zk(ZkOp::Create { path: RelPath::new("a/x"), data: "x".into(), mode }),
                });
            }
        }
    }
    steps.extend((0..n_steps).map(|_| {
        let client = r.below(clients.len());
        let op = match service {
            Service::Zk => AnyOp::Zk(zk_op(&mut r)),
            Service::Redis | Service::Sqlite | Service::Mariadb => AnyOp::Kv(kv_op(&mut r)),
        };
        Step { client, op }
    }));
    Case { name: format!("gen-{seed:#018x}"), service, clients, steps }
}

/// Greedy shrinking: returns the smallest case found for which `diverges` still holds.
/// `diverges` is called once per attempt (each attempt runs both backends).
pub fn shrink(case: &Case, mut diverges: impl FnMut(&Case) -> bool) -> (Case, usize) {
    let mut best = case.clone();
    let mut attempts = 0;
    // 1. Remove chunks of steps, largest first.
    let mut chunk = best.steps.len().div_ceil(2).max(1);
    loop {
        let mut i = 0;
        while i < best.steps.len() {
            let mut cand = best.clone();
            let end = (i + chunk).min(cand.steps.len());
            cand.steps.drain(i..end);
            attempts += 1;
            if diverges(&cand) {
                best = cand;
            } else {
                i += chunk;
            }
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    // 2. Remove sub-operations of multis and of SQL transactions (one op always stays in a
    //    transaction: an empty one is refused before it is sent).
    for s in 0..best.steps.len() {
        let mut j = 0;
        loop {
            let len = match &best.steps[s].op {
                AnyOp::Zk(ZkOp::Multi(ops)) => ops.len(),
                AnyOp::Db(DbOp::Transact(ops)) if ops.len() > 1 => ops.len(),
                _ => 0,
            };
            if j >= len {
                break;
            }
            let mut cand = best.clone();
            match &mut cand.steps[s].op {
                AnyOp::Zk(ZkOp::Multi(ops)) => {
                    ops.remove(j);
                }
                AnyOp::Db(DbOp::Transact(ops)) => {
                    ops.remove(j);
                }
                _ => {}
            }
            attempts += 1;
            if diverges(&cand) {
                best = cand;
            } else {
                j += 1;
            }
        }
    }
    // 3. Remove clients no step uses (highest first), renumbering the others.
    for c in (1..best.clients.len()).rev() {
        if best.steps.iter().any(|s| s.client == c) {
            continue;
        }
        let mut cand = best.clone();
        cand.clients.remove(c);
        for s in &mut cand.steps {
            if s.client > c {
                s.client -= 1;
            }
        }
        attempts += 1;
        if diverges(&cand) {
            best = cand;
        }
    }
    (best, attempts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic() {
        assert_eq!(generate(Service::Zk, 7), generate(Service::Zk, 7));
        assert_eq!(generate(Service::Redis, 7), generate(Service::Redis, 7));
        assert_ne!(generate(Service::Zk, 7), generate(Service::Zk, 8));
    }

    #[test]
    fn shrinking_finds_the_one_step_that_matters() {
        let mut case = generate(Service::Redis, 3);
        case.steps.resize(20, case.steps[0].clone());
        let culprit = Step { client: 0, op: AnyOp::Kv(KvOp::LLen { key: "zz".into() }) };
        case.steps.insert(11, culprit.clone());
        let (small, attempts) = shrink(&case, |c| c.steps.contains(&culprit));
        assert_eq!(small.steps, vec![culprit]);
        assert!(attempts < 60, "{attempts}");
    }
}
