//! What a conformance case is: a fixed interleaving of operations by one or more clients of
//! one service (ZooKeeper through the `Coord` port, Redis through the `Kv` port, or a SQL
//! instance through the `Db` port), plus the scripted, time-dependent steps (sleeps,
//! partitions) both backends can follow.
//!
//! Paths and keys are *relative*: each run of a case gets its own prefix (a znode `/cN`, a
//! key prefix `cN:`, or a table-name prefix `cN_`) so that many cases share one real service
//! without seeing each other.

use std::fmt;

use engine::env::{CreateMode, Expect, SetCondition, WriteOp};

/// Which service a case exercises. A SQL case (`Db` port) is compared against the simulated
/// SQL node on SQLite and, as another case of the same steps, on MariaDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    Zk,
    Redis,
    Sqlite,
    Mariadb,
}

impl Service {
    /// True for the `Db` port's cases.
    pub fn is_sql(self) -> bool {
        matches!(self, Service::Sqlite | Service::Mariadb)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Service::Zk => "zk",
            Service::Redis => "redis",
            Service::Sqlite => "sqlite",
            Service::Mariadb => "mariadb",
        })
    }
}

/// A znode path relative to the case's root: `""` is the root itself, `"a/x"` is
/// `/cN/a/x`. A path starting with `!` is used verbatim (minus the `!`): the malformed paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelPath(pub String);

impl RelPath {
    pub fn new(s: &str) -> Self {
        RelPath(s.to_string())
    }

    /// The absolute path under `root` (`/cN`).
    pub fn under(&self, root: &str) -> String {
        if let Some(raw) = self.0.strip_prefix('!') {
            raw.to_string()
        } else if self.0.is_empty() {
            root.to_string()
        } else {
            format!("{root}/{}", self.0)
        }
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.starts_with('!') {
            write!(f, "{:?}", &self.0[1..])
        } else {
            write!(f, "~/{}", self.0)
        }
    }
}

/// One operation of a `multi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp {
    Create { path: RelPath, data: String, mode: CreateMode },
    Delete { path: RelPath, version: Option<i32> },
    SetData { path: RelPath, data: String, version: Option<i32> },
    Check { path: RelPath, version: Option<i32> },
}

/// One step of a ZooKeeper case, by the client named in [`Step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZkOp {
    Create {
        path: RelPath,
        data: String,
        mode: CreateMode,
    },
    Delete {
        path: RelPath,
        version: Option<i32>,
    },
    GetData {
        path: RelPath,
        watch: bool,
    },
    Exists {
        path: RelPath,
        watch: bool,
    },
    GetChildren {
        path: RelPath,
        watch: bool,
    },
    SetData {
        path: RelPath,
        data: String,
        version: Option<i32>,
    },
    Multi(Vec<MultiOp>),
    /// `close()` the client's session.
    Close,
    /// Drop the client's handle without closing it.
    Drop,
    /// Opens a new session for the client (after close/expiry), with this requested timeout.
    Reconnect {
        timeout_ms: u64,
    },
    /// Records the client's `state()` and the session events it has reported so far.
    State,
    /// Scripted: partitions the client from the service (established connections stall,
    /// new ones are refused), as a clogged madsim link.
    Cut,
    /// Scripted: ends the client's partition.
    Heal,
    /// Scripted: lets time pass (simulated or real).
    Sleep {
        ms: u64,
    },
    /// Scripted: sleeps until the client's state is terminal (or `max_ms` passed).
    AwaitTerminal {
        max_ms: u64,
    },
}

/// One step of a Redis case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOp {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: String,
        cond: SetCondition,
        px_ms: Option<u64>,
        keep_ttl: bool,
    },
    Del {
        key: String,
    },
    PExpire {
        key: String,
        ms: u64,
    },
    PTtl {
        key: String,
    },
    Cas {
        key: String,
        expected: Option<String>,
        new: Option<String>,
        px_ms: Option<u64>,
    },
    Take {
        key: String,
    },
    RPush {
        key: String,
        values: Vec<String>,
    },
    LPop {
        key: String,
    },
    LRange {
        key: String,
        start: i64,
        stop: i64,
    },
    LLen {
        key: String,
    },
    /// Scripted: lets time pass.
    Sleep {
        ms: u64,
    },
}

