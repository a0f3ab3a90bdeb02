//! `gate`: the gate hop (`engine::gate::Gateway`, the reference game's `gate` flavor) on real
//! `sandtable-server` processes, against the same client talking to the backend directly, in
//! the same run.
//!
//! Servers: `sandtable-server` child processes started from generated manifests (the shape of
//! `examples/MANIFEST.{game,gate}.json`) on the run's private ZooKeeper and Redis: TCP JSON
//! client ports only, heartbeats off and a 24 h idle timeout (idle players stay connected),
//! backends with SQL on (the embedded SQLite file in a temporary directory, every shard on
//! it). Session keys are minted by the bench with the gates' `Gate.session_key_secret`
//! (`engine::gate::SessionKeys`), as a login server would. Clients are TCP JSON
//! (4-byte length + `{"type", "body"}`), in this process.
//!
//! | case | engine (gated) | baseline (direct, same run) |
//! |---|---|---|
//! | `R msg/s, cs_counter_add` | [`PLAYERS`] players logged in on the gate (`cs_gate_login`), each sending `cs_counter_add {n: 1, seq}` with the next `seq` and waiting for its `sc_counter` (applied): client → gate → `_gate.forward` RPC → the backend's gated session → the game's handler (a transaction on the player's cached `Counter` object, **one durable SQLite commit**, group-committed) → the reply in the answer of `_gate.forward` (or, past the hold, by `_gate.deliver`) → gate → client | the same players' twins logged in on the same backend process directly (`cs_game_server_login`), same message, same handler, same commit |
//! | `R msg/s, cs_counter_add repeat` | the same, but `seq` repeats an applied one: the handler takes the object's lock, reads the cached object and answers `duplicate: true` **without writing SQL** (the owner's lease is checked in memory), so the gate's hop is not hidden behind a disk commit | the same repeat, direct |
//! | `switch, 1 player at a time`, `switch, 20 players at once` | [`SWITCH_PLAYERS`] players on a fresh gate with two fresh backends, each moving to the other backend on its one connection (`cs_move`, then, once `sc_move` said the switch started, an applied `cs_counter_add` the gate holds): the switch pause (`cs_move` written → `sc_moved` read) and the held add (written → answered by the new backend), p50 and p99, against the issue's target p99 ≤ [`SWITCH_PAUSE_P99_TARGET_MS`] ms | the same players' adds without a switch, in the same rounds |
//! | `N idle players` | resident memory of the gate process (`VmRSS` of `/proc/<pid>/status`) per idle player logged in through it; and of its backend per gated player | resident memory of a game server process per idle direct session logged in on it (`cs_game_server_login`) |
//!
//! | `R msg/s, ...`, rows "via a raw relay" | — | the same players' twins logged in on the backend directly, but through a raw TCP relay ([`RawRelay`](super::relay::RawRelay): tokio's `copy_bidirectional` on a thread of its own): the floor of any hop on this machine, one read and one write per frame and direction |
//!
//! Load is open-loop: the players together are due to send `R` messages per second (R =
//! 1,000 and 10,000), each player one every `PLAYERS / R` s at fixed instants, one message
//! in flight per player; a latency is counted from the instant its message was due, not from
//! when it was sent (no coordinated omission), until its reply was read. "service time" is
//! counted from the instant the client wrote its message: the hop's own cost, without the
//! load generator's timer lateness (tokio's timers tick in milliseconds), so the issue's
//! targets for the added latency are checked on it. Each path's measurement is cut into
//! [`SLICES`] slices run in turn with the other paths' (palindromic order), so a drift in the
//! machine's load falls on every path alike. "throughput" is the
//! replies read per second of the measurement (below R when the path cannot keep up).
//! "server CPU per message" is the CPU time (user + system, `/proc/<pid>/stat`, 10 ms ticks)
//! the backend and the gate processes together used during the measurement, per reply: what
//! the hop costs in CPU, and why a path saturates (the gate process is idle on the direct
//! path, so its baseline is the backend's alone). Each measurement follows a warm-up at the
//! same rate on the same path. The added latency of the
//! hop (gated − direct service time, p50 and p99) is printed in the notes against the issue's
//! targets (≤ [`ADDED_P50_TARGET_US`] µs p50, ≤ [`ADDED_P99_TARGET_US`] µs p99), with what the
//! raw relay adds over direct and the gate beyond the raw relay.
//!
//! Memory: every process is fresh for it. The gated side (a gate and its one backend, in a
//! cluster of their own) and the direct side (one game server, in another cluster) each get
//! N clients that connect and log in ([`LOGINS_IN_FLIGHT`] at a time), then sit idle; each
//! process's `VmRSS` is read after it became healthy (the gated side: after one first player
//! was bound, so the gate has seen its backend) and again once every login was answered
//! (each read after [`SETTLE`]); growth / N. A gated player also costs its backend a gated session and
//! its pinned anchor object, reported as a row of its own (and gate + backend together).
//! Players per gate are bounded by file descriptors: a gate holds one per player (the
//! backend none: gated sessions are in-memory queues), and so does this process for its
//! clients. N is cut, with a note, to the hard `RLIMIT_NOFILE` minus [`FD_RESERVE`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use engine::env::WallTime;
use engine::gate::SessionKeys;
use engine::session::codec::{self, InBody};
use engine::session::Transport;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::driver::{free_low_port, paced, runtime, throughput_rows, Sample};
use super::machine::{cpu_time_of, open_fds, rss_kib_of};
use super::relay::RawRelay;
use super::{fmt_num, BenchError, BenchReport, Better, Ctx, Row};
use crate::adapters::OsRand;

