//! `sessions`: N idle client sessions held by one `SessionService` (TCP JSON on `TokioNet`),
//! against N raw tokio streams.
//!
//! The clients run in a **child process** (this executable again, hidden subcommand
//! `bench-session-clients`), so that this process holds only the server ends: one file
//! descriptor per session, so a server reaches (nearly) the whole open-files limit. The child
//! connects when told, reports on stdout (`connected`, then `received` once every client has
//! read one frame) and takes the server's accept count on stdin (it stays at most
//! [`UNACCEPTED_MAX`] connects ahead) and `quit`.
//!
//! Each side runs on a fresh runtime after the heap was trimmed, the baseline first, with a
//! fresh child, and measures:
//! - **resident memory per session**: growth of this (the server's) process's resident memory
//!   (`VmRSS`) from before the first connect to when all N are open, divided by N; kernel
//!   socket buffers are not in `VmRSS`. Memory a side frees is not all handed back to the
//!   kernel (glibc's `malloc_trim` leaves the top of per-thread arenas resident), and the side
//!   measured next reuses it without growing `VmRSS`: that is why the small baseline goes
//!   first, so the engine's figure is understated by at most the baseline's footprint. If a
//!   side did not grow at all (tiny N), the row is left out with a note rather than printed
//!   as 0;
//! - **heap per session**: growth of the bytes allocated and not freed (glibc's
//!   `mallinfo2`), divided by N: exact, immune to that reuse, and counting capacity a side
//!   allocated but never touched (which `VmRSS` does not);
//! - **broadcast**: from the call until the child reports that every client has read the
//!   frame. Engine: `SessionService::broadcast_locally` of one JSON message (queued per
//!   session, sent by each session's writer). Raw: the same bytes written to each of the N
//!   streams in turn.
//!
//! The engine's sessions have heartbeats off and a 24 h idle timeout, so they stay idle; the
//! service's unauthenticated-connection limits are raised to N (the clients never send) and
//! its memory budget to twice N sessions' base charge.
//!
//! N is cut to what the soft `RLIMIT_NOFILE` allows (one descriptor per session here, and
//! one per client in the child, which has the same limit), with a note. One client address
//! can reach one server port through at most ~28 000 ephemeral ports, so clients bind source
//! addresses `127.B.x.y` ([`CLIENTS_PER_SOURCE_IP`] each; B differs per side so that the
//! second side never meets the first side's closing sockets), and close with `SO_LINGER` 0
//! so that no `TIME_WAIT` is left behind for a following run.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use engine::session::{
    codec, NetClientListeners, ServiceLimits, SessionConfig, SessionService, Transport,
    DEFAULT_SESSION_MEMORY_MAX, SESSION_BASE_BYTES,
};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::driver::{runtime, Countdown};
use super::machine::{heap_bytes, open_fds, raise_fd_limit, rss_kib, trim_heap};
use super::{BenchError, BenchReport, Better, Ctx, Row};
use crate::adapters::bind_listener;
use crate::env::real_env;

const BENCH: &str = "sessions";
/// The hidden subcommand of the `real` executable that runs the clients.
pub const CLIENTS_SUBCOMMAND: &str = "bench-session-clients";
/// Client connections per source address (below the ~28 000 ephemeral ports one address
/// has towards one server port).
const CLIENTS_PER_SOURCE_IP: usize = 20_000;
/// Connects in flight at once.
const CONNECTS_IN_FLIGHT: usize = 64;
/// Connects the clients may be ahead of the server's accepts: far below the accept backlog
/// both servers listen with ([`crate::adapters::LISTEN_BACKLOG`], capped by
/// `net.core.somaxconn`), so that no SYN is dropped and no connect stalls for a retransmission.
const UNACCEPTED_MAX: usize = 96;
/// File descriptors left for everything else this process holds (runtime, stdio, the
/// private Redis and ZooKeeper's pipes, the child's pipes).
const FD_RESERVE: u64 = 128;
/// Idle timeout of the engine's sessions: far beyond any run.
const IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// Bound on the server falling behind the clients, and on the broadcast reaching every client.
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bound on the child exiting after `quit`.
const CHILD_EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server tells the child its accept count while clients connect.
const PROGRESS_PERIOD: Duration = Duration::from_millis(1);
/// Pause after the last session opened, so every session's task has run once before memory
/// is read.
const SETTLE: Duration = Duration::from_millis(200);
/// Largest frame a bench client accepts.
const CLIENT_FRAME_MAX: usize = 64 * 1024;
const MSG_TYPE: &str = "bench_broadcast";
/// Second octet of the clients' source addresses, per side.
const ENGINE_IP_BLOCK: u8 = 1;
const RAW_IP_BLOCK: u8 = 2;
/// Lines of the child's protocol (stdout, then stdin).
const LINE_CONNECTED: &str = "connected";
const LINE_RECEIVED: &str = "received";
const LINE_ACCEPTED: &str = "accepted";
const LINE_QUIT: &str = "quit";