/// One step of a SQL case. Table names are relative (`a`, `b`, `s`): the run prefixes them
/// (`c17_a`); `WriteOp`s carry relative names too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbOp {
    Get { table: String, key: String },
    GetMany { table: String, keys: Vec<String> },
    Scan { table: String, prefix: String, start_after: Option<String>, limit: usize },
    Export { table: String, prefix: String, start_after: Option<String>, limit: usize },
    GetByIndex { table: String, index: String, index_key: String },
    Transact(Vec<WriteOp>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyOp {
    Zk(ZkOp),
    Kv(KvOp),
    Db(DbOp),
}

/// One step: which client does what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub client: usize,
    pub op: AnyOp,
}

/// A conformance case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Case {
    /// A name: `gen-<seed>` for generated cases, the script's name for fixed ones.
    pub name: String,
    pub service: Service,
    /// Requested session timeout of each client (ZooKeeper); its length is the client count.
    pub clients: Vec<u64>,
    pub steps: Vec<Step>,
}

impl Case {
    /// True if the case partitions clients (the real run then routes them through relays).
    pub fn needs_links(&self) -> bool {
        self.steps.iter().any(|s| matches!(s.op, AnyOp::Zk(ZkOp::Cut) | AnyOp::Zk(ZkOp::Heal)))
    }
}

fn ver(v: &Option<i32>) -> String {
    match v {
        Some(v) => format!("v{v}"),
        None => "any".to_string(),
    }
}

fn mode(m: &CreateMode) -> &'static str {
    match m {
        CreateMode::Persistent => "P",
        CreateMode::Ephemeral => "E",
        CreateMode::PersistentSequential => "PS",
        CreateMode::EphemeralSequential => "ES",
    }
}

impl fmt::Display for MultiOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MultiOp::Create { path, data, mode: m } => write!(f, "create {path} {data:?} {}", mode(m)),
            MultiOp::Delete { path, version } => write!(f, "delete {path} {}", ver(version)),
            MultiOp::SetData { path, data, version } => write!(f, "set {path} {data:?} {}", ver(version)),
            MultiOp::Check { path, version } => write!(f, "check {path} {}", ver(version)),
        }
    }
}

impl fmt::Display for ZkOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = |watch: &bool| if *watch { "_w" } else { "" };
        match self {
            ZkOp::Create { path, data, mode: m } => write!(f, "create {path} {data:?} {}", mode(m)),
            ZkOp::Delete { path, version } => write!(f, "delete {path} {}", ver(version)),
            ZkOp::GetData { path, watch } => write!(f, "get_data{} {path}", w(watch)),
            ZkOp::Exists { path, watch } => write!(f, "exists{} {path}", w(watch)),
            ZkOp::GetChildren { path, watch } => write!(f, "get_children{} {path}", w(watch)),
            ZkOp::SetData { path, data, version } => write!(f, "set_data {path} {data:?} {}", ver(version)),
            ZkOp::Multi(ops) => {
                write!(f, "multi [")?;
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{op}")?;
                }
                write!(f, "]")
            }
            ZkOp::Close => write!(f, "close"),
            ZkOp::Drop => write!(f, "drop handle"),
            ZkOp::Reconnect { timeout_ms } => write!(f, "connect timeout={timeout_ms}ms"),
            ZkOp::State => write!(f, "state"),
            ZkOp::Cut => write!(f, "cut link"),
            ZkOp::Heal => write!(f, "heal link"),
            ZkOp::Sleep { ms } => write!(f, "sleep {ms}ms"),
            ZkOp::AwaitTerminal { max_ms } => write!(f, "await terminal state (max {max_ms}ms)"),
        }
    }
}

fn cond(c: &SetCondition) -> &'static str {
    match c {
        SetCondition::Always => "",
        SetCondition::IfAbsent => " NX",
        SetCondition::IfPresent => " XX",
    }
}

