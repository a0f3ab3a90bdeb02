//! The server processes of a live-cluster run: spawn, SIGKILL, restart, and notice the ones
//! that exit on their own.

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use super::serve::ServeArgs;
use super::ClusterError;

/// One server incarnation that ran (or runs).
#[derive(Debug, Clone)]
pub struct Incarnation {
    pub index: usize,
    pub process: u64,
    pub evidence: PathBuf,
    pub log: PathBuf,
}

/// A server process that is running.
struct Running {
    child: Child,
    process: u64,
}

/// The run's server processes, one slot per server of the topology. Dropping it kills
/// every process still running.
pub struct ServerProcs {
    exe: PathBuf,
    dir: PathBuf,
    /// The arguments every incarnation shares (index, process, ip, evidence are set per spawn).
    template: ServeArgs,
    ips: Vec<IpAddr>,
    names: Vec<String>,
    slots: Vec<Option<Running>>,
    incarnations: Vec<Incarnation>,
    /// Per server, a command that runs the server's program (`ip netns exec NS` with `--net`);
    /// empty: the program runs directly.
    prefixes: Vec<Vec<String>>,
}

impl ServerProcs {
    pub fn new(
        exe: PathBuf,
        dir: PathBuf,
        template: ServeArgs,
        ips: Vec<IpAddr>,
        names: Vec<String>,
    ) -> Self {
        let slots = ips.iter().map(|_| None).collect();
        let prefixes = ips.iter().map(|_| Vec::new()).collect();
        Self { exe, dir, template, ips, names, slots, incarnations: Vec::new(), prefixes }
    }

    /// Runs server `i`'s incarnations through `prefixes[i]` (a command that `exec`s the
    /// program, so the process id stays the program's: signals reach the server itself).
    pub fn with_prefixes(mut self, prefixes: Vec<Vec<String>>) -> Self {
        assert_eq!(prefixes.len(), self.slots.len(), "one prefix per server");
        self.prefixes = prefixes;
        self
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// The process id of server `i`'s running incarnation.
    pub fn process(&self, i: usize) -> Option<u64> {
        self.slots[i].as_ref().map(|r| r.process)
    }

    /// Starts server `i` as incarnation `process`. It must not be running.
    pub fn spawn(&mut self, i: usize, process: u64) -> Result<(), ClusterError> {
        assert!(self.slots[i].is_none(), "server {i} is already running");
        let stem = format!("{}.{process}", self.names[i]);
        let evidence = self.dir.join(format!("{stem}.evidence.jsonl"));
        let log = self.dir.join(format!("{stem}.log"));
        let args = ServeArgs {
            index: i,
            process,
            ip: self.ips[i],
            evidence: evidence.clone(),
            clock_control: self.template.clock_control.as_ref().map(|_| self.clock_file(i)),
            ..self.template.clone()
        };
        let io = |p: &Path| File::create(p).map_err(|e| ClusterError::Io(format!("{}: {e}", p.display())));
        let out = io(&log)?;
        let err = out.try_clone().map_err(|e| ClusterError::Io(format!("{}: {e}", log.display())))?;
        let mut cmd = match self.prefixes[i].split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&self.exe);
                c
            }
            None => Command::new(&self.exe),
        };
        let child = cmd
            .args(args.to_args())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| ClusterError::Io(format!("cannot start {}: {e}", self.exe.display())))?;
        self.slots[i] = Some(Running { child, process });
        self.incarnations.push(Incarnation { index: i, process, evidence, log });
        Ok(())
    }

    /// SIGKILLs server `i` and reaps it; the process id it had, if it was running.
    pub fn kill(&mut self, i: usize) -> Option<u64> {
        let mut r = self.slots[i].take()?;
        // `Child::kill` is SIGKILL: no handler runs, nothing is flushed or deregistered.
        let _ = r.child.kill();
        let _ = r.child.wait();
        Some(r.process)
    }

    /// SIGSTOPs (`stop: true`) or SIGCONTs server `i`: a paused process keeps its sockets
    /// and its ZooKeeper session until the session times out, then wakes up to a world that
    /// moved on (the fencing case). False if it is not running.
    pub fn signal_pause(&mut self, i: usize, stop: bool) -> bool {
        let Some(r) = &self.slots[i] else { return false };
        let Ok(pid) = libc::pid_t::try_from(r.child.id()) else { return false };
        let sig = if stop { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: plain kill(2) on our own child, which has not been reaped (it is in a slot).
        unsafe { libc::kill(pid, sig) == 0 }
    }

    /// The servers that exited on their own since the last call, with their status.
    pub fn exited(&mut self) -> Vec<(usize, u64, ExitStatus)> {
        let mut out = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(r) = slot {
                if let Ok(Some(status)) = r.child.try_wait() {
                    out.push((i, r.process, status));
                    *slot = None;
                }
            }
        }
        out
    }

    /// Every incarnation started so far.
    pub fn incarnations(&self) -> &[Incarnation] {
        &self.incarnations
    }

    /// Server `i`'s clock-control file (`{dir}/{name}.clock`), shared by its incarnations.
    pub fn clock_file(&self, i: usize) -> PathBuf {
        self.dir.join(format!("{}.clock", self.names[i]))
    }

    /// The client address of server `i`.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(self.ips[i], scenarios::game_host::TCP_JSON_PORT)
    }
}

impl Drop for ServerProcs {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            self.kill(i);
        }
    }
}

/// The last `lines` lines of a log (for error messages).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