/// What one side measured.
#[derive(Debug, Clone, Copy)]
struct Figures {
    rss_kib_per_session: f64,
    /// `None` where the allocator cannot say (off glibc).
    heap_kib_per_session: Option<f64>,
    broadcast_secs: f64,
}

pub(super) fn run(ctx: &Ctx) -> Result<BenchReport, BenchError> {
    let mut report = BenchReport::new(BENCH);
    let asked = ctx.settings.sessions;
    let affordable = ctx.fd.soft.saturating_sub(open_fds() + FD_RESERVE);
    let n = asked.min(usize::try_from(affordable).unwrap_or(usize::MAX));
    if n == 0 {
        return Err(BenchError::setup(
            BENCH,
            format!("the fd limit {} leaves room for no session", ctx.fd.soft),
        ));
    }
    if n < asked {
        report.notes.push(format!(
            "asked for {asked} sessions, ran {n}: the open-files limit is {} (hard {}); the server holds \
             1 descriptor per session ({FD_RESERVE} kept for the rest), the clients run in a child process \
             with the same limit",
            ctx.fd.soft, ctx.fd.hard
        ));
    }
    let exe = clients_exe()?;
    // The baseline first: see the module docs on memory measured second.
    let raw = side(|| raw_side(&exe, n))?;
    let engine = side(|| engine_side(ctx, &exe, n))?;
    let case = format!("{n} idle sessions");
    let (rss_e, rss_r) = (engine.rss_kib_per_session, raw.rss_kib_per_session);
    if rss_e > 0.0 && rss_r > 0.0 {
        report.rows.push(Row::new(&case, "resident memory per session", "KiB", Better::Lower, rss_e, rss_r));
    } else {
        report.notes.push(format!(
            "resident memory not reported: VmRSS did not grow (engine {rss_e:.2} KiB, baseline {rss_r:.2} KiB \
             per session): a side reused memory freed but still resident; see heap per session"
        ));
    }
    if let (Some(e), Some(r)) = (engine.heap_kib_per_session, raw.heap_kib_per_session) {
        report.rows.push(Row::new(&case, "heap per session", "KiB", Better::Lower, e, r));
    }
    let (ms_e, ms_r) = (engine.broadcast_secs * 1e3, raw.broadcast_secs * 1e3);
    report.rows.push(Row::new(&case, "broadcast to all", "ms", Better::Lower, ms_e, ms_r));
    report.notes.push(format!(
        "resident memory: VmRSS growth / N; heap: bytes allocated and not freed (glibc mallinfo2) growth \
         / N; both of the server process only (the clients run in a child process). Engine: \
         SessionService TCP JSON, heartbeats off; baseline: raw tokio streams, a read task per stream. \
         Clients bind 127.{RAW_IP_BLOCK}.x.y (baseline) and 127.{ENGINE_IP_BLOCK}.x.y (engine), \
         {CLIENTS_PER_SOURCE_IP} per address"
    ));
    Ok(report)
}

/// Runs one side on a fresh runtime, after handing freed memory back, and drops the runtime
/// (closing every socket) before returning.
fn side<Fut>(f: impl FnOnce() -> Fut) -> Result<Figures, BenchError>
where
    Fut: Future<Output = Result<Figures, BenchError>>,
{
    trim_heap();
    let rt = runtime()?;
    let figures = rt.block_on(f());
    drop(rt);
    figures
}