mod switch;

const BENCH: &str = "gate";
/// Players sending in the latency measurements (on each path).
pub const PLAYERS: usize = 100;
/// Total message rates of the latency measurements (msg/s, all players together).
pub const RATES: [f64; 2] = [1_000.0, 10_000.0];
/// Slices each path's measurement is cut into, the two paths' slices alternating (ABBA).
pub const SLICES: u32 = 6;
/// The issue's targets for the latency the gate hop adds (gated − direct).
pub const ADDED_P50_TARGET_US: f64 = 100.0;
pub const ADDED_P99_TARGET_US: f64 = 1_000.0;
/// The issue's target for a gate's memory per idle player, as a multiple of a direct session's.
pub const MEMORY_RATIO_TARGET: f64 = 2.0;
/// Players of the switch cases, and rounds: in each round every player moves once alone
/// (one after another) and once with all the others at the same time.
pub const SWITCH_PLAYERS: usize = 20;
pub const SWITCH_ROUNDS: usize = 5;
/// The issue's target for the switch pause (`cs_move` written to `sc_moved` read), p99, on
/// loopback.
pub const SWITCH_PAUSE_P99_TARGET_MS: f64 = 50.0;
/// Logins (connect + login + reply) in flight at once while opening idle players.
pub const LOGINS_IN_FLIGHT: usize = 32;
/// Descriptors a server process keeps for everything but its clients (ZooKeeper, Redis,
/// RPC peers, SQLite, listeners, runtime), and this process likewise.
pub const FD_RESERVE: u64 = 512;
/// Pause after a server became healthy, and after the last login, before `VmRSS` is read.
pub const SETTLE: Duration = Duration::from_secs(1);
/// How long a server may take to answer its health check with 200.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);
/// How long a gate may take to see a backend in its cluster view.
const BACKEND_SEEN_WITHIN: Duration = Duration::from_secs(30);
/// How long a client waits for one reply (an overloaded path is slow, not broken).
const REPLY_WITHIN: Duration = Duration::from_secs(60);
/// Largest frame a bench client accepts.
const CLIENT_FRAME_MAX: usize = 1 << 20;
/// The gates' `Gate.session_key_secret` (the bench mints the keys with it).
const SECRET_HEX: &str = "62656e63682d676174652d73657373696f6e2d6b65792d6e6f742d70726f6421";
/// `AccountManager.redirection_secret` of every bench server.
const REDIRECTION_SECRET: &str = "62656e63682d676174652d72656469726563742d7365637265742d6e6f742d70";
/// ZooKeeper session timeout of the bench servers.
const ZK_SESSION_SECS: u64 = 10;
/// App ids: the latency cluster, the gated memory cluster, the direct memory server.
const APP_LATENCY: &str = "bench-gate";
const APP_MEMORY_GATED: &str = "bench-gate-mem";
const APP_MEMORY_DIRECT: &str = "bench-gate-direct";
/// The switch cluster: one gate, two backends.
const APP_SWITCH: &str = "bench-gate-switch";
/// The game's messages.
const CS_GATE_LOGIN: &str = "cs_gate_login";
const SC_GATE_LOGIN: &str = "sc_gate_login";
const CS_LOGIN: &str = "cs_game_server_login";
const SC_LOGIN: &str = "sc_game_server_login";
const CS_ADD: &str = "cs_counter_add";
const SC_COUNTER: &str = "sc_counter";
const CS_MOVE: &str = "cs_move";
const SC_MOVE: &str = "sc_move";
const SC_MOVED: &str = "sc_moved";

