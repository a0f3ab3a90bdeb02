//! A private `redis-server` for tests (see the module doc of [`super`]).

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use super::{ask, command_in, find_binary, free_port, io_err, Proc, ServiceError};

/// A private `redis-server` on a loopback port, killed when dropped.
pub struct PrivateRedis {
    addr: SocketAddr,
    bin: PathBuf,
    /// Runs the server on another host (`ip netns exec NS`); empty: here.
    prefix: Vec<String>,
    persistent: bool,
    proc: Proc,
    // Dropped last: the process is killed before its directory goes.
    dir: TempDir,
}

impl fmt::Debug for PrivateRedis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateRedis")
            .field("addr", &self.addr)
            .field("pid", &self.proc.pid())
            .field("dir", &self.dir.path())
            .finish()
    }
}

impl PrivateRedis {
    /// Starts a Redis without persistence (a restart loses every key, as the `Kv` port says).
    pub fn start() -> Result<PrivateRedis, ServiceError> {
        Self::launch(Ipv4Addr::LOCALHOST, false)
    }

    /// A Redis listening on `ip` instead of loopback (a live run's bridge address, which the
    /// servers' network namespaces reach), with or without the fsync-always append-only file.
    pub fn start_on(ip: Ipv4Addr, persistent: bool) -> Result<PrivateRedis, ServiceError> {
        Self::launch(ip, persistent)
    }

    /// A Redis on a host of its own: started after `prefix` (`ip netns exec NS`, a live run's
    /// Redis host) and listening on `addr` there (a fixed port: the host's ports are its own).
    pub fn start_in(
        prefix: Vec<String>,
        addr: SocketAddr,
        persistent: bool,
    ) -> Result<PrivateRedis, ServiceError> {
        let bin = Self::binary()?;
        let dir =
            tempfile::Builder::new().prefix("sandtable-redis-").tempdir().map_err(io_err("redis-server"))?;
        let proc = Self::spawn(&prefix, &bin, dir.path(), addr, persistent)?;
        Ok(PrivateRedis { addr, bin, prefix, persistent, proc, dir })
    }

    /// Starts a Redis with an fsync-always append-only file: every acknowledged write
    /// survives [`restart`](Self::restart).
    pub fn start_persistent() -> Result<PrivateRedis, ServiceError> {
        Self::launch(Ipv4Addr::LOCALHOST, true)
    }

    fn binary() -> Result<PathBuf, ServiceError> {
        find_binary("SANDTABLE_REDIS_SERVER", "redis-server", &["/usr/bin/redis-server"])
            .map_err(|looked_for| ServiceError::NotInstalled { what: "redis-server", looked_for })
    }

    fn launch(ip: Ipv4Addr, persistent: bool) -> Result<PrivateRedis, ServiceError> {
        let bin = Self::binary()?;
        let dir =
            tempfile::Builder::new().prefix("sandtable-redis-").tempdir().map_err(io_err("redis-server"))?;
        let mut last = None;
        // The port is free when chosen but could be taken before the server binds it: retry.
        for _ in 0..5 {
            let port = free_port().map_err(io_err("redis-server"))?;
            let addr = SocketAddr::from((ip, port));
            match Self::spawn(&[], &bin, dir.path(), addr, persistent) {
                Ok(proc) => return Ok(PrivateRedis { addr, bin, prefix: Vec::new(), persistent, proc, dir }),
                Err(e @ ServiceError::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    fn spawn(
        prefix: &[String],
        bin: &Path,
        dir: &Path,
        addr: SocketAddr,
        persistent: bool,
    ) -> Result<Proc, ServiceError> {
        let mut cmd = command_in(prefix, bin);
        cmd.arg("--port")
            .arg(addr.port().to_string())
            .arg("--bind")
            .arg(addr.ip().to_string())
            .args(["--protected-mode", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir)
            .args(["--save", "", "--logfile", ""]);
        if persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        let mut proc = Proc::launch("redis-server", cmd, dir.join("redis.log"))?;
        proc.wait_ready(|| Self::ping(addr))?;
        Ok(proc)
    }

    fn ping(addr: SocketAddr) -> bool {
        ask(addr, b"PING\r\n", 7, Duration::from_millis(500)).is_some_and(|r| r.starts_with("+PONG"))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:port/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    process_controls!();

    /// Kills the server if it runs and starts it again on the same port and directory.
    pub fn restart(&mut self) -> Result<(), ServiceError> {
        self.proc.respawn(Duration::from_millis(100), || {
            Self::spawn(&self.prefix, &self.bin, self.dir.path(), self.addr, self.persistent)
        })
    }
}
