//! The `Kv` port on a real Redis (7.x), through the `redis` crate's tokio
//! [`ConnectionManager`]: one multiplexed connection shared by every caller, re-established
//! by itself after a failure.
//!
//! Outcomes, as the port defines them:
//! - could not connect (refused, or the connection attempt failed): `ConnectionLoss {
//!   maybe_applied: false }`; nothing was sent;
//! - the connection failed or closed under a call: `ConnectionLoss { maybe_applied: true }`;
//! - no answer within the command timeout: `Timeout { maybe_applied: true }`. The client
//!   cannot tell whether a timed-out call was still waiting for a connection or already
//!   written, so it always says it may have applied (conservative; never the reverse);
//! - `WRONGTYPE` replies: `WrongType`; any other error reply: `Server` with Redis's text.
//!
//! The connection is opened lazily on the first call (so an `Env` can be built while Redis
//! is still starting), with the manager's own retry loop off: a refused connection fails the
//! call at once (like the simulator's client) and the next call tries again. The connection
//! speaks RESP3, so the manager learns of a broken connection from the connection itself (not
//! only from the next failing call) and reconnects in the background. A call is handed the
//! result of the manager's *previous* connection attempt before a new one starts, so a call
//! whose connection was never established (see `never_connected`) is retried once at once;
//! that is safe since nothing was sent. The previous attempt is not always refused: one
//! started the instant Redis crashed can reach the dying server and be reset, and without the
//! retry the first call after Redis is back would fail although Redis answers.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use engine::env::{Kv, KvError, SetCondition, SetOptions, Ttl};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, ErrorKind, RedisError, Script, Value};
use tokio::sync::OnceCell;
use tracing::debug;

/// Compare-and-set in one atomic script. `ARGV[1]` = `1` if a value is expected (`0`: the key
/// must be absent), `ARGV[2]` = the expected value, `ARGV[3]` = `1` to write `ARGV[4]` (`0`:
/// delete), `ARGV[5]` = TTL in ms (empty: none). `GET` first, so a non-string key fails with
/// `WRONGTYPE` before anything changes. Returns 1 if it wrote, 0 if the comparison failed.
const CAS_SCRIPT: &str = r"
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
else
  if cur then return 0 end
end
if ARGV[3] == '1' then
  if ARGV[5] ~= '' then
    redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
  else
    redis.call('SET', KEYS[1], ARGV[4])
  end
else
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Client settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisKvOptions {
    /// How long one call may take, connecting included.
    pub command_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
}

impl Default for RedisKvOptions {
    fn default() -> Self {
        RedisKvOptions { command_timeout: Duration::from_secs(5), connect_timeout: Duration::from_secs(2) }
    }
}

/// The `Kv` port on one Redis server. Cheap to share behind an `Arc`.
pub struct RedisKv {
    client: redis::Client,
    opts: RedisKvOptions,
    manager: OnceCell<ConnectionManager>,
    cas: Script,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv")
            .field("server", &self.client.get_connection_info().addr)
            .finish_non_exhaustive()
    }
}

impl RedisKv {
    /// A client of the Redis at `url` (`redis://host:port/[db]`, see the `redis` crate).
    /// Nothing is connected until the first call.
    pub fn new(url: &str, opts: RedisKvOptions) -> Result<RedisKv, KvError> {
        let mut info: redis::ConnectionInfo = url
            .parse()
            .map_err(|e: RedisError| KvError::Server(format!("ERR bad redis url {url:?}: {e}")))?;
        info.redis.protocol = redis::ProtocolVersion::RESP3;
        let client = redis::Client::open(info)
            .map_err(|e| KvError::Server(format!("ERR bad redis url {url:?}: {e}")))?;
        Ok(RedisKv { client, opts, manager: OnceCell::new(), cas: Script::new(CAS_SCRIPT) })
    }

    /// A client of the Redis at `addr` (`host:port`).
    pub fn with_addr(addr: impl std::fmt::Display, opts: RedisKvOptions) -> Result<RedisKv, KvError> {
        Self::new(&format!("redis://{addr}/"), opts)
    }

    /// Connects now instead of on the first call.
    pub async fn connect(&self) -> Result<(), KvError> {
        self.manager().await.map(drop)
    }

    async fn manager(&self) -> Result<ConnectionManager, KvError> {
        let m = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(self.opts.connect_timeout)
                    .set_response_timeout(self.opts.command_timeout);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(|e| {
                debug!(error = %e, "redis client cannot connect");
                // Nothing was sent on a connection that never existed.
                match map_error(e) {
                    KvError::ConnectionLoss { .. } | KvError::Timeout { .. } => {
                        KvError::ConnectionLoss { maybe_applied: false }
                    }
                    other => other,
                }
            })?;
        Ok(m.clone())
    }