/// The message a latency measurement sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Msg {
    /// `cs_counter_add` with the next `seq`: applied, one SQL commit.
    Add,
    /// `cs_counter_add` with `seq` 1 again: answered as a duplicate, no SQL.
    Repeat,
}

impl Msg {
    fn label(self) -> &'static str {
        match self {
            Msg::Add => "cs_counter_add",
            Msg::Repeat => "cs_counter_add repeat",
        }
    }
}

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    let exe = server_exe(ctx)?;
    let rt = runtime()?;
    let dir = tempfile::tempdir().map_err(BenchError::io("creating the gate bench's directory"))?;
    let report = rt.block_on(async {
        let mut report = BenchReport::new(BENCH);
        let env = ProcEnv::new(ctx, exe, dir.path())?;
        latency(ctx, &env, &mut report).await?;
        switch::switch(&env, &mut report).await?;
        memory(ctx, &env, &mut report).await?;
        Ok::<_, BenchError>(report)
    });
    drop(rt);
    report
}

/// `sandtable-server`: `--server-exe`, else next to this executable (or one directory up, for
/// a test binary in `deps/`).
fn server_exe(ctx: &Ctx) -> Result<PathBuf, BenchError> {
    if let Some(p) = &ctx.server_exe {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().map_err(BenchError::io("locating this executable"))?;
    let name = format!("sandtable-server{}", std::env::consts::EXE_SUFFIX);
    me.ancestors().skip(1).take(2).map(|d| d.join(&name)).find(|p| p.is_file()).ok_or_else(|| {
        BenchError::setup(
            BENCH,
            format!(
                "no {name} next to {}: build it (cargo build -p real --release --bins) or pass --server-exe",
                me.display()
            ),
        )
    })
}

/// The latency cases: one backend and one gate; [`PLAYERS`] direct and gated players.
async fn latency(ctx: &Ctx, env: &ProcEnv, report: &mut BenchReport) -> Result<(), BenchError> {
    let data = env.dir.join("latency");
    let game = env.spawn("game-1", "game", APP_LATENCY, &data)?;
    let gate = env.spawn("gate-1", "gate", APP_LATENCY, &data)?;
    let servers = [&game, &gate];
    let result = async {
        for s in servers {
            s.wait_healthy().await?;
        }
        let keys = env.keys();
        let relay = RawRelay::start(game.client)?;
        let gated: Vec<_> = open_players(gate.client, "lg", PLAYERS, Some(&keys)).await?;
        let direct: Vec<_> = open_players(game.client, "ld", PLAYERS, None).await?;
        let relayed: Vec<_> = open_players(relay.addr, "lr", PLAYERS, None).await?;
        let (gated, direct, relayed) = (players(gated), players(direct), players(relayed));
        // Every counter exists (and is cached on the backend) before anything is measured.
        for p in gated.iter().chain(direct.iter()).chain(relayed.iter()) {
            p.lock().await.add(Msg::Add).await?;
        }
        let warmup = ctx.settings.warmup();
        let duration = ctx.settings.duration();
        let pids = [game.child.id(), gate.child.id()];
        for rate in RATES {
            for msg in [Msg::Add, Msg::Repeat] {
                let [d, g, r] =
                    measure_paths([&direct, &gated, &relayed], pids, rate, msg, warmup, duration).await?;
                let case = format!("{} msg/s, {}", fmt_num(rate), msg.label());
                report.rows.extend(throughput_rows(&case, "msg/s", &g.due, &d.due));
                let per_msg = |cpu: Duration, s: &Sample| cpu.as_secs_f64() * 1e6 / s.ops().max(1) as f64;
                let (g_us, d_us) = (per_msg(g.cpu, &g.due), per_msg(d.cpu, &d.due));
                if g_us > 0.0 && d_us > 0.0 {
                    let metric = "server CPU per message";
                    report.rows.push(Row::new(&case, metric, "us", Better::Lower, g_us, d_us));
                } else {
                    report.notes.push(format!(
                        "{case}: server CPU per message not reported: below the clock-tick resolution (gated {} \
                         ms, direct {} ms in all)",
                        g.cpu.as_millis(),
                        d.cpu.as_millis()
                    ));
                }
                for (metric, q) in [("p50 service time", 0.5), ("p99 service time", 0.99)] {
                    let (gs, ds) = (g.service.percentile_us(q), d.service.percentile_us(q));
                    report.rows.push(Row::new(&case, metric, "us", Better::Lower, gs, ds));
                    let rs = r.service.percentile_us(q);
                    report.rows.push(Row::new(&case, &format!("{metric} via a raw relay"), "us", Better::Lower, rs, ds));
                }
                report.notes.push(relay_note(&case, &g, &d, &r));
                report.notes.push(added_note(&case, &g, &d));
            }
        }
        Ok::<_, BenchError>(())
    }
    .await;
    result.map_err(|e| with_logs(e, &servers))
}

/// Paths of the latency cases, in [`measure_paths`]' order.
const PATHS: usize = 3;

/// What one path did in one case: latencies from the due instants (the figures), service times
/// (from the instant the message was written), and the CPU time of the server processes.
struct PathRun {
    due: Sample,
    service: Sample,
    cpu: Duration,
}

/// One case on every path (`[direct, gated, relayed]`): a warm-up of each (discarded), then
/// `duration` of each cut into [`SLICES`] slices, run in turn in palindromic rounds (direct,
/// gated, relayed, relayed, gated, direct, ...), every slice paced at `rate` on its path
/// alone, so that a drift in the machine's load (other processes on the shared cores) falls
/// on every path alike instead of on whichever ran last. Each slice's latencies and the CPU
/// time the server processes `pids` (backend and gate) used during it count for its path.
async fn measure_paths(
    paths: [&Arc<[Player]>; PATHS],
    pids: [u32; 2],
    rate: f64,
    msg: Msg,
    warmup: Duration,
    duration: Duration,
) -> Result<[PathRun; PATHS], BenchError> {
    let service: [Arc<std::sync::Mutex<Vec<u64>>>; PATHS] = Default::default();
    let op = |i: usize| {
        let players = paths[i].clone();
        let service = service[i].clone();
        move |task: usize, _n: u64| {
            let p = players[task].clone();
            let service = service.clone();
            async move {
                let mut p = p.lock().await;
                let sent = Instant::now();
                p.add(msg).await?;
                let ns = u64::try_from(sent.elapsed().as_nanos()).unwrap_or(u64::MAX);
                service.lock().unwrap_or_else(|e| e.into_inner()).push(ns);
                Ok(())
            }
        }
    };
    let cpu = || -> Result<Duration, BenchError> {
        pids.iter()
            .map(|p| {
                cpu_time_of(*p)
                    .ok_or_else(|| BenchError::op(BENCH, format!("cannot read the CPU time of pid {p}")))
            })
            .sum()
    };
    if !warmup.is_zero() {
        for (i, path) in paths.iter().enumerate() {
            paced(BENCH, path.len(), rate, warmup, 0, op(i)).await?;
        }
    }
    for s in &service {
        s.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    let slice = duration / SLICES;
    let mut due: [Vec<Sample>; PATHS] = Default::default();
    let mut cpus = [Duration::ZERO; PATHS];
    for round in 0..SLICES as usize {
        for k in 0..PATHS {
            let i = if round % 2 == 0 { k } else { PATHS - 1 - k };
            let before = cpu()?;
            due[i].push(paced(BENCH, paths[i].len(), rate, slice, 0, op(i)).await?);
            cpus[i] += cpu()?.saturating_sub(before);
        }
    }
    let mut i = 0;
    Ok(due.map(|due| {
        let service = std::mem::take(&mut *service[i].lock().unwrap_or_else(|e| e.into_inner()));
        let elapsed = due.iter().map(|s| s.elapsed).sum();
        let run = PathRun { due: Sample::merge(due), service: Sample::new(elapsed, service), cpu: cpus[i] };
        i += 1;
        run
    }))
}

/// The note on what the hop added in one case, against the targets. The targets are checked
/// on service time (from the instant the client wrote its message to its reply): the latency
/// from the due instants also carries the load generator's own lateness (its timers tick in
/// milliseconds), noise ten times the size of a 100 µs target; it is printed beside.
fn added_note(case: &str, gated: &PathRun, direct: &PathRun) -> String {
    let added = |g: &Sample, d: &Sample, q: f64| g.percentile_us(q) - d.percentile_us(q);
    let (p50, p99) =
        (added(&gated.service, &direct.service, 0.5), added(&gated.service, &direct.service, 0.99));
    let verdict = |v: f64, target: f64| if v <= target { "met" } else { "NOT met" };
    format!(
        "{case}: the gate hop added in service time p50 {} us (target <= {ADDED_P50_TARGET_US} us: {}), p99 {} us \
         (target <= {ADDED_P99_TARGET_US} us: {}); from the due instants p50 {} us, p99 {} us; {} replies gated, \
         {} direct, in {SLICES} slices each",
        fmt_num(p50),
        verdict(p50, ADDED_P50_TARGET_US),
        fmt_num(p99),
        verdict(p99, ADDED_P99_TARGET_US),
        fmt_num(added(&gated.due, &direct.due, 0.5)),
        fmt_num(added(&gated.due, &direct.due, 0.99)),
        gated.due.ops(),
        direct.due.ops(),
    )
}

/// The note on what a raw relay hop adds in service time (the floor of any hop on this
/// machine), and what the gate adds beyond it.
fn relay_note(case: &str, gated: &PathRun, direct: &PathRun, relayed: &PathRun) -> String {
    let at = |r: &PathRun, q: f64| r.service.percentile_us(q);
    let q = |q: f64| (at(relayed, q) - at(direct, q), at(gated, q) - at(relayed, q));
    let ((r50, g50), (r99, g99)) = (q(0.5), q(0.99));
    format!(
        "{case}: in service time a raw TCP relay hop (tokio copy_bidirectional, a thread of its own) adds p50 {} \
         us, p99 {} us over direct; the gate adds p50 {} us, p99 {} us beyond the raw relay",
        fmt_num(r50),
        fmt_num(r99),
        fmt_num(g50),
        fmt_num(g99),
    )
}

/// The memory cases: N idle players on a fresh gate (and its fresh backend), N idle direct
/// sessions on a fresh game server.
async fn memory(ctx: &Ctx, env: &ProcEnv, report: &mut BenchReport) -> Result<(), BenchError> {
    let asked = ctx.settings.players;
    // The gate (and this process) hold one descriptor per player.
    let affordable = ctx.fd.soft.saturating_sub(open_fds() + FD_RESERVE);
    let n = asked.min(usize::try_from(affordable).unwrap_or(usize::MAX));
    if n == 0 {
        return Err(BenchError::setup(
            BENCH,
            format!("the fd limit {} leaves room for no player", ctx.fd.soft),
        ));
    }
    if n < asked {
        report.notes.push(format!(
            "asked for {asked} idle players, ran {n}: a gate holds one descriptor per player and the open-files \
             hard limit is {} per process ({FD_RESERVE} kept for the rest)",
            ctx.fd.hard
        ));
    }
    // The baseline: a game server holding N idle direct sessions.
    let direct_data = env.dir.join("memory-direct");
    let direct = env.spawn("direct-1", "game", APP_MEMORY_DIRECT, &direct_data)?;
    let direct_growth = async {
        direct.wait_healthy().await?;
        tokio::time::sleep(SETTLE).await;
        let before = direct.rss_kib()?;
        let clients = open_players(direct.client, "md", n, None).await?;
        tokio::time::sleep(SETTLE).await;
        let after = direct.rss_kib()?;
        drop(clients);
        Ok::<_, BenchError>(after.saturating_sub(before))
    }
    .await
    .map_err(|e| with_logs(e, &[&direct]))?;
    drop(direct);

    // The gate and its backend, N idle players through the gate.
    let gated_data = env.dir.join("memory-gated");
    let game = env.spawn("game-m", "game", APP_MEMORY_GATED, &gated_data)?;
    let gate = env.spawn("gate-m", "gate", APP_MEMORY_GATED, &gated_data)?;
    let servers = [&game, &gate];
    let (gate_growth, backend_growth) = async {
        for s in servers {
            s.wait_healthy().await?;
        }
        let keys = env.keys();
        // One player first: the gate sees the backend, and both start from a warm state.
        let first = open_players(gate.client, "mw", 1, Some(&keys)).await?;
        tokio::time::sleep(SETTLE).await;
        let (gate_before, game_before) = (gate.rss_kib()?, game.rss_kib()?);
        let clients = open_players(gate.client, "mg", n, Some(&keys)).await?;
        tokio::time::sleep(SETTLE).await;
        let (gate_after, game_after) = (gate.rss_kib()?, game.rss_kib()?);
        drop((first, clients));
        Ok::<_, BenchError>((gate_after.saturating_sub(gate_before), game_after.saturating_sub(game_before)))
    }
    .await
    .map_err(|e| with_logs(e, &servers))?;

    let per = |kib: u64| kib as f64 / n as f64;
    let case = format!("{n} idle players");
    let (direct_kib, gate_kib, backend_kib) = (per(direct_growth), per(gate_growth), per(backend_growth));
    if direct_kib > 0.0 && gate_kib > 0.0 {
        report.rows.push(Row::new(
            &case,
            "gate memory per player",
            "KiB",
            Better::Lower,
            gate_kib,
            direct_kib,
        ));
        let verdict = if gate_kib <= MEMORY_RATIO_TARGET * direct_kib { "met" } else { "NOT met" };
        report.notes.push(format!(
            "{case}: gate resident memory per idle player {} KiB = {:.2}x a direct session's {} KiB (target <= \
             {MEMORY_RATIO_TARGET}x: {verdict})",
            fmt_num(gate_kib),
            gate_kib / direct_kib,
            fmt_num(direct_kib)
        ));
        if backend_kib > 0.0 {
            report.rows.push(Row::new(
                &case,
                "backend memory per gated player",
                "KiB",
                Better::Lower,
                backend_kib,
                direct_kib,
            ));
            report.rows.push(Row::new(
                &case,
                "gate + backend memory per player",
                "KiB",
                Better::Lower,
                gate_kib + backend_kib,
                direct_kib,
            ));
        }
    } else {
        report.notes.push(format!(
            "resident memory not reported: VmRSS did not grow (gate {gate_kib:.2} KiB, direct {direct_kib:.2} KiB \
             per player)"
        ));
    }
    let fd_max = ctx.fd.hard.saturating_sub(FD_RESERVE);
    report.notes.push(format!(
        "{case}: VmRSS growth of each process / N, from a fresh process (the gate measured after its first player \
         was bound); baseline: a game server with N idle logged-in direct sessions. Players per gate are bounded \
         by descriptors, one per player: at the hard limit of {} per process, about {fd_max} players per gate, \
         whose resident memory would be about {} MiB at the measured {} KiB each",
        ctx.fd.hard,
        fmt_num(fd_max as f64 * gate_kib / 1024.0),
        fmt_num(gate_kib)
    ));
    Ok(())
}

/// Where the bench's servers run: the executable, the services, a directory.
struct ProcEnv {
    exe: PathBuf,
    zookeeper: String,
    redis_addr: String,
    dir: PathBuf,
    secret: [u8; 32],
}

impl ProcEnv {
    fn new(ctx: &Ctx, exe: PathBuf, dir: &Path) -> Result<ProcEnv, BenchError> {
        let redis_addr = ctx
            .redis_url
            .strip_prefix("redis://")
            .map(|s| s.trim_end_matches('/').to_string())
            .ok_or_else(|| BenchError::setup(BENCH, format!("redis URL {:?}", ctx.redis_url)))?;
        let secret = engine::signed::parse_secret(SECRET_HEX)
            .map_err(|e| BenchError::setup(BENCH, format!("session key secret: {e}")))?;
        Ok(ProcEnv { exe, zookeeper: ctx.zookeeper.clone(), redis_addr, dir: dir.to_path_buf(), secret })
    }

    fn keys(&self) -> SessionKeys {
        SessionKeys::new(self.secret, Duration::from_secs(3600))
    }

    /// Starts `sandtable-server` as `name` of `flavor` in cluster `app`, SQLite files in `data`.
    fn spawn(&self, name: &str, flavor: &str, app: &str, data: &Path) -> Result<ServerProc, BenchError> {
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
        std::fs::create_dir_all(data).map_err(BenchError::io(format!("creating {}", data.display())))?;
        let (client, api, rpc) = (free_low_port()?, free_low_port()?, free_low_port()?);
        let mut m = json!({
            "AppInfo": { "app_id": app },
            "SessionService": {
                "tcp_json_port": client,
                "tcp_protobuf_port": 0,
                "websocket_json_port": 0,
                "idle_timeout_in_second": 86_400,
                "heartbeat_interval_in_second": 0
            },
            "ApiService": { "api_service_port": api },
            "Redis": {
                "enable_redis": true,
                "redis_mode": "redis",
                "redis_servers": { "cross_server_storage": { "address": self.redis_addr, "auth_pass": "" } }
            },
            "RpcService": { "rpc_enabled": true, "rpc_port": rpc, "rpc_tags": [flavor] },
            "ZookeeperClient": {
                "zookeeper_nodes": self.zookeeper,
                "zookeeper_session_timeout_in_second": ZK_SESSION_SECS
            },
            "CrossServerStorage": {
                "enable_cross_server_storage": true,
                "redis_tag_for_cross_server_storage": "cross_server_storage"
            },
            "AccountManager": { "redirection_secret": REDIRECTION_SECRET }
        });
        match flavor {
            "gate" => m["Gate"] = json!({ "session_key_secret": SECRET_HEX }),
            _ => m["Object"] = json!({ "enable_database": true }),
        }
        let manifest = dir.join(format!("MANIFEST.{flavor}.json"));
        let text = serde_json::to_string_pretty(&m).expect("a manifest serialises");
        std::fs::write(&manifest, text).map_err(BenchError::io(format!("writing {}", manifest.display())))?;
        let log = dir.join("server.log");
        let out =
            std::fs::File::create(&log).map_err(BenchError::io(format!("creating {}", log.display())))?;
        let err = out.try_clone().map_err(BenchError::io(format!("opening {}", log.display())))?;
        let child = Command::new(&self.exe)
            .arg("--manifest")
            .arg(&manifest)
            .arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(data)
            // Warnings only: the servers must not measure their own logging.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(BenchError::io(format!("starting {}", self.exe.display())))?;
        Ok(ServerProc {
            name: name.to_string(),
            child,
            client: SocketAddr::from((Ipv4Addr::LOCALHOST, client)),
            api,
            log,
        })
    }
}

/// One `sandtable-server` child; killed when dropped.
struct ServerProc {
    name: String,
    child: Child,
    /// Its TCP JSON client port.
    client: SocketAddr,
    api: u16,
    log: PathBuf,
}

impl ServerProc {
    /// Resident memory of the process, in KiB.
    fn rss_kib(&self) -> Result<u64, BenchError> {
        rss_kib_of(self.child.id()).ok_or_else(|| {
            BenchError::op(BENCH, format!("cannot read VmRSS of {} (pid {})", self.name, self.child.id()))
        })
    }

    /// Waits until `GET /v1/health` answers 200.
    async fn wait_healthy(&self) -> Result<(), BenchError> {
        let start = Instant::now();
        while health(self.api).await != Some(200) {
            if start.elapsed() > HEALTHY_WITHIN {
                return Err(BenchError::Timeout {
                    bench: BENCH,
                    what: format!("{} to be healthy", self.name),
                    waited: HEALTHY_WITHIN,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// The last lines of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `e`, with the log tails of `servers` when it is a failure (not a setup error of the bench).
fn with_logs(e: BenchError, servers: &[&ServerProc]) -> BenchError {
    let logs: Vec<String> = servers.iter().map(|s| format!("--- {} ---\n{}", s.name, s.log_tail())).collect();
    match e {
        BenchError::Op { bench, reason } => {
            BenchError::Op { bench, reason: format!("{reason}\n{}", logs.join("\n")) }
        }
        BenchError::Timeout { bench, what, waited } => {
            BenchError::Timeout { bench, what: format!("{what}\n{}", logs.join("\n")), waited }
        }
        other => other,
    }
}

/// The status code of `GET /v1/health` on `127.0.0.1:port`, or `None` if it does not answer.
async fn health(port: u16) -> Option<u16> {
    let fut = async {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await.ok()?;
        s.write_all(b"GET /v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        String::from_utf8_lossy(&buf).split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), fut).await.ok().flatten()
}

type Player = Arc<Mutex<Client>>;

fn players(clients: Vec<Client>) -> Arc<[Player]> {
    clients.into_iter().map(|c| Arc::new(Mutex::new(c))).collect()
}

/// `n` clients of `server` logged in as `{prefix}{i}`: through a gate with a session key
/// minted with `keys`, or directly on a game server (`keys` `None`).
async fn open_players(
    server: SocketAddr,
    prefix: &str,
    n: usize,
    keys: Option<&SessionKeys>,
) -> Result<Vec<Client>, BenchError> {
    futures::stream::iter(0..n)
        .map(|i| async move {
            let user = format!("{prefix}{i}");
            let mut c = Client::connect(server).await?;
            match keys {
                Some(keys) => c.gate_login(keys, &user).await?,
                None => {
                    let r = c.call(CS_LOGIN, json!({ "user_name": user }), SC_LOGIN).await?;
                    if r["error"] != json!(false) {
                        return Err(BenchError::op(BENCH, format!("direct login of {user}: {r}")));
                    }
                }
            }
            Ok(c)
        })
        .buffer_unordered(LOGINS_IN_FLIGHT)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

fn wall_now() -> WallTime {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    WallTime(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// A TCP JSON game client.
struct Client {
    conn: Framed<TcpStream, LengthDelimitedCodec>,
    /// The last `seq` its counter applied.
    seq: u64,
    /// Behind a gate: the backend that holds the player (`sc_gate_login`, then `sc_moved`).
    backend: String,
}

impl Client {
    async fn connect(server: SocketAddr) -> Result<Client, BenchError> {
        let what = || format!("connecting a client to {server}");
        let socket = TcpSocket::new_v4().map_err(BenchError::io(what()))?;
        // Closing resets the connection instead of leaving TIME_WAIT behind.
        socket.set_zero_linger().map_err(BenchError::io(what()))?;
        let stream = socket.connect(server).await.map_err(BenchError::io(what()))?;
        stream.set_nodelay(true).map_err(BenchError::io(what()))?;
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(CLIENT_FRAME_MAX)
            .new_codec();
        Ok(Client { conn: Framed::new(stream, codec), seq: 0, backend: String::new() })
    }

    /// Writes one message.
    async fn send(&mut self, msg_type: &str, body: Value) -> Result<(), BenchError> {
        let frame: Bytes = codec::encode_json_message(Transport::TcpJson, msg_type, &body);
        self.conn.send(frame).await.map_err(|e| BenchError::op(BENCH, format!("{msg_type}: send: {e}")))
    }

    /// The next message, as type and body; an `_error` frame or a closed connection is an
    /// error (`waiting_for` names what was awaited).
    async fn recv(&mut self, waiting_for: &str) -> Result<(String, Value), BenchError> {
        let fail = |why: String| BenchError::op(BENCH, format!("{waiting_for}: {why}"));
        let frame = match tokio::time::timeout(REPLY_WITHIN, self.conn.next()).await {
            Err(_) => return Err(fail(format!("nothing within {REPLY_WITHIN:?}"))),
            Ok(None) => return Err(fail("connection closed".into())),
            Ok(Some(Err(e))) => return Err(fail(e.to_string())),
            Ok(Some(Ok(f))) => f,
        };
        let m = codec::decode(Transport::TcpJson, &frame).map_err(|e| fail(e.to_string()))?;
        let InBody::Json(v) = m.body else {
            return Err(fail(format!("{} has no JSON body", m.msg_type)));
        };
        if m.msg_type == codec::ERROR_TYPE {
            return Err(fail(format!("_error {v}")));
        }
        Ok((m.msg_type, v))
    }

    /// Sends `msg_type` and returns the body of the next message of type `reply` (skipping
    /// pushes); an `_error` frame or a closed connection is an error.
    async fn call(&mut self, msg_type: &str, body: Value, reply: &str) -> Result<Value, BenchError> {
        self.send(msg_type, body).await?;
        let waiting_for = format!("reply to {msg_type}");
        loop {
            let (t, v) = self.recv(&waiting_for).await?;
            if t == reply {
                return Ok(v);
            }
        }
    }

    /// `cs_gate_login` with a fresh key, again while the gate has no backend in view yet.
    async fn gate_login(&mut self, keys: &SessionKeys, user: &str) -> Result<(), BenchError> {
        let start = Instant::now();
        loop {
            let (key, _) = keys
                .issue(user, wall_now(), &OsRand)
                .map_err(|e| BenchError::setup(BENCH, format!("session key for {user}: {e}")))?;
            let r = self
                .call(CS_GATE_LOGIN, json!({ "user_name": user, "session_key": key }), SC_GATE_LOGIN)
                .await?;
            if r["error"] == json!(false) {
                self.backend = r["backend"].as_str().unwrap_or_default().to_string();
                return Ok(());
            }
            if r["error_message"] != json!("no backend") || start.elapsed() > BACKEND_SEEN_WITHIN {
                return Err(BenchError::op(BENCH, format!("gate login of {user}: {r}")));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One `cs_counter_add` and its `sc_counter`, checked.
    async fn add(&mut self, msg: Msg) -> Result<(), BenchError> {
        let seq = match msg {
            Msg::Add => self.seq + 1,
            Msg::Repeat => 1,
        };
        let r = self.call(CS_ADD, json!({ "n": 1, "seq": seq }), SC_COUNTER).await?;
        let duplicate = msg == Msg::Repeat;
        if r["error"] != json!(false) || r["seq"] != json!(seq) || r["duplicate"] != json!(duplicate) {
            return Err(BenchError::op(BENCH, format!("{} seq {seq}: {r}", msg.label())));
        }
        if msg == Msg::Add {
            self.seq = seq;
        }
        Ok(())
    }
}
