//! What the benches share: a runtime per bench, closed- and open-loop load drivers, latency samples,
//! a countdown that wakes a waiter when it reaches its target, and free loopback ports.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{BenchError, Better, Row};

/// A multi-threaded tokio runtime with one worker per core.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(BenchError::io("building a tokio runtime"))
}

/// A loopback port that was free a moment ago (for a component that must announce its
/// address before it binds it, as a cluster member announces its RPC address).
pub(crate) fn free_port() -> Result<SocketAddr, BenchError> {
    let l =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(BenchError::io("picking a port"))?;
    l.local_addr().map_err(BenchError::io("picking a port"))
}

/// A loopback port that was free a moment ago, below the ephemeral range when there is room
/// (an ephemeral one could be taken, between its release and a server's bind, by one of the
/// many outgoing connections a bench or an attack makes).
pub(crate) fn free_low_port() -> Result<u16, BenchError> {
    use rand::Rng;
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if low > 11_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let port = rng.gen_range(10_000..low);
            if std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    Ok(free_port()?.port())
}

/// Operations completed in a measurement, how long it took, and each one's latency.
#[derive(Debug, Clone, Default)]
pub(crate) struct Sample {
    pub elapsed: Duration,
    /// Latency of every completed operation, in nanoseconds; kept sorted.
    latencies_ns: Vec<u64>,
}

impl Sample {
    pub fn new(elapsed: Duration, mut latencies_ns: Vec<u64>) -> Sample {
        latencies_ns.sort_unstable();
        Sample { elapsed, latencies_ns }
    }

    /// Several measurements of the same thing as one: their operations, their times added.
    pub fn merge(parts: Vec<Sample>) -> Sample {
        let elapsed = parts.iter().map(|s| s.elapsed).sum();
        Sample::new(elapsed, parts.into_iter().flat_map(|s| s.latencies_ns).collect())
    }

    pub fn ops(&self) -> usize {
        self.latencies_ns.len()
    }