impl fmt::Display for KvOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvOp::Get { key } => write!(f, "GET {key}"),
            KvOp::Set { key, value, cond: c, px_ms, keep_ttl } => {
                write!(f, "SET {key} {value:?}{}", cond(c))?;
                if let Some(px) = px_ms {
                    write!(f, " PX {px}")?;
                }
                if *keep_ttl {
                    write!(f, " KEEPTTL")?;
                }
                Ok(())
            }
            KvOp::Del { key } => write!(f, "DEL {key}"),
            KvOp::PExpire { key, ms } => write!(f, "PEXPIRE {key} {ms}"),
            KvOp::PTtl { key } => write!(f, "PTTL {key}"),
            KvOp::Cas { key, expected, new, px_ms } => {
                write!(f, "CAS {key} {expected:?} -> {new:?}")?;
                if let Some(px) = px_ms {
                    write!(f, " PX {px}")?;
                }
                Ok(())
            }
            KvOp::Take { key } => write!(f, "GETDEL {key}"),
            KvOp::RPush { key, values } => write!(f, "RPUSH {key} {values:?}"),
            KvOp::LPop { key } => write!(f, "LPOP {key}"),
            KvOp::LRange { key, start, stop } => write!(f, "LRANGE {key} {start} {stop}"),
            KvOp::LLen { key } => write!(f, "LLEN {key}"),
            KvOp::Sleep { ms } => write!(f, "sleep {ms}ms"),
        }
    }
}

fn expect(e: &Expect) -> String {
    match e {
        Expect::Any => "any".to_string(),
        Expect::Absent => "absent".to_string(),
        Expect::Present => "present".to_string(),
        Expect::Version(v) => format!("v{v}"),
    }
}

/// A `WriteOp` in one short line (`put a/k1 "v" v2 f3 [by_name=n1]`).
pub fn write_op(op: &WriteOp) -> String {
    let at = |t: &engine::env::TableName, k: &str| format!("{t}/{k:?}");
    match op {
        WriteOp::Put { table, key, value, expect: e, fence, index } => {
            let mut s = format!("put {} {value:?} {} f{fence}", at(table, key), expect(e));
            for (name, ikey) in index {
                s.push_str(&format!(" [{name}={ikey:?}]"));
            }
            s
        }
        WriteOp::Delete { table, key, expect: e, fence } => {
            format!("delete {} {} f{fence}", at(table, key), expect(e))
        }
        WriteOp::RaiseFence { table, key, fence } => format!("raise_fence {} f{fence}", at(table, key)),
        WriteOp::Guard { table, key, fence } => format!("guard {} f{fence}", at(table, key)),
        WriteOp::Restore { table, key, value, version, fence } => {
            format!("restore {} {value:?} v{version} f{fence}", at(table, key))
        }
    }
}

impl fmt::Display for DbOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbOp::Get { table, key } => write!(f, "get {table}/{key:?}"),
            DbOp::GetMany { table, keys } => write!(f, "get_many {table} {keys:?}"),
            DbOp::Scan { table, prefix, start_after, limit } => {
                write!(f, "scan {table} prefix={prefix:?} after={start_after:?} limit={limit}")
            }
            DbOp::Export { table, prefix, start_after, limit } => {
                write!(f, "export {table} prefix={prefix:?} after={start_after:?} limit={limit}")
            }
            DbOp::GetByIndex { table, index, index_key } => {
                write!(f, "get_by_index {table}.{index}={index_key:?}")
            }
            DbOp::Transact(ops) => {
                write!(f, "transact [")?;
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        write!(f, "; ")?;
                    }
                    write!(f, "{}", write_op(op))?;
                }
                write!(f, "]")
            }
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.op {
            AnyOp::Zk(op) => write!(f, "c{} {op}", self.client),
            AnyOp::Kv(op) => write!(f, "c{} {op}", self.client),
            AnyOp::Db(op) => write!(f, "c{} {op}", self.client),
        }
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "case {} [{}] clients {:?}", self.name, self.service, self.clients)?;
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "  {i:>3}: {s}")?;
        }
        Ok(())
    }
}
