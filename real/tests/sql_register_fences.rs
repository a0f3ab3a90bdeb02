//! `sql_register`'s live fences ([`Fences::across_processes`]) drawn at the same time by
//! several server processes, on the machine's real clock: threads stand for the processes
//! (each has its own `Fences`, as each live server process does). Here and not in the
//! `scenarios` crate, whose code may not read the OS clock or start threads (DESIGN.md §8).

use std::sync::Arc;

use scenarios::catalogue::sql_register::workload::Fences;
use scenarios::history::TimeSource;

#[test]
fn live_fences_drawn_at_once_in_several_processes_never_collide() {
    let start = std::time::Instant::now();
    let now: TimeSource = Arc::new(move || start.elapsed().as_nanos() as u64);
    let threads: Vec<_> = (0..4u64)
        .map(|i| {
            let fences = Fences::default().across_processes(now.clone(), i);
            std::thread::spawn(move || (0..2_000).map(|_| fences.next(0)).collect::<Vec<u64>>())
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let drawn = t.join().expect("a drawing thread");
        assert!(drawn.windows(2).all(|w| w[0] < w[1]), "one process's fences rise");
        all.extend(drawn);
    }
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "no fence drawn twice");
}
