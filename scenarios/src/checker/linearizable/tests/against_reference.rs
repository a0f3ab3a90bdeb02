//! The search against the test-only reference search (`super::super::reference`): the same
//! verdict on generated histories, and where the chaining of identical unknown writes
//! changes the steps taken.

use super::*;
use crate::checker::register::{IOp, IRes, Interner, RegisterModel};

type RegisterSearchOp = SearchOp<IOp, IRes>;

/// Per-key search inputs of `h`, as `check_key` builds them (failed ops and unknown reads
/// dropped, values interned).
fn search_inputs(h: &H) -> Vec<Vec<RegisterSearchOp>> {
    let mut by_key: BTreeMap<&str, (Interner, Vec<RegisterSearchOp>)> = BTreeMap::new();
    for o in &h.ops {
        let (interner, ops) = by_key.entry(o.op.key.as_str()).or_default();
        let result = match o.outcome() {
            Outcome::Fail => continue,
            Outcome::Info if o.op.op == RegisterOp::Read => continue,
            Outcome::Info => None,
            Outcome::Ok(r) => Some(IRes::intern(r, interner)),
        };
        let op = IOp::intern(&o.op.op, interner);
        ops.push(SearchOp {
            op,
            result,
            process: o.process,
            invoke_ns: o.invoke_ns,
            return_ns: o.return_ns(),
        });
    }
    by_key.into_values().map(|(_, ops)| ops).collect()
}

/// Reference-search budget for the differential tests; a key it cannot settle is skipped.
const REFERENCE_BUDGET: u64 = 2_000_000;

/// The verdict of a search: `Some(linearizable?)`, `None` if inconclusive.
fn verdict<S>(o: &SearchOutcome<S>) -> Option<bool> {
    match o {
        SearchOutcome::Linearizable { .. } => Some(true),
        SearchOutcome::NotLinearizable { .. } => Some(false),
        SearchOutcome::Inconclusive { .. } => None,
    }
}

/// Changes the results of about `permille` of the `Ok` reads and compare-and-sets of `h`
/// (a read sees another value, a compare-and-set the other answer): planted violations,
/// though some changes are still linearizable.
fn corrupt(h: &mut H, rng: &mut Rng, permille: u64, values: u64) {
    for o in &mut h.ops {
        let Some((_, Outcome::Ok(r))) = &mut o.completion else { continue };
        if !rng.chance(permille) {
            continue;
        }
        match r {
            RegisterResult::Read(v) => {
                let k = rng.below(values + 1);
                *v = (k < values).then(|| format!("v{k}"));
            }
            RegisterResult::Cas(b) => *b = !*b,
            RegisterResult::Written => {}
        }
    }
}

/// Compares [`search`] with the reference on every key of `h`; returns how many keys each
/// verdict had (linearizable, not), counting only keys the reference settled.
fn compare_with_reference(h: &H) -> Result<(u64, u64), String> {
    let (mut good, mut bad) = (0, 0);
    for ops in search_inputs(h) {
        let want = verdict(&reference::reference_search(&RegisterModel, &ops, REFERENCE_BUDGET));
        let Some(want) = want else { continue };
        let got = search(&RegisterModel, &ops, REFERENCE_BUDGET);
        if verdict(&got) != Some(want) {
            return Err(format!("reference says linearizable={want}, search says {got:?} on {ops:#?}"));
        }
        if want {
            good += 1;
        } else {
            bad += 1;
        }
    }
    Ok((good, bad))
}

/// Small, very concurrent histories with many unknown outcomes and few values, so that
/// identical unknown ops, no-op unknown ops and unknown writes followed by writes abound.
fn info_heavy(rng: &mut Rng) -> Gen {
    Gen {
        procs: 1 + rng.below(6),
        keys: 1 + rng.below(2),
        ops: 1 + rng.below(28) as usize,
        values: 1 + rng.below(3),
        latency: rng.below(30),
        think: rng.below(6),
        info_permille: 200 + rng.below(500),
        fail_permille: rng.below(100),
    }
}

