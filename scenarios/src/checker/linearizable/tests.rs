//! Tests of the linearizability checker: hand-made histories and generated ones.

use super::*;
use crate::checker::register::RegisterOp;
use proptest::prelude::*;

type H = History<KeyedOp, RegisterResult>;
type Op = Operation<KeyedOp, RegisterResult>;

/// Builds histories; ids are assigned in invocation order by `build`.
#[derive(Default)]
struct B {
    ops: Vec<Op>,
}

impl B {
    fn push(
        mut self,
        p: u64,
        op: KeyedOp,
        inv: u64,
        completion: Option<(u64, Outcome<RegisterResult>)>,
    ) -> Self {
        self.ops.push(Operation { id: 0, process: p, op, invoke_ns: inv, completion });
        self
    }
    fn ok(self, p: u64, op: KeyedOp, inv: u64, ret: u64, r: RegisterResult) -> Self {
        self.push(p, op, inv, Some((ret, Outcome::Ok(r))))
    }
    fn info(self, p: u64, op: KeyedOp, inv: u64, at: u64) -> Self {
        self.push(p, op, inv, Some((at, Outcome::Info)))
    }
    fn open(self, p: u64, op: KeyedOp, inv: u64) -> Self {
        self.push(p, op, inv, None)
    }
    fn fail(self, p: u64, op: KeyedOp, inv: u64, ret: u64) -> Self {
        self.push(p, op, inv, Some((ret, Outcome::Fail)))
    }
    fn build(mut self) -> H {
        // Stable: equal invocation times keep insertion order.
        self.ops.sort_by_key(|o| o.invoke_ns);
        for (i, o) in self.ops.iter_mut().enumerate() {
            o.id = i;
        }
        History { ops: self.ops }
    }
}

fn w(v: &str) -> KeyedOp {
    KeyedOp::write("k", v)
}
fn r() -> KeyedOp {
    KeyedOp::read("k")
}
fn cas(e: Option<&str>, n: &str) -> KeyedOp {
    KeyedOp::cas("k", e, n)
}
fn wr() -> RegisterResult {
    RegisterResult::Written
}
fn rd(v: Option<&str>) -> RegisterResult {
    RegisterResult::Read(v.map(str::to_string))
}
fn cr(b: bool) -> RegisterResult {
    RegisterResult::Cas(b)
}

fn assert_ok(h: &H) -> Report {
    let rep = check_registers(h);
    assert!(rep.ok(), "expected linearizable, got: {:#?}", rep.violations);
    assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
    rep
}

fn assert_bad(h: &H) -> Report {
    let rep = check_registers(h);
    assert!(!rep.ok(), "expected a violation: {h:#?}");
    assert_eq!(rep.violations[0].checker, CHECKER);
    assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
    rep
}

// ---- histories that must fail ----

#[test]
fn bad_stale_read_after_completed_write() {
    let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, r(), 20, 30, rd(None)).build();
    let rep = assert_bad(&h);
    let m = &rep.violations[0].message;
    assert!(m.contains("key \"k\""), "{m}");
    assert!(m.contains("#1 p2 read -> absent [20..30]"), "{m}");
    assert!(m.contains("#0 p1 write \"a\" -> ok [0..10]"), "{m}");
    assert!(m.contains("Longest linearizable prefix: 1 ops"), "{m}");
}

#[test]
fn violation_message_format() {
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .ok(1, w("b"), 20, 30, wr())
        .info(3, w("c"), 25, 1_000)
        .ok(2, r(), 40, 50, rd(Some("a")))
        .build();
    let rep = assert_bad(&h);
    assert_eq!(
        rep.violations[0].message,
        "key \"k\" is not linearizable (4 ops on this key, 14 search steps).\n\
         Longest linearizable prefix: 3 ops:\n  \
         #0 p1 write \"a\" -> ok [0..10]\n  \
         #1 p1 write \"b\" -> ok [20..30]\n  \
         #2 p3 write \"c\" -> info@1000 [25..∞)\n\
         after which the register is \"c\".\n\
         None of these pending ops can be linearized next:\n  \
         #3 p2 read -> \"a\" [40..50]  <- must take effect by its return"
    );
}

#[test]
fn bad_read_of_never_written_value() {
    let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, r(), 5, 30, rd(Some("zzz"))).build();
    let rep = assert_bad(&h);
    assert!(rep.violations[0].message.contains("read -> \"zzz\""));
}