    pub fn per_sec(&self) -> f64 {
        self.ops() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Nearest-rank percentile (`q` in 0..=1) in microseconds; 0 for an empty sample.
    pub fn percentile_us(&self, q: f64) -> f64 {
        let n = self.latencies_ns.len();
        if n == 0 {
            return 0.0;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_ns[rank - 1] as f64 / 1_000.0
    }
}

/// Throughput, p50, p99 and max latency of an engine sample against its baseline. The max
/// shows what percentiles of completed operations hide: a task starved for the whole
/// measurement completes a single operation, one sample among thousands.
pub(crate) fn throughput_rows(case: &str, unit: &str, engine: &Sample, baseline: &Sample) -> Vec<Row> {
    median_rows(case, unit, std::slice::from_ref(engine), std::slice::from_ref(baseline))
}

/// Measures every case (a name and a concurrency) `reps` times, the engine then the baseline
/// each time, and gives [`median_rows`] per case and, with more than one repetition, a note
/// per case with each side's throughput spread.
pub(crate) async fn compare_repeated<FE, FutE, FB, FutB>(
    reps: usize,
    cases: &[(String, usize)],
    unit: &str,
    mut engine: FE,
    mut baseline: FB,
) -> Result<(Vec<Row>, Vec<String>), BenchError>
where
    FE: FnMut(usize) -> FutE,
    FutE: Future<Output = Result<Sample, BenchError>>,
    FB: FnMut(usize) -> FutB,
    FutB: Future<Output = Result<Sample, BenchError>>,
{
    let reps = reps.max(1);
    // Per case: the engine's and the baseline's sample of each repetition.
    let mut samples: Vec<(Vec<Sample>, Vec<Sample>)> = vec![Default::default(); cases.len()];
    for _ in 0..reps {
        for ((_, c), (e, b)) in cases.iter().zip(&mut samples) {
            e.push(engine(*c).await?);
            b.push(baseline(*c).await?);
        }
    }
    let (mut rows, mut notes) = (Vec::new(), Vec::new());
    for ((case, _), (e, b)) in cases.iter().zip(&samples) {
        rows.extend(median_rows(case, unit, e, b));
        if reps > 1 {
            let spread = |side: &[Sample]| {
                let s = Spread::of(side.iter().map(Sample::per_sec));
                format!("median {:.0}, {:.0}..{:.0} ({:.0}%)", s.median, s.min, s.max, s.percent())
            };
            notes.push(format!(
                "{case}: {unit} over {reps} repetitions: engine {}; baseline {}",
                spread(e),
                spread(b)
            ));
        }
    }
    Ok((rows, notes))
}

/// [`throughput_rows`] over repetitions: each figure (throughput, p50, p99, max) is the median
/// of the repetitions' figures, per side.
pub(crate) fn median_rows(case: &str, unit: &str, engine: &[Sample], baseline: &[Sample]) -> Vec<Row> {
    let med = |side: &[Sample], f: &dyn Fn(&Sample) -> f64| Spread::of(side.iter().map(f)).median;
    let mut rows = vec![Row::new(
        case,
        "throughput",
        unit,
        Better::Higher,
        med(engine, &Sample::per_sec),
        med(baseline, &Sample::per_sec),
    )];
    for (metric, q) in [("p50 latency", 0.5), ("p99 latency", 0.99), ("max latency", 1.0)] {
        let pct = |s: &Sample| s.percentile_us(q);
        rows.push(Row::new(case, metric, "us", Better::Lower, med(engine, &pct), med(baseline, &pct)));
    }
    rows
}

/// Median, least and greatest of several repetitions' figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// Of at least one figure (an empty input gives zeros); the median of an even count is the
    /// mean of the middle two.
    pub fn of(figures: impl Iterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = figures.collect();
        if v.is_empty() {
            return Spread { median: 0.0, min: 0.0, max: 0.0 };
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }

    /// `max - min` as a percentage of the median.
    pub fn percent(&self) -> f64 {
        100.0 * (self.max - self.min) / self.median.abs().max(f64::MIN_POSITIVE)
    }
}

/// The case name of a measurement with `n` load tasks.
pub(crate) fn tasks(n: usize) -> String {
    if n == 1 {
        "1 task".to_string()
    } else {
        format!("{n} tasks")
    }
}

/// Runs `op` in a closed loop on `concurrency` tasks, first for `warmup` (discarded), then
/// for `duration`: each task starts a new operation as soon as its previous one finished,
/// until the deadline. `op(task, i)` is the `i`-th operation of task `task`. The sample's
/// time runs until the last task's last operation finished. The first failing operation
/// fails the measurement.
pub(crate) async fn measure<F, Fut>(
    bench: &'static str,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    op: F,
) -> Result<Sample, BenchError>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let mut first = 0u64;
    if !warmup.is_zero() {
        let s = closed_loop(bench, concurrency, warmup, 0, op.clone()).await?;
        first = s.ops() as u64;
    }
    closed_loop(bench, concurrency, duration, first, op).await
}

async fn closed_loop<F, Fut>(
    bench: &'static str,
    concurrency: usize,
    duration: Duration,
    first: u64,
    op: F,
) -> Result<Sample, BenchError>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..concurrency.max(1))
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                // Operation numbers go on from the warm-up so that keys are never reused.
                let mut i = first;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    op(task, i).await?;
                    lat.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    i += 1;
                }
                Ok::<_, BenchError>(lat)
            })
        })
        .collect();
    collect(bench, start, tasks).await
}

/// Runs `op` in an open loop on `concurrency` tasks for `duration`: together they start
/// `rate` operations per second, each task one every `concurrency / rate` seconds at fixed
/// instants (task `t` offset by `t / rate`), whether or not its previous one finished late.
/// A latency counts from the instant the operation was due, not from when it started, so an
/// overloaded system is not flattered by the load it held back (coordinated omission).
/// `op(task, i)` as in [`measure`]; operation numbers start at `first`. No warm-up: run
/// [`measure`] or another paced run before it.
pub(crate) async fn paced<F, Fut>(
    bench: &'static str,
    concurrency: usize,
    rate: f64,
    duration: Duration,
    first: u64,
    op: F,
) -> Result<Sample, BenchError>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BenchError>> + Send + 'static,
{
    let concurrency = concurrency.max(1);
    if !(rate.is_finite() && rate > 0.0) {
        return Err(BenchError::op(bench, format!("paced rate {rate} is not a positive number")));
    }
    let period = Duration::from_secs_f64(concurrency as f64 / rate);
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut due = start + Duration::from_secs_f64(task as f64 / rate);
                let mut i = first;
                while due < deadline {
                    tokio::time::sleep_until(due.into()).await;
                    op(task, i).await?;
                    lat.push(u64::try_from(due.elapsed().as_nanos()).unwrap_or(u64::MAX));
                    i += 1;
                    due += period;
                }
                Ok::<_, BenchError>(lat)
            })
        })
        .collect();
    collect(bench, start, tasks).await
}

