//! Coverage probes: named marks on the paths a chaos run must reach, counted per run.
//!
//! `probe!("account: lease lapsed with links open")` marks a path; `probe!(cond, "...")`
//! marks it only when `cond` holds. Every site is declared at link time in [`PROBES`] (a
//! `linkme` distributed slice), so a runner can list the probes that no seed reached, not only
//! those that were reached (FoundationDB's `CODE_PROBE`; Antithesis' `sometimes`). The
//! simulator's runner declares, per scenario, the probes a sweep must hit
//! (`ScenarioMeta::probes`) and fails a sweep that misses one.
//!
//! # Cost and determinism
//!
//! Hits are counted only on a thread inside [`record`]. Everywhere else (the real server,
//! unit tests, benchmarks) a hit is one relaxed atomic load and a branch not taken. Counting
//! is per thread: under the simulator a run is one thread, so its counts are its own and the
//! same on every replay. Probes never log and never touch the trace, so turning them on
//! changes no trace hash.
//!
//! # Naming
//!
//! `"<area>: <what happened>"`, lower case, e.g. `"orm: write refused by a newer fence"`. Two
//! sites may share a name when they mark the same event.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

#[doc(hidden)]
pub use linkme;

/// One probe site: its name and where it is.
#[derive(Debug)]
pub struct Probe {
    pub name: &'static str,
    pub file: &'static str,
    pub line: u32,
}

/// Every probe site linked into this binary.
#[linkme::distributed_slice]
pub static PROBES: [Probe];

/// Hit counts of one recorded run, by probe name.
pub type Hits = BTreeMap<&'static str, u64>;

/// Threads inside [`record`] now (0: every hit is a no-op).
static RECORDING: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static HITS: RefCell<Option<Hits>> = const { RefCell::new(None) };
}

/// Marks a path. `probe!("area: what happened")`, or `probe!(condition, "...")` to mark it
/// only when `condition` holds, or `probe!(name = EXPR)` with a constant expression for the
/// name (a name defined once elsewhere). See the [module docs](crate::probe).
#[macro_export]
macro_rules! probe {
    (name = $name:expr) => {{
        #[$crate::probe::linkme::distributed_slice($crate::probe::PROBES)]
        #[linkme(crate = $crate::probe::linkme)]
        static PROBE: $crate::probe::Probe =
            $crate::probe::Probe { name: $name, file: file!(), line: line!() };
        $crate::probe::hit(&PROBE);
    }};
    ($name:literal) => {{
        #[$crate::probe::linkme::distributed_slice($crate::probe::PROBES)]
        #[linkme(crate = $crate::probe::linkme)]
        static PROBE: $crate::probe::Probe =
            $crate::probe::Probe { name: $name, file: file!(), line: line!() };
        $crate::probe::hit(&PROBE);
    }};
    ($cond:expr, $name:literal) => {{
        if $cond {
            $crate::probe!($name);
        }
    }};
}

/// Counts a hit of `probe` if this thread is recording (called by [`probe!`]).
#[doc(hidden)]
#[inline]
pub fn hit(probe: &'static Probe) {
    if RECORDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    hit_recording(probe);
}

#[cold]
#[inline(never)]
fn hit_recording(probe: &'static Probe) {
    HITS.with(|h| {
        if let Some(hits) = h.borrow_mut().as_mut() {
            *hits.entry(probe.name).or_insert(0) += 1;
        }
    });
}

/// Runs `f` on this thread with hits counted, and returns them beside its result. Nested
/// calls count into the outermost one.
pub fn record<R>(f: impl FnOnce() -> R) -> (R, Hits) {
    /// Ends recording on this thread, also when `f` panics.
    struct Recording {
        outermost: bool,
    }
    impl Drop for Recording {
        fn drop(&mut self) {
            if self.outermost {
                HITS.with(|h| h.borrow_mut().take());
            }
            RECORDING.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let outermost = HITS.with(|h| {
        let mut h = h.borrow_mut();
        let outermost = h.is_none();
        if outermost {
            *h = Some(Hits::new());
        }
        outermost
    });
    RECORDING.fetch_add(1, Ordering::Relaxed);
    let guard = Recording { outermost };
    let result = f();
    let hits = if outermost { HITS.with(|h| h.borrow().clone().unwrap_or_default()) } else { Hits::new() };
    drop(guard);
    (result, hits)
}

/// The names of every probe linked into this binary.
pub fn declared() -> BTreeSet<&'static str> {
    PROBES.iter().map(|p| p.name).collect()
}

/// Whether a probe called `name` is linked into this binary.
pub fn is_declared(name: &str) -> bool {
    PROBES.iter().any(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(n: u32) {
        for i in 0..n {
            crate::probe!("probe test: marked");
            crate::probe!(i % 2 == 0, "probe test: even");
        }
    }

    #[test]
    fn hits_outside_a_recording_are_not_counted() {
        marked(3);
        let ((), hits) = record(|| ());
        assert!(hits.is_empty(), "{hits:?}");
    }

    #[test]
    fn a_recording_counts_each_hit_and_only_taken_conditions() {
        let ((), hits) = record(|| marked(5));
        assert_eq!(hits.get("probe test: marked"), Some(&5));
        assert_eq!(hits.get("probe test: even"), Some(&3));
    }

    #[test]
    fn every_site_is_declared_even_before_it_is_hit() {
        assert!(is_declared("probe test: marked"));
        assert!(is_declared("probe test: even"));
        assert!(!is_declared("probe test: never written"));
        let site = PROBES.iter().find(|p| p.name == "probe test: marked").expect("declared");
        assert!(site.file.ends_with("probe.rs") && site.line > 0, "{site:?}");
    }

    #[test]
    fn a_nested_recording_counts_into_the_outer_one() {
        let (inner, outer) = record(|| {
            marked(1);
            record(|| marked(2)).1
        });
        assert!(inner.is_empty());
        assert_eq!(outer.get("probe test: marked"), Some(&3));
    }

    #[test]
    fn a_panic_inside_a_recording_ends_it() {
        let caught = std::panic::catch_unwind(|| record(|| panic!("boom")));
        assert!(caught.is_err());
        HITS.with(|h| assert!(h.borrow().is_none(), "the panicking recording ended"));
        marked(1);
        let ((), hits) = record(|| marked(1));
        assert_eq!(hits.get("probe test: marked"), Some(&1), "a fresh recording after the panic");
    }
}