async fn engine_side(ctx: &Ctx, exe: &PathBuf, n: usize) -> Result<Figures, BenchError> {
    let env = real_env(&ctx.env_config("sessions")).map_err(|e| BenchError::setup(BENCH, e))?;
    let mut cfg = SessionConfig::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), Transport::TcpJson);
    cfg.heartbeat_interval = None;
    cfg.idle_timeout = IDLE_TIMEOUT;
    // Every bench client stays unauthenticated (it never sends), from a few addresses: the
    // default limits would evict all but a few hundred of them, and the memory budget would
    // refuse connections past ~25 000.
    let limits = ServiceLimits {
        memory_max: DEFAULT_SESSION_MEMORY_MAX.max(n.saturating_mul(SESSION_BASE_BYTES).saturating_mul(2)),
        unauthenticated_max: n,
        unauthenticated_per_address_max: n,
    };
    let listeners = NetClientListeners::new(env.net.clone());
    let service = SessionService::bind_with_limits(env, vec![cfg], limits, &listeners)
        .await
        .map_err(|e| BenchError::setup(BENCH, e))?;
    let opened = Arc::new(Countdown::new(n));
    let o = opened.clone();
    service.on_session_opened(move |_| {
        o.hit();
        async {}
    });
    service.serve();
    let body = json!({"seq": 1});
    let figures = hold_and_broadcast(exe, n, service.local_addr(), ENGINE_IP_BLOCK, &opened, || async {
        let queued = service.broadcast_locally(MSG_TYPE, &body, |_| true);
        if queued == n {
            Ok(())
        } else {
            Err(BenchError::op(BENCH, format!("broadcast_locally queued {queued} of {n}")))
        }
    })
    .await;
    // No `shutdown`: dropping the runtime ends every session at once (and is not measured).
    figures
}

async fn raw_side(exe: &PathBuf, n: usize) -> Result<Figures, BenchError> {
    // The engine's listen backlog too.
    let listener = bind_listener(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .map_err(BenchError::io("binding the raw server"))?;
    let addr = listener.local_addr().map_err(BenchError::io("binding the raw server"))?;
    let opened = Arc::new(Countdown::new(n));
    let writers = Arc::new(Mutex::new(Vec::new()));
    let (o, w) = (opened.clone(), writers.clone());
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let (read, write) = stream.into_split();
                    tokio::spawn(drain(read));
                    engine::env::lock(&w).push(write);
                    o.hit();
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    // Byte for byte what the engine sends: its JSON encoding behind the 4-byte length.
    let payload = codec::encode_json_message(Transport::TcpJson, MSG_TYPE, &json!({"seq": 1}));
    let mut frame = BytesMut::with_capacity(4 + payload.len());
    frame.put_u32(u32::try_from(payload.len()).expect("a small frame"));
    frame.put_slice(&payload);
    let frame: Bytes = frame.freeze();
    hold_and_broadcast(exe, n, addr, RAW_IP_BLOCK, &opened, || async {
        let mut streams = std::mem::take(&mut *engine::env::lock(&writers));
        for s in &mut streams {
            s.write_all(&frame).await.map_err(|e| BenchError::op(BENCH, format!("raw write: {e}")))?;
        }
        // Kept open until the clients have read (dropping a write half shuts it down).
        *engine::env::lock(&writers) = streams;
        Ok(())
    })
    .await
}

/// Starts a child with `n` clients of `server`, waits until the server has them all
/// (`opened`), reads the memory, runs `broadcast` and waits until the child reports that
/// every client has read one frame; then lets the child go.
async fn hold_and_broadcast<F, Fut>(
    exe: &PathBuf,
    n: usize,
    server: SocketAddr,
    ip_block: u8,
    opened: &Countdown,
    broadcast: F,
) -> Result<Figures, BenchError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), BenchError>>,
{
    let rss_before = rss_kib().ok_or_else(|| BenchError::setup(BENCH, "cannot read VmRSS"))?;
    let heap_before = heap_bytes();
    let mut child = ClientsChild::start(exe, n, server, ip_block)?;
    let measured = async {
        futures::future::try_join(
            feed_progress(&mut child.stdin, opened, n),
            expect(&mut child.stdout, LINE_CONNECTED, "the clients to connect", OPEN_TIMEOUT),
        )
        .await?;
        opened.wait(BENCH, "sessions opened by the server", OPEN_TIMEOUT).await?;
        tokio::time::sleep(SETTLE).await;
        let rss_after = rss_kib().ok_or_else(|| BenchError::setup(BENCH, "cannot read VmRSS"))?;
        let heap_after = heap_bytes();
        let start = Instant::now();
        broadcast().await?;
        expect(&mut child.stdout, LINE_RECEIVED, "clients that received the broadcast", BROADCAST_TIMEOUT)
            .await?;
        let broadcast_secs = start.elapsed().as_secs_f64();
        Ok::<_, BenchError>(Figures {
            rss_kib_per_session: rss_after.saturating_sub(rss_before) as f64 / n as f64,
            heap_kib_per_session: heap_before
                .zip(heap_after)
                .map(|(before, after)| after.saturating_sub(before) as f64 / 1024.0 / n as f64),
            broadcast_secs,
        })
    }
    .await;
    let ended = child.finish().await;
    let figures = measured?;
    ended?;
    Ok(figures)
}