#[test]
fn search_agrees_with_the_reference_search_on_info_heavy_histories() {
    const HISTORIES: u64 = 6_000;
    let mut rng = Rng(0x5EED);
    let (mut good, mut bad) = (0, 0);
    for case in 0..HISTORIES {
        let g = info_heavy(&mut rng);
        let mut h = generate(g, rng.next());
        // Two thirds with planted violations.
        if case % 3 != 0 {
            let permille = 50 + rng.below(300);
            corrupt(&mut h, &mut rng, permille, g.values);
        }
        match compare_with_reference(&h) {
            Ok((g, b)) => {
                good += g;
                bad += b;
            }
            Err(e) => panic!("case {case} ({g:?}): {e}"),
        }
    }
    // Both verdicts must be well represented, or the comparison proves little.
    assert!(good > HISTORIES / 2 && bad > HISTORIES / 5, "linearizable keys {good}, not {bad}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn prop_search_agrees_with_the_reference_search(
        (g, seed) in gen_strategy(),
        info in 0u64..800,
        values in 1u64..4,
        corrupt_permille in 0u64..300,
    ) {
        let g = Gen { ops: g.ops.min(30), info_permille: info, values, ..g };
        let mut h = generate(g, seed);
        corrupt(&mut h, &mut Rng(seed ^ 0xC0), corrupt_permille, values);
        if let Err(e) = compare_with_reference(&h) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// Steps of both searches on the single key of `h`: (search, reference).
fn steps_of_both(h: &H) -> (SearchOutcome<u32>, SearchOutcome<u32>) {
    let inputs = search_inputs(h);
    assert_eq!(inputs.len(), 1);
    let ops = &inputs[0];
    (
        search(&RegisterModel, ops, REFERENCE_BUDGET),
        reference::reference_search(&RegisterModel, ops, REFERENCE_BUDGET),
    )
}

fn steps<S>(o: &SearchOutcome<S>) -> u64 {
    match o {
        SearchOutcome::Linearizable { steps }
        | SearchOutcome::NotLinearizable { steps, .. }
        | SearchOutcome::Inconclusive { steps } => *steps,
    }
}

/// `k` unknown writes of `b`, all invoked early, then a lost-update violation that only an
/// exhaustive search finds: `a` written, `c` written, `a` read back.
fn identical_unknown_writes(k: u64) -> H {
    let mut b = B::default();
    for p in 0..k {
        b = b.info(10 + p, w("b"), p, 1_000);
    }
    b.ok(1, w("a"), 100, 110, wr())
        .ok(1, r(), 120, 130, rd(Some("b")))
        .ok(1, w("c"), 140, 150, wr())
        .ok(1, r(), 160, 170, rd(Some("b")))
        .ok(1, r(), 180, 190, rd(Some("a")))
        .build()
}

#[test]
fn identical_unknown_writes_are_tried_in_invocation_order_only() {
    // The reference explores every subset of the identical writes it has linearized; the
    // search only prefixes of their invocation order, so its cost grows with their number
    // instead of exponentially.
    let cost = |k| {
        let (new, old) = steps_of_both(&identical_unknown_writes(k));
        assert_eq!((verdict(&new), verdict(&old)), (Some(false), Some(false)), "{k} writes");
        (steps(&new), steps(&old))
    };
    let (new6, old6) = cost(6);
    let (new12, old12) = cost(12);
    eprintln!("6 writes: search {new6}, reference {old6}; 12 writes: search {new12}, reference {old12}");
    assert!(new12 < 4 * new6, "search: {new6} steps with 6 writes, {new12} with 12");
    assert!(10 * new12 < old12, "12 writes: search {new12} steps, reference {old12}");
}

#[test]
fn identical_unknown_writes_invoked_at_one_instant_are_not_chained_across_predecessors() {
    // p1's unknown write of b may only follow p1's write of a (same process, a returned at
    // the instant b was invoked); p2's identical one may go before it, and must, for the
    // read of b at 10 to precede the write of a seen at 11. Chaining the two (p2's only
    // after p1's) would make this history look non-linearizable.
    let h = B::default()
        .ok(1, w("a"), 0, 10, wr())
        .info(1, w("b"), 10, 1_000)
        .info(2, w("b"), 10, 1_000)
        .ok(3, r(), 10, 10, rd(Some("b")))
        .ok(3, r(), 11, 12, rd(Some("a")))
        .build();
    assert_ok(&h);
    let (new, old) = steps_of_both(&h);
    assert_eq!((verdict(&new), verdict(&old)), (Some(true), Some(true)));
}

#[test]
fn without_unknown_ops_the_search_takes_the_reference_steps() {
    let g = Gen {
        procs: 6,
        keys: 1,
        ops: 400,
        values: 3,
        latency: 30,
        think: 5,
        info_permille: 0,
        fail_permille: 0,
    };
    for seed in 0..20 {
        let mut h = generate(g, seed);
        corrupt(&mut h, &mut Rng(seed), 5, g.values);
        let (new, old) = steps_of_both(&h);
        assert_eq!(verdict(&new), verdict(&old), "seed {seed}");
        assert_eq!(steps(&new), steps(&old), "seed {seed}");
    }
}