/// Waits for every load task; their latencies as one sample timed from `start`. The first
/// failing operation (or a panicked task) fails the measurement.
async fn collect(
    bench: &'static str,
    start: Instant,
    tasks: Vec<tokio::task::JoinHandle<Result<Vec<u64>, BenchError>>>,
) -> Result<Sample, BenchError> {
    let mut all = Vec::new();
    for t in tasks {
        let lat = t.await.map_err(|e| BenchError::op(bench, format!("load task: {e}")))??;
        all.extend(lat);
    }
    Ok(Sample::new(start.elapsed(), all))
}

/// Counts events and wakes one waiter when the count reaches `target`.
pub(crate) struct Countdown {
    count: AtomicUsize,
    target: usize,
    done: Notify,
}

impl Countdown {
    pub fn new(target: usize) -> Self {
        Countdown { count: AtomicUsize::new(0), target, done: Notify::new() }
    }

    pub fn hit(&self) {
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.target {
            // Stores a permit if nobody waits yet, so a later `wait` still returns.
            self.done.notify_one();
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until the target was reached, at most `limit`.
    pub async fn wait(&self, bench: &'static str, what: &str, limit: Duration) -> Result<(), BenchError> {
        if self.count() >= self.target {
            return Ok(());
        }
        match tokio::time::timeout(limit, self.done.notified()).await {
            Ok(()) => Ok(()),
            Err(_) if self.count() >= self.target => Ok(()),
            Err(_) => Err(BenchError::Timeout {
                bench,
                what: format!("{what} ({} of {})", self.count(), self.target),
                waited: limit,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Sample::new(Duration::from_secs(2), (1..=100).rev().map(|i| i * 1_000).collect());
        assert_eq!(s.ops(), 100);
        assert_eq!(s.per_sec(), 50.0);
        assert_eq!(s.percentile_us(0.5), 50.0);
        assert_eq!(s.percentile_us(0.99), 99.0);
        assert_eq!(s.percentile_us(1.0), 100.0);
        assert_eq!(s.percentile_us(0.0), 1.0);
        assert_eq!(Sample::default().percentile_us(0.5), 0.0);
    }

    #[test]
    fn a_spread_is_the_median_and_range_of_the_repetitions() {
        let s = Spread::of([120.0, 100.0, 90.0, 110.0, 80.0].into_iter());
        assert_eq!(s, Spread { median: 100.0, min: 80.0, max: 120.0 });
        assert_eq!(s.percent(), 40.0);
        assert_eq!(Spread::of([3.0, 1.0].into_iter()).median, 2.0);
        assert_eq!(Spread::of(std::iter::empty()), Spread { median: 0.0, min: 0.0, max: 0.0 });
    }

    #[test]
    fn rows_over_repetitions_are_each_figures_median() {
        let sample = |ops: u64| Sample::new(Duration::from_secs(1), (1..=ops).map(|i| i * 1_000).collect());
        let engine = [sample(10), sample(30), sample(20)];
        let baseline = [sample(40), sample(40), sample(100)];
        let rows = median_rows("c", "ops/s", &engine, &baseline);
        assert_eq!((rows[0].engine, rows[0].baseline, rows[0].ratio), (20.0, 40.0, 0.5));
        assert_eq!(rows[3].metric, "max latency");
        assert_eq!((rows[3].engine, rows[3].baseline), (20.0, 40.0));
    }

    #[tokio::test]
    async fn the_load_driver_runs_every_task_and_numbers_operations_past_the_warmup() {
        use std::sync::{Arc, Mutex};
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let sample = measure("test", 3, Duration::from_millis(20), Duration::from_millis(30), move |t, i| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((t, i));
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok(())
            }
        })
        .await
        .unwrap();
        let seen = seen.lock().unwrap();
        assert!(sample.ops() > 0 && sample.ops() < seen.len());
        for t in 0..3 {
            let mut ids: Vec<u64> = seen.iter().filter(|(task, _)| *task == t).map(|(_, i)| *i).collect();
            let n = ids.len();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), n, "task {t} reused an operation number");
        }
    }

    #[tokio::test]
    async fn a_countdown_wakes_its_waiter_even_when_it_finished_first() {
        let c = Countdown::new(2);
        c.hit();
        c.hit();
        c.wait("test", "hits", Duration::from_secs(1)).await.unwrap();
        let c = Countdown::new(3);
        c.hit();
        let e = c.wait("test", "hits", Duration::from_millis(10)).await.unwrap_err();
        assert!(e.to_string().contains("hits (1 of 3)"), "{e}");
    }
}