#[test]
fn bad_lost_write() {
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .ok(1, w("b"), 20, 30, wr())
        .ok(2, r(), 40, 50, rd(Some("a")))
        .build();
    let rep = assert_bad(&h);
    let m = &rep.violations[0].message;
    assert!(m.contains("after which the register is \"b\""), "{m}");
    assert!(m.contains("#2 p2 read -> \"a\" [40..50]  <- must take effect by its return"), "{m}");
}

#[test]
fn bad_cas_true_with_wrong_expected() {
    let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, cas(Some("b"), "c"), 20, 30, cr(true)).build();
    assert_bad(&h);
    // Also from absent.
    let h = B::default().ok(2, cas(Some("b"), "c"), 20, 30, cr(true)).build();
    assert_bad(&h);
}

#[test]
fn bad_cas_false_when_it_must_have_matched() {
    let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, cas(Some("a"), "c"), 20, 30, cr(false)).build();
    assert_bad(&h);
    let h = B::default().ok(2, cas(None, "c"), 20, 30, cr(false)).build();
    assert_bad(&h);
}

#[test]
fn bad_read_goes_back_in_time() {
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .ok(2, w("b"), 20, 100, wr())
        .ok(3, r(), 30, 40, rd(Some("b")))
        .ok(4, r(), 50, 60, rd(Some("a")))
        .build();
    assert_bad(&h);
}

#[test]
fn bad_info_write_cannot_unhappen() {
    // Once a later read saw the info write, it cannot be undone.
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .info(2, w("b"), 20, 25)
        .ok(3, r(), 30, 40, rd(Some("b")))
        .ok(3, r(), 50, 60, rd(Some("a")))
        .build();
    assert_bad(&h);
}

#[test]
fn bad_same_process_is_sequential_at_equal_times() {
    // p1's read is invoked at the instant its write returned: it must see the write.
    let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(1, r(), 10, 20, rd(None)).build();
    assert_bad(&h);
}

#[test]
fn bad_key_is_named_and_other_keys_pass() {
    let h = B::default()
        .ok(1, KeyedOp::write("x", "1"), 0, 10, wr())
        .ok(2, KeyedOp::write("y", "1"), 0, 10, wr())
        .ok(1, KeyedOp::read("x"), 20, 30, rd(Some("1")))
        .ok(2, KeyedOp::read("y"), 20, 30, rd(Some("2")))
        .build();
    let rep = assert_bad(&h);
    assert_eq!(rep.violations.len(), 1);
    assert!(rep.violations[0].message.starts_with("key \"y\""));
    assert_eq!(rep.counter("linearizability.keys_checked"), 2);
    assert_eq!(rep.counter("linearizability.non_linearizable_keys"), 1);
}

#[test]
fn bad_malformed_result_kind() {
    let h = B::default().ok(1, w("a"), 0, 10, rd(None)).build();
    let rep = assert_bad(&h);
    assert!(rep.violations[0].message.contains("malformed"));
}

// ---- histories that must pass ----

#[test]
fn good_concurrent_writes_either_order() {
    // Overlapping writes: a later read may see either value.
    for final_value in ["a", "b"] {
        let h = B::default()
            .ok(1, w("a"), 0, 100, wr())
            .ok(2, w("b"), 10, 90, wr())
            .ok(3, r(), 5, 15, rd(None))
            .ok(4, r(), 50, 60, rd(Some(final_value)))
            .ok(5, r(), 110, 120, rd(Some(final_value)))
            .build();
        assert_ok(&h);
    }
    // Concurrent reads observing b then a fix the order b < a: the final read sees a.
    let h = B::default()
        .ok(1, w("a"), 0, 100, wr())
        .ok(2, w("b"), 10, 90, wr())
        .ok(3, r(), 20, 30, rd(Some("b")))
        .ok(4, r(), 40, 50, rd(Some("a")))
        .ok(5, r(), 110, 120, rd(Some("a")))
        .build();
    assert_ok(&h);
    let mut bad = h.clone();
    bad.ops[4].completion = Some((120, Outcome::Ok(rd(Some("b")))));
    assert_bad(&bad);
}

#[test]
fn good_equal_times_across_processes_are_concurrent() {
    let h = B::default().ok(1, w("a"), 0, 10, wr()).ok(2, r(), 10, 20, rd(None)).build();
    assert_ok(&h);
}

#[test]
fn good_info_write_that_did_or_did_not_take_effect() {
    // Took effect.
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .info(2, w("b"), 20, 25)
        .ok(3, r(), 30, 40, rd(Some("a")))
        .ok(3, r(), 50, 60, rd(Some("b")))
        .build();
    assert_ok(&h);
    // Never took effect.
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .info(2, w("b"), 20, 25)
        .ok(3, r(), 30, 40, rd(Some("a")))
        .ok(3, r(), 500, 600, rd(Some("a")))
        .build();
    let rep = assert_ok(&h);
    assert_eq!(rep.counter("linearizability.info_ops"), 1);
}