/// The `real` executable: this one, else the one next to it (or one directory up, for a test
/// binary in `deps/`).
fn clients_exe() -> Result<PathBuf, BenchError> {
    let me = std::env::current_exe().map_err(BenchError::io("locating this executable"))?;
    let name = format!("real{}", std::env::consts::EXE_SUFFIX);
    if me.file_name().is_some_and(|f| f == name.as_str()) {
        return Ok(me);
    }
    me.ancestors().skip(1).take(2).map(|d| d.join(&name)).find(|p| p.is_file()).ok_or_else(|| {
        BenchError::setup(
            BENCH,
            format!("no {name} next to {} to run the clients: build it (cargo build -p real)", me.display()),
        )
    })
}

/// The child process holding the clients, and its two pipes.
struct ClientsChild {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl ClientsChild {
    fn start(exe: &PathBuf, n: usize, server: SocketAddr, ip_block: u8) -> Result<Self, BenchError> {
        let what = || format!("starting {} {CLIENTS_SUBCOMMAND}", exe.display());
        let mut child = Command::new(exe)
            .arg(CLIENTS_SUBCOMMAND)
            .args([
                "--server",
                &server.to_string(),
                "--count",
                &n.to_string(),
                "--ip-block",
                &ip_block.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(BenchError::io(what()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(BenchError::setup(BENCH, format!("{}: no pipes", what())));
        };
        Ok(ClientsChild { child, stdin, stdout: BufReader::new(stdout).lines() })
    }

    /// Asks the child to close its clients and exit, and waits for it (killing it if it does
    /// not exit in time).
    async fn finish(mut self) -> Result<(), BenchError> {
        let _ = self.stdin.write_all(format!("{LINE_QUIT}\n").as_bytes()).await;
        drop(self.stdin);
        match tokio::time::timeout(CHILD_EXIT_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(BenchError::op(BENCH, format!("the clients' child exited with {status}"))),
            Ok(Err(e)) => Err(BenchError::io("waiting for the clients' child")(e)),
            Err(_) => {
                let _ = self.child.kill().await;
                Err(BenchError::Timeout {
                    bench: BENCH,
                    what: "the clients' child to exit".into(),
                    waited: CHILD_EXIT_TIMEOUT,
                })
            }
        }
    }
}

/// Tells the clients' child the server's accept count until all `n` are accepted.
async fn feed_progress(stdin: &mut ChildStdin, opened: &Countdown, n: usize) -> Result<(), BenchError> {
    let deadline = Instant::now() + OPEN_TIMEOUT;
    let mut told = usize::MAX;
    loop {
        let now = opened.count();
        if now != told {
            told = now;
            let line = format!("{LINE_ACCEPTED} {now}\n");
            stdin
                .write_all(line.as_bytes())
                .await
                .map_err(BenchError::io("writing to the clients' child"))?;
        }
        if now >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Timeout {
                bench: BENCH,
                what: format!("the server to accept ({now} of {n} so far)"),
                waited: OPEN_TIMEOUT,
            });
        }
        tokio::time::sleep(PROGRESS_PERIOD).await;
    }
}

/// Waits for the line `want` from the clients' child.
async fn expect(
    stdout: &mut Lines<BufReader<ChildStdout>>,
    want: &str,
    what: &str,
    limit: Duration,
) -> Result<(), BenchError> {
    let line = match tokio::time::timeout(limit, stdout.next_line()).await {
        Err(_) => return Err(BenchError::Timeout { bench: BENCH, what: what.to_string(), waited: limit }),
        Ok(r) => r.map_err(BenchError::io("reading from the clients' child"))?,
    };
    match line {
        Some(l) if l == want => Ok(()),
        Some(l) => Err(BenchError::op(BENCH, format!("the clients' child said {l:?} (waiting for {what})"))),
        None => Err(BenchError::op(BENCH, format!("the clients' child ended (waiting for {what})"))),
    }
}

/// Arguments of the hidden `bench-session-clients` subcommand (the `sessions` bench's child).
#[derive(Debug, Clone, clap::Args)]
pub struct SessionClientsArgs {
    /// The server to connect to.
    #[arg(long)]
    pub server: SocketAddr,
    /// Clients to open.
    #[arg(long)]
    pub count: usize,
    /// Second octet of the clients' source addresses (127.B.x.y).
    #[arg(long)]
    pub ip_block: u8,
}

/// The child of the `sessions` bench: opens `count` clients to `server`, staying at most
/// [`UNACCEPTED_MAX`] ahead of the accept count the parent writes on stdin, says `connected`,
/// then `received` once every client has read one frame, and exits at `quit` (or the end of
/// stdin), resetting its connections.
pub fn run_clients(args: SessionClientsArgs) -> Result<(), BenchError> {
    raise_fd_limit();
    let rt = runtime()?;
    let result = rt.block_on(clients(args));
    drop(rt);
    result
}

async fn clients(args: SessionClientsArgs) -> Result<(), BenchError> {
    let SessionClientsArgs { server, count: n, ip_block } = args;
    let accepted = Arc::new(AtomicUsize::new(0));
    let quit = Arc::new(tokio::sync::Notify::new());
    let (a, q) = (accepted.clone(), quit.clone());
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(k) = line.strip_prefix(LINE_ACCEPTED).and_then(|k| k.trim().parse().ok()) {
                a.store(k, Ordering::Release);
            } else if line == LINE_QUIT {
                break;
            }
        }
        q.notify_one();
    });
    let received = Arc::new(Countdown::new(n));
    let mut streams = Vec::with_capacity(n);
    let mut connects = futures::stream::iter(0..n)
        .map(|i| {
            let accepted = &accepted;
            async move {
                // A connect completes in the kernel before the server accepts it: stay at most
                // UNACCEPTED_MAX ahead of the server so that its accept queue never overflows.
                let deadline = Instant::now() + OPEN_TIMEOUT;
                while i >= accepted.load(Ordering::Acquire) + UNACCEPTED_MAX {
                    if Instant::now() > deadline {
                        return Err(BenchError::Timeout {
                            bench: BENCH,
                            what: format!(
                                "the server to accept ({} of {n})",
                                accepted.load(Ordering::Acquire)
                            ),
                            waited: OPEN_TIMEOUT,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                connect_from(source_ip(ip_block, i), server).await
            }
        })
        .buffer_unordered(CONNECTS_IN_FLIGHT);
    while let Some(stream) = connects.next().await {
        streams.push(tokio::spawn(client_reader(stream?, received.clone())));
    }
    drop(connects);
    say(LINE_CONNECTED);
    tokio::select! {
        r = received.wait(BENCH, "clients that received the broadcast", OPEN_TIMEOUT + BROADCAST_TIMEOUT) => {
            r?;
            say(LINE_RECEIVED);
            quit.notified().await;
        }
        () = quit.notified() => {}
    }
    for t in streams {
        t.abort();
    }
    Ok(())
}

/// One line to the parent.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// The `i`-th client's source address: `127.{block}.x.y`, [`CLIENTS_PER_SOURCE_IP`] each.
fn source_ip(block: u8, i: usize) -> Ipv4Addr {
    let k = i / CLIENTS_PER_SOURCE_IP;
    Ipv4Addr::new(127, block, u8::try_from(k / 250).unwrap_or(u8::MAX), (k % 250 + 1) as u8)
}

async fn connect_from(src: Ipv4Addr, server: SocketAddr) -> Result<TcpStream, BenchError> {
    let what = || format!("connecting a client from {src} to {server}");
    let socket = TcpSocket::new_v4().map_err(BenchError::io(what()))?;
    socket.bind(SocketAddr::from((src, 0))).map_err(BenchError::io(what()))?;
    // Closing resets the connection instead of leaving TIME_WAIT (never blocks at zero).
    socket.set_zero_linger().map_err(BenchError::io(what()))?;
    let stream = socket.connect(server).await.map_err(BenchError::io(what()))?;
    stream.set_nodelay(true).map_err(BenchError::io(what()))?;
    Ok(stream)
}

/// A client: reads length-prefixed frames and counts each one.
async fn client_reader(mut stream: TcpStream, received: Arc<Countdown>) {
    let mut len = [0u8; 4];
    let mut body = Vec::new();
    loop {
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let n = u32::from_be_bytes(len) as usize;
        if n > CLIENT_FRAME_MAX {
            return;
        }
        body.resize(n, 0);
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        received.hit();
    }
}

/// The raw server's read task: reads and discards until the client goes.
async fn drain(mut read: tokio::net::tcp::OwnedReadHalf) {
    let mut buf = [0u8; 64];
    while let Ok(n) = read.read(&mut buf).await {
        if n == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_change_every_block_of_clients() {
        assert_eq!(source_ip(1, 0), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_ip(1, CLIENTS_PER_SOURCE_IP - 1), Ipv4Addr::new(127, 1, 0, 1));
        assert_eq!(source_ip(1, CLIENTS_PER_SOURCE_IP), Ipv4Addr::new(127, 1, 0, 2));
        assert_eq!(source_ip(2, 250 * CLIENTS_PER_SOURCE_IP), Ipv4Addr::new(127, 2, 1, 1));
    }
}