    /// Sends one command (or script) and waits for the answer within the command timeout.
    async fn call<T, F, Fut>(&self, what: &'static str, key: &str, f: F) -> Result<T, KvError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = Result<T, RedisError>>,
    {
        let attempt = async {
            let mut retried = false;
            loop {
                let conn = self.manager().await?;
                match f(conn).await {
                    Ok(v) => return Ok(v),
                    Err(e) if never_connected(&e) && !retried => {
                        // Stale result of an earlier connection attempt; a new one has been
                        // started by now. Nothing was sent: safe to try once more.
                        retried = true;
                        debug!(cmd = what, key, error = %e, "redis connection attempt had failed; retrying once");
                    }
                    Err(e) if never_connected(&e) => {
                        return Err(KvError::ConnectionLoss { maybe_applied: false })
                    }
                    Err(e) => return Err(map_error(e)),
                }
            }
        };
        let out = match tokio::time::timeout(self.opts.command_timeout, attempt).await {
            Ok(r) => r,
            Err(_) => Err(KvError::Timeout { maybe_applied: true }),
        };
        if let Err(e) = &out {
            debug!(cmd = what, key, error = %e, "redis call failed");
        }
        out
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        what: &'static str,
        key: &str,
        cmd: Cmd,
    ) -> Result<T, KvError> {
        self.call(what, key, |mut conn| {
            let cmd = cmd.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        })
        .await
    }
}

/// Whether a call failed because the manager had no connection to send it on (nothing was
/// sent). `ConnectionManager` hands out the failure of its connection attempt wrapped as an
/// I/O error "Reconnecting failed: ..." (redis 0.32, `send_packed_command`); a command that
/// failed on an established connection never carries that prefix. Should a newer `redis`
/// change the wording, only refusals are recognised again (the behaviour before this check).
fn never_connected(e: &RedisError) -> bool {
    e.is_connection_refusal()
        || (e.kind() == ErrorKind::IoError && e.to_string().starts_with("Reconnecting failed"))
}

/// Maps a `redis` error to the port's.
fn map_error(e: RedisError) -> KvError {
    if let Some(code) = e.code() {
        if code == "WRONGTYPE" {
            return KvError::WrongType;
        }
    }
    if e.is_connection_refusal() {
        return KvError::ConnectionLoss { maybe_applied: false };
    }
    if e.is_timeout() {
        return KvError::Timeout { maybe_applied: true };
    }
    match e.kind() {
        ErrorKind::IoError | ErrorKind::ClientError | ErrorKind::ParseError => {
            KvError::ConnectionLoss { maybe_applied: true }
        }
        _ => match (e.code(), e.detail()) {
            (Some(code), Some(detail)) => KvError::Server(format!("{code} {detail}")),
            (Some(code), None) => KvError::Server(code.to_string()),
            _ => KvError::Server(e.to_string()),
        },
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn opt_bytes(v: Value) -> Result<Option<Bytes>, KvError> {
    match v {
        Value::Nil => Ok(None),
        Value::BulkString(b) => Ok(Some(Bytes::from(b))),
        Value::SimpleString(s) => Ok(Some(Bytes::from(s))),
        other => Err(KvError::Server(format!("ERR unexpected reply {other:?}"))),
    }
}

#[async_trait]
impl Kv for RedisKv {
    async fn get(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        opt_bytes(self.query("GET", key, redis::cmd("GET").arg(key).clone()).await?)
    }

    async fn set(&self, key: &str, value: Bytes, opts: SetOptions) -> Result<bool, KvError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value.as_ref());
        match opts.condition {
            SetCondition::Always => {}
            SetCondition::IfAbsent => {
                cmd.arg("NX");
            }
            SetCondition::IfPresent => {
                cmd.arg("XX");
            }
        }
        match opts.px {
            // Redis refuses PX with KEEPTTL; the port says PX wins.
            Some(px) => {
                cmd.arg("PX").arg(millis(px));
            }
            None if opts.keep_ttl => {
                cmd.arg("KEEPTTL");
            }
            None => {}
        }
        match self.query::<Value>("SET", key, cmd).await? {
            Value::Okay => Ok(true),
            Value::SimpleString(s) if s == "OK" => Ok(true),
            Value::Nil => Ok(false),
            other => Err(KvError::Server(format!("ERR unexpected reply {other:?}"))),
        }
    }

    async fn del(&self, key: &str) -> Result<bool, KvError> {
        let n: i64 = self.query("DEL", key, redis::cmd("DEL").arg(key).clone()).await?;
        Ok(n > 0)
    }

    async fn pexpire(&self, key: &str, ttl: Duration) -> Result<bool, KvError> {
        let n: i64 =
            self.query("PEXPIRE", key, redis::cmd("PEXPIRE").arg(key).arg(millis(ttl)).clone()).await?;
        Ok(n == 1)
    }

    async fn pttl(&self, key: &str) -> Result<Ttl, KvError> {
        let n: i64 = self.query("PTTL", key, redis::cmd("PTTL").arg(key).clone()).await?;
        Ok(match n {
            -2 => Ttl::NoKey,
            -1 => Ttl::NoExpiry,
            n => Ttl::Remaining(Duration::from_millis(n.max(0) as u64)),
        })
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Bytes>,
        new: Option<Bytes>,
        px: Option<Duration>,
    ) -> Result<bool, KvError> {
        // As the simulator (and `SET`) does: a TTL under 1 ms is refused before anything else.
        let px_arg = match px {
            Some(px) if px.as_millis() < 1 => {
                return Err(KvError::Server("ERR invalid expire time in 'set' command".to_string()))
            }
            Some(px) => millis(px).to_string(),
            None => String::new(),
        };
        let has_expected = if expected.is_some() { "1" } else { "0" };
        let has_new = if new.is_some() { "1" } else { "0" };
        let expected = expected.unwrap_or_default();
        let new = new.unwrap_or_default();
        let n: i64 = self
            .call("CAS", key, |mut conn| {
                let mut inv = self.cas.key(key);
                inv.arg(has_expected).arg(expected.as_ref()).arg(has_new).arg(new.as_ref()).arg(&px_arg);
                async move { inv.invoke_async::<i64>(&mut conn).await }
            })
            .await?;
        Ok(n == 1)
    }

    /// `GETDEL` (Redis ≥ 6.2; Debian 12 ships 7.0): one native command is atomic by itself,
    /// needs no script cache (a restarted Redis has none) and answers `WRONGTYPE` for a list
    /// exactly like `GET`. A Lua `GET`+`DEL` script would only be needed for Redis < 6.2.
    async fn take(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        opt_bytes(self.query("GETDEL", key, redis::cmd("GETDEL").arg(key).clone()).await?)
    }

    async fn rpush(&self, key: &str, values: Vec<Bytes>) -> Result<u64, KvError> {
        let mut cmd = redis::cmd("RPUSH");
        cmd.arg(key);
        for v in &values {
            cmd.arg(v.as_ref());
        }
        let n: u64 = self.query("RPUSH", key, cmd).await?;
        Ok(n)
    }

    async fn lpop(&self, key: &str) -> Result<Option<Bytes>, KvError> {
        opt_bytes(self.query("LPOP", key, redis::cmd("LPOP").arg(key).clone()).await?)
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> Result<Vec<Bytes>, KvError> {
        let v: Vec<Vec<u8>> =
            self.query("LRANGE", key, redis::cmd("LRANGE").arg(key).arg(start).arg(stop).clone()).await?;
        Ok(v.into_iter().map(Bytes::from).collect())
    }

    async fn llen(&self, key: &str) -> Result<u64, KvError> {
        let n: u64 = self.query("LLEN", key, redis::cmd("LLEN").arg(key).clone()).await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_keep_redis_text() {
        let e =
            RedisError::from((ErrorKind::ResponseError, "An error was signalled by the server", "x".into()));
        assert!(matches!(map_error(e), KvError::Server(_)));
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(map_error(io), KvError::ConnectionLoss { maybe_applied: false });
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert_eq!(map_error(io), KvError::ConnectionLoss { maybe_applied: true });
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        assert_eq!(map_error(io), KvError::Timeout { maybe_applied: true });
    }

    #[test]
    fn failed_connection_attempts_are_told_from_failed_commands() {
        let io = |kind, msg: &str| RedisError::from(std::io::Error::new(kind, msg.to_string()));
        use std::io::ErrorKind as K;
        assert!(never_connected(&io(K::ConnectionRefused, "refused")));
        // What the manager hands out when its last connection attempt was reset.
        assert!(never_connected(&io(K::ConnectionReset, "Reconnecting failed: Connection reset by peer")));
        // A reset under a command that was sent.
        assert!(!never_connected(&io(K::ConnectionReset, "Connection reset by peer")));
        assert!(!never_connected(&RedisError::from((ErrorKind::ResponseError, "Reconnecting failed"))));
    }

    #[test]
    fn urls_are_checked() {
        assert!(RedisKv::new("not a url", RedisKvOptions::default()).is_err());
        assert!(RedisKv::with_addr("127.0.0.1:6379", RedisKvOptions::default()).is_ok());
    }
}