#[test]
fn good_info_write_observed_by_later_read() {
    let h = B::default().open(1, w("a"), 0).ok(2, r(), 1_000, 1_100, rd(Some("a"))).build();
    assert_ok(&h);
    // An info CAS that took effect, observed later.
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .info(2, cas(Some("a"), "b"), 20, 30)
        .ok(3, r(), 1_000, 1_100, rd(Some("b")))
        .build();
    assert_ok(&h);
}

#[test]
fn good_fail_ops_are_ignored() {
    let h = B::default().fail(1, w("z"), 0, 10).ok(2, r(), 20, 30, rd(None)).fail(1, r(), 40, 50).build();
    let rep = assert_ok(&h);
    assert_eq!(rep.counter("linearizability.failed_ops_dropped"), 2);
    assert_eq!(rep.counter("linearizability.ops_checked"), 1);
}

#[test]
fn good_info_reads_are_dropped() {
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .info(2, r(), 20, 30)
        .open(3, r(), 40)
        .ok(2, r(), 50, 60, rd(Some("a")))
        .build();
    let rep = assert_ok(&h);
    assert_eq!(rep.counter("linearizability.info_reads_dropped"), 2);
}

#[test]
fn good_multiple_keys_are_independent() {
    let h = B::default()
        .ok(1, KeyedOp::write("x", "1"), 0, 10, wr())
        .ok(2, KeyedOp::read("y"), 20, 30, rd(None))
        .ok(2, KeyedOp::read("x"), 40, 50, rd(Some("1")))
        .ok(1, KeyedOp::write("y", "1"), 60, 70, wr())
        .ok(2, KeyedOp::read("y"), 80, 90, rd(Some("1")))
        .build();
    let rep = assert_ok(&h);
    assert_eq!(rep.counter("linearizability.keys_checked"), 2);
    assert_eq!(rep.counter("linearizability.ops_checked"), 5);
    assert_eq!(rep.counter("linearizability.max_ops_per_key"), 3);
}

#[test]
fn good_cas_sequence() {
    let h = B::default()
        .ok(1, cas(None, "a"), 0, 10, cr(true))
        .ok(2, cas(None, "x"), 20, 30, cr(false))
        .ok(1, cas(Some("a"), "b"), 40, 50, cr(true))
        .ok(2, cas(Some("a"), "c"), 45, 55, cr(false))
        .ok(3, r(), 60, 70, rd(Some("b")))
        .build();
    assert_ok(&h);
}

#[test]
fn empty_history_is_ok() {
    let rep = assert_ok(&H::default());
    assert_eq!(rep.counter("linearizability.keys_checked"), 0);
    assert!(rep.counters.contains_key("linearizability.inconclusive_keys"));
}

#[test]
fn exhausted_budget_is_inconclusive_not_a_violation() {
    // a, then b, then a again with no second write of a: only a search finds it.
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .ok(2, w("b"), 0, 10, wr())
        .ok(3, r(), 20, 30, rd(Some("a")))
        .ok(3, r(), 40, 50, rd(Some("b")))
        .ok(3, r(), 60, 70, rd(Some("a")))
        .build();
    let rep = check_registers_with(&h, &LinConfig { step_budget: 2 });
    assert!(rep.ok());
    assert_eq!(rep.counter("linearizability.inconclusive_keys"), 1);
    assert_eq!(rep.counter("linearizability.search_steps"), 2);
    assert!(!check_registers(&h).ok());
}

#[test]
fn a_read_of_a_value_never_written_is_a_violation_without_any_search() {
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .ok(2, w("b"), 0, 10, wr())
        .ok(3, r(), 20, 30, rd(Some("zzz")))
        .build();
    let rep = check_registers_with(&h, &LinConfig { step_budget: 0 });
    assert!(!rep.ok());
    assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
    assert_eq!(rep.counter("linearizability.search_steps"), 0);
    assert!(rep.violations[0].message.contains("\"zzz\""), "{}", rep.violations[0].message);
    assert_eq!(rep.violations[0].ops, vec![2]);
}

// ---- generated histories ----

/// SplitMix64: a tiny deterministic generator for test histories.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, permille: u64) -> bool {
        self.below(1000) < permille
    }
}

