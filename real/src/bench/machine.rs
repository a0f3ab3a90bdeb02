//! The machine a run measured: cores, CPU, memory, kernel, file-descriptor limit and the
//! service versions, printed before the figures and kept in the JSON.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;

use crate::services::{PrivateRedis, PrivateZk};

/// The process's `RLIMIT_NOFILE` before and after [`raise_fd_limit`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FdLimit {
    pub soft_before: u64,
    /// The soft limit in force for the run.
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (an unlimited hard limit counts as
/// `/proc/sys/fs/nr_open`, the most the kernel accepts). Raising the hard limit itself needs
/// `CAP_SYS_RESOURCE` and is not attempted. Failures leave the limit as it was.
pub fn raise_fd_limit() -> FdLimit {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return FdLimit::default();
    }
    let before = lim.rlim_cur;
    let target = if lim.rlim_max == libc::RLIM_INFINITY {
        std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1 << 20)
    } else {
        lim.rlim_max
    };
    if target > lim.rlim_cur {
        let want = libc::rlimit { rlim_cur: target, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit only reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = target;
        }
    }
    FdLimit { soft_before: before, soft: lim.rlim_cur, hard: lim.rlim_max }
}

/// File descriptors this process has open now.
pub(crate) fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Resident memory of this process (`VmRSS` of `/proc/self/status`), in KiB.
pub(crate) fn rss_kib() -> Option<u64> {
    vm_rss_kib("/proc/self/status")
}

/// Resident memory of process `pid` (`VmRSS` of `/proc/<pid>/status`), in KiB.
pub(crate) fn rss_kib_of(pid: u32) -> Option<u64> {
    vm_rss_kib(&format!("/proc/{pid}/status"))
}

/// CPU time process `pid` has used so far (user + system, from `/proc/<pid>/stat`), at the
/// kernel's clock-tick resolution (usually 10 ms).
pub(crate) fn cpu_time_of(pid: u32) -> Option<std::time::Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces): state is
    // field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_sec = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|t| *t > 0)?;
    Some(std::time::Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_sec))
}

fn vm_rss_kib(status_file: &str) -> Option<u64> {
    let status = std::fs::read_to_string(status_file).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes the allocator has handed out and not got back (glibc's `mallinfo2`: `uordblks` +
/// `hblkhd`, over every arena). Exact where `VmRSS` is page-grained and blind to reuse of
/// memory that is resident but free. `None` off glibc.
pub(crate) fn heap_bytes() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 has no preconditions and returns a plain struct.
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Hands freed heap memory back to the kernel (glibc's `malloc_trim`), so that a memory
/// measurement after another one starts from what is really in use. A no-op elsewhere.
pub(crate) fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The context printed with the figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub memory_mib: u64,
    pub kernel: String,
    /// 1-minute load average when the run started: other work on the machine skews figures.
    pub load_1m: f64,
    pub fd_limit: FdLimit,
    pub redis_version: String,
    pub zookeeper_version: String,
}

impl Machine {
    /// The machine, and the versions of the services that were started.
    pub fn probe(fd: &FdLimit, redis: Option<&PrivateRedis>, zk: Option<&PrivateZk>) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "unknown".to_string(), |s| s.trim().to_string());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_string(), |s| s.trim().to_string());
        let load_1m = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|l| l.parse().ok()))
            .unwrap_or(0.0);
        let zookeeper_version = zk
            .and_then(|zk| zk.four_letter("srvr"))
            .and_then(|r| {
                r.lines().find_map(|l| l.strip_prefix("Zookeeper version:").map(|v| v.trim().to_string()))
            })
            .map_or_else(
                || if zk.is_some() { "unknown" } else { "not started" }.to_string(),
                |v| v.split(',').next().unwrap_or(&v).to_string(),
            );
        Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            memory_mib,
            kernel,
            load_1m,
            fd_limit: *fd,
            redis_version: match redis {
                Some(r) => redis_version(r).unwrap_or_else(|| "unknown".to_string()),
                None => "not started".to_string(),
            },
            zookeeper_version,
        }
    }

    /// A few lines for the top of the output.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "machine: {} cores ({}), {} MiB RAM, Linux {}, load average {:.2} (1 min)",
            self.cores, self.cpu, self.memory_mib, self.kernel, self.load_1m
        );
        let fd = &self.fd_limit;
        let raised = if fd.soft > fd.soft_before {
            format!("soft limit raised from {} to the hard limit", fd.soft_before)
        } else {
            "soft limit already at the hard limit".to_string()
        };
        let _ = writeln!(s, "open files (RLIMIT_NOFILE): {} (hard {}; {raised})", fd.soft, fd.hard);
        let _ = writeln!(
            s,
            "services: private redis-server {} and ZooKeeper {} on loopback",
            self.redis_version, self.zookeeper_version
        );
        s
    }
}

/// `redis_version` from `INFO server` (plain RESP over a short-lived connection).
fn redis_version(redis: &PrivateRedis) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&redis.addr(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(b"INFO server\r\nQUIT\r\n").ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().find_map(|l| l.strip_prefix("redis_version:").map(|v| v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fd_limit_is_raised_to_the_hard_limit_and_proc_is_readable() {
        let fd = raise_fd_limit();
        assert!(fd.soft >= fd.soft_before);
        assert!(fd.soft == fd.hard || fd.hard == libc::RLIM_INFINITY, "{fd:?}");
        assert!(open_fds() > 0);
        assert!(rss_kib().is_some_and(|k| k > 0));
        assert_eq!(rss_kib_of(std::process::id()).map(|k| k > 0), Some(true));
        // CPU time grows while this thread spins (tick resolution: spin until it shows).
        let spin = std::time::Instant::now();
        let start = cpu_time_of(std::process::id()).expect("own CPU time");
        while cpu_time_of(std::process::id()).expect("own CPU time") < start + Duration::from_millis(20) {
            assert!(spin.elapsed() < Duration::from_secs(30), "CPU time did not grow");
            std::hint::black_box(0);
        }
    }
}