#[derive(Debug, Clone, Copy)]
struct Gen {
    procs: u64,
    keys: u64,
    ops: usize,
    values: u64,
    /// Max latency from invocation to effect and from effect to return.
    latency: u64,
    /// Max think time between a process's ops (0 = back-to-back, equal times).
    think: u64,
    info_permille: u64,
    fail_permille: u64,
}

/// A history of sequential clients on atomic registers: every op takes effect at a
/// point inside its real-time window (the reference execution is linearizable).
fn generate(g: Gen, seed: u64) -> H {
    let mut rng = Rng(seed);
    let mut free_at: Vec<u64> = (0..g.procs).map(|_| rng.below(g.latency + 1)).collect();
    struct Raw {
        p: u64,
        op: KeyedOp,
        inv: u64,
        lp: u64,
        ret: u64,
        kind: u8, // 0 ok, 1 info+happened, 2 info+not happened, 3 fail
        closed: bool,
        result: Option<RegisterResult>,
    }
    let mut raws: Vec<Raw> = Vec::with_capacity(g.ops);
    let value = |rng: &mut Rng| format!("v{}", rng.below(g.values));
    for _ in 0..g.ops {
        let p = rng.below(g.procs) as usize;
        let inv = free_at[p] + rng.below(g.think + 1);
        let lp = inv + rng.below(g.latency + 1);
        let ret = lp + rng.below(g.latency + 1);
        free_at[p] = ret;
        let key = format!("k{}", rng.below(g.keys));
        let op = match rng.below(100) {
            0..40 => RegisterOp::Read,
            40..75 => RegisterOp::Write(value(&mut rng)),
            _ => RegisterOp::Cas {
                expected: if rng.chance(200) { None } else { Some(value(&mut rng)) },
                new: value(&mut rng),
            },
        };
        let kind = if rng.chance(g.fail_permille) {
            3
        } else if rng.chance(g.info_permille) {
            if rng.chance(500) {
                1
            } else {
                2
            }
        } else {
            0
        };
        let closed = rng.chance(500);
        raws.push(Raw { p: p as u64, op: KeyedOp { key, op }, inv, lp, ret, kind, closed, result: None });
    }
    // Execute in linearization-point order (ties: generation order, which is
    // chronological per process).
    let mut order: Vec<usize> = (0..raws.len()).collect();
    order.sort_by_key(|&i| (raws[i].lp, i));
    let mut regs: BTreeMap<String, Option<String>> = BTreeMap::new();
    for i in order {
        let raw = &mut raws[i];
        if raw.kind >= 2 {
            continue;
        }
        let cur = regs.entry(raw.op.key.clone()).or_default();
        raw.result = Some(match &raw.op.op {
            RegisterOp::Read => RegisterResult::Read(cur.clone()),
            RegisterOp::Write(v) => {
                *cur = Some(v.clone());
                RegisterResult::Written
            }
            RegisterOp::Cas { expected, new } => {
                let hit = cur == expected;
                if hit {
                    *cur = Some(new.clone());
                }
                RegisterResult::Cas(hit)
            }
        });
    }
    let mut ops: Vec<(u64, usize, Op)> = raws
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let completion = match raw.kind {
                0 => Some((raw.ret, Outcome::Ok(raw.result.expect("executed")))),
                3 => Some((raw.ret, Outcome::Fail)),
                _ if raw.closed => Some((raw.ret, Outcome::Info)),
                _ => None,
            };
            let op = Operation { id: 0, process: raw.p, op: raw.op, invoke_ns: raw.inv, completion };
            (raw.inv, i, op)
        })
        .collect();
    ops.sort_by_key(|(inv, i, _)| (*inv, *i));
    History {
        ops: ops
            .into_iter()
            .enumerate()
            .map(|(id, (_, _, mut op))| {
                op.id = id;
                op
            })
            .collect(),
    }
}

fn gen_strategy() -> impl Strategy<Value = (Gen, u64)> {
    (1u64..6, 1u64..4, 1usize..80, 1u64..6, 0u64..30, 0u64..10, 0u64..200, 0u64..150, any::<u64>()).prop_map(
        |(procs, keys, ops, values, latency, think, info, fail, seed)| {
            let g =
                Gen { procs, keys, ops, values, latency, think, info_permille: info, fail_permille: fail };
            (g, seed)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn prop_generated_linearizable_histories_pass((g, seed) in gen_strategy()) {
        let h = generate(g, seed);
        let rep = check_registers(&h);
        prop_assert!(rep.ok(), "{:#?}", rep.violations);
        prop_assert_eq!(rep.counter("linearizability.inconclusive_keys"), 0);
    }

    #[test]
    fn prop_read_of_unwritten_value_is_reported((g, seed) in gen_strategy(), pick in any::<prop::sample::Index>()) {
        let mut h = generate(g, seed);
        let reads: Vec<usize> = h
            .ops
            .iter()
            .filter(|o| matches!(o.completion, Some((_, Outcome::Ok(RegisterResult::Read(_))))))
            .map(|o| o.id)
            .collect();
        prop_assume!(!reads.is_empty());
        let id = reads[pick.index(reads.len())];
        let Some((_, Outcome::Ok(r))) = &mut h.ops[id].completion else { unreachable!() };
        *r = RegisterResult::Read(Some("never-written".to_string()));
        let rep = check_registers(&h);
        // Found without search: never left inconclusive, however concurrent the history.
        prop_assert!(!rep.ok(), "{:?}", rep.counters);
        prop_assert_eq!(rep.violations.len(), 1);
        let m = &rep.violations[0].message;
        prop_assert!(m.contains(&format!("key {:?}", h.ops[id].op.key)), "{}", m);
        prop_assert!(m.contains("\"never-written\""), "{}", m);
    }
}

#[test]
fn generated_histories_are_deterministic() {
    let g = Gen {
        procs: 4,
        keys: 2,
        ops: 200,
        values: 3,
        latency: 20,
        think: 5,
        info_permille: 100,
        fail_permille: 50,
    };
    let h = generate(g, 7);
    let a = check_registers(&h);
    let b = check_registers(&h);
    assert_eq!(a, b);
    assert!(a.ok());
}

mod against_reference;

/// Capacity probe (a measurement, not an assertion on time): one key, `procs`
/// sequential clients, `ops` operations, `info_permille` unknown outcomes. Prints the
/// search steps; time it externally. `LIN_PROBE=procs,ops,info_permille[,seed[,bad]]`.
///
/// `bad`: 0 = the generated (linearizable) history; 1 = the last read returns a value never
/// written (caught before any search by the unwritten-value check, so 0 steps); 2 = a stale
/// read appended after the end (one more client writes a fresh value, then `v0`, then reads
/// the fresh value back): a violation in every order that only an exhaustive search finds,
/// the worst case for the search.
#[test]
#[ignore = "capacity measurement; run with LIN_PROBE=... --ignored --nocapture"]
fn capacity_probe() {
    let spec = std::env::var("LIN_PROBE").unwrap_or_else(|_| "5,1000,0".to_string());
    let v: Vec<u64> = spec.split(',').map(|s| s.trim().parse().expect("number")).collect();
    let g = Gen {
        procs: v[0],
        keys: 1,
        ops: v[1] as usize,
        values: 5,
        latency: 100,
        think: 20,
        info_permille: v[2],
        fail_permille: 0,
    };
    let mut h = generate(g, v.get(3).copied().unwrap_or(1));
    if v.get(4).copied().unwrap_or(0) == 1 {
        // Plant a bad read near the end.
        let id = h
            .ops
            .iter()
            .rev()
            .find(|o| matches!(o.completion, Some((_, Outcome::Ok(RegisterResult::Read(_))))))
            .map(|o| o.id)
            .expect("a read");
        h.ops[id].completion.as_mut().unwrap().1 = Outcome::Ok(rd(Some("never")));
    }
    if v.get(4).copied().unwrap_or(0) == 2 {
        // Nothing but the appended write stores "fresh", and `v0` overwrote it before the read.
        let end = h.ops.iter().map(|o| o.completion.as_ref().map_or(o.invoke_ns, |c| c.0)).max().unwrap_or(0);
        let p = v[0];
        for (k, (op, res)) in [
            (KeyedOp::write("k0", "fresh"), wr()),
            (KeyedOp::write("k0", "v0"), wr()),
            (KeyedOp::read("k0"), rd(Some("fresh"))),
        ]
        .into_iter()
        .enumerate()
        {
            let t = end + 1 + 2 * k as u64;
            let id = h.ops.len();
            h.ops.push(Operation {
                id,
                process: p,
                op,
                invoke_ns: t,
                completion: Some((t + 1, Outcome::Ok(res))),
            });
        }
    }
    let rep = check_registers(&h);
    println!(
        "PROBE procs={} ops={} info={}‰ ok={} steps={} inconclusive={} searched={}",
        v[0],
        v[1],
        v[2],
        rep.ok(),
        rep.counter("linearizability.search_steps"),
        rep.counter("linearizability.inconclusive_keys"),
        rep.counter("linearizability.ops_checked"),
    );
}
