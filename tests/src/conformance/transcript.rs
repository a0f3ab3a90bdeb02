//! Normalised transcripts: every operation and its result as one line of text, with
//! everything that legitimately differs between two runs of the same case replaced by labels.
//!
//! Normalisation rules (each justified by what the port promises, see README "How faithful
//! is the simulator"):
//! - **Session ids** become `S<n>`, numbered in the order the case's sessions were opened
//!   (the port promises only uniqueness); an `ephemeral_owner` that is no session of the case
//!   would print as `S?`.
//! - **zxids** (`czxid`, `mzxid`, `pzxid`) become `z<n>`, numbered by first appearance in
//!   the transcript: only equality between them is compared. The port promises that they are
//!   ordered and that one transaction's writes share one; the real service also spends zxids
//!   on session creation/closing and on failed writes, which the model does not (they are
//!   never observable through the port except as gaps).
//! - **ctime/mtime** are dropped: they are the service's wall clock.
//! - **Paths and keys** are shown relative to the case's root (`~/a/x`) or key prefix.
//! - **TTLs** (`PTTL` answers) are rounded *up* to whole seconds: a real run spends a few
//!   milliseconds between `SET ... PX` and `PTTL`; the generator only uses TTLs that are
//!   whole seconds plus 500 ms, so a run would need to stall for half a second to change
//!   the rounded value.
//! - **Error texts** of `BadArguments` are dropped (the variant is kept): the real client's
//!   wording is not the simulator's; Redis server error texts are kept verbatim.
//! - **`KvError::Timeout`'s `maybe_applied`** is not shown (never produced by the fault-free
//!   cases; the real client says `true` for every timeout, the simulator only for requests it
//!   had sent — see the README).
//!
//! What is deliberately *not observed* (see [`super::exec`] and [`super::fixed`]):
//! - a watch at any moment other than right after a round trip of its own client (delivery
//!   time is network timing; the port only orders events before later replies);
//! - a partitioned client's state between 7/5 of its session timeout and the heal: the real
//!   client declares `Expired` by itself then, the simulated one stays `Disconnected` until
//!   the service tells it (the port's and DESIGN §2's model; the service has expired the
//!   session in both by then).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use engine::env::{
    CoordError, EventKind, KvError, MultiError, OpResult, SessionState, Stat, Ttl, WatchedEvent,
};

/// The labels of one run of a case, and its lines.
#[derive(Debug, Default, Clone)]
pub struct Transcript {
    pub lines: Vec<String>,
    sessions: BTreeMap<i64, usize>,
    zxids: BTreeMap<i64, usize>,
    /// Absolute prefix of the run (`/c17` or `c17:`), stripped from paths and keys.
    prefix: String,
}

impl Transcript {
    pub fn new(prefix: &str) -> Self {
        Transcript { prefix: prefix.to_string(), ..Default::default() }
    }

    pub fn push(&mut self, line: String) {
        self.lines.push(line);
    }

    /// Registers a new session; returns its label.
    pub fn session(&mut self, id: i64) -> String {
        let n = self.sessions.len();
        let n = *self.sessions.entry(id).or_insert(n);
        format!("S{n}")
    }

    fn owner(&self, id: i64) -> String {
        if id == 0 {
            return "-".to_string();
        }
        match self.sessions.get(&id) {
            Some(n) => format!("S{n}"),
            None => "S?".to_string(),
        }
    }

    fn zxid(&mut self, z: i64) -> String {
        let n = self.zxids.len();
        format!("z{}", *self.zxids.entry(z).or_insert(n))
    }

    /// A path with the run's root replaced by `~`.
    pub fn path(&self, p: &str) -> String {
        match p.strip_prefix(&self.prefix) {
            Some("") => "~".to_string(),
            Some(rest) if rest.starts_with('/') => format!("~{rest}"),
            _ => p.to_string(),
        }
    }

    pub fn stat(&mut self, s: &Stat) -> String {
        let (c, m, p) = (self.zxid(s.czxid), self.zxid(s.mzxid), self.zxid(s.pzxid));
        format!(
            "stat(c={c} m={m} p={p} v={} cv={} av={} owner={} len={} kids={})",
            s.version,
            s.cversion,
            s.aversion,
            self.owner(s.ephemeral_owner),
            s.data_length,
            s.num_children
        )
    }

    pub fn coord_err(&self, e: &CoordError) -> String {
        match e {
            CoordError::BadArguments(_) => "Err(BadArguments)".to_string(),
            e => format!("Err({e:?})"),
        }
    }

    pub fn multi_err(&self, e: &MultiError) -> String {
        format!("Err(multi index={} {})", e.index, self.coord_err(&e.error))
    }

    pub fn op_result(&mut self, r: &OpResult) -> String {
        match r {
            OpResult::Create(p) => format!("created {}", self.path(p)),
            OpResult::Delete => "deleted".to_string(),
            OpResult::SetData(s) => format!("set {}", self.stat(s)),
            OpResult::Check => "checked".to_string(),
        }
    }

    pub fn event(&self, e: &WatchedEvent) -> String {
        let kind = match e.kind {
            EventKind::Session(s) => format!("Session({})", state(s)),
            k => format!("{k:?}"),
        };
        format!("{kind} {}", self.path(&e.path))
    }

    pub fn kv_err(&self, e: &KvError) -> String {
        match e {
            KvError::Timeout { .. } => "Err(Timeout)".to_string(),
            e => format!("Err({e:?})"),
        }
    }

    /// The whole transcript as text.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            let _ = writeln!(s, "{l}");
        }
        s
    }
}

pub fn state(s: SessionState) -> &'static str {
    match s {
        SessionState::Connected => "Connected",
        SessionState::Disconnected => "Disconnected",
        SessionState::Expired => "Expired",
        SessionState::Closed => "Closed",
    }
}

pub fn ttl(t: &Ttl) -> String {
    match t {
        Ttl::NoKey => "NoKey".to_string(),
        Ttl::NoExpiry => "NoExpiry".to_string(),
        Ttl::Remaining(d) => format!("Remaining(~{}s)", ceil_secs(*d)),
    }
}

fn ceil_secs(d: Duration) -> u128 {
    d.as_millis().div_ceil(1000)
}

/// Bytes as a quoted string (values are ASCII in every case).
pub fn bytes(b: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_by_first_appearance() {
        let mut t = Transcript::new("/c1");
        assert_eq!(t.session(900), "S0");
        assert_eq!(t.session(5), "S1");
        assert_eq!(t.session(900), "S0");
        let st = Stat { czxid: 40, mzxid: 44, pzxid: 40, ephemeral_owner: 5, ..Stat::default() };
        assert_eq!(t.stat(&st), "stat(c=z0 m=z1 p=z0 v=0 cv=0 av=0 owner=S1 len=0 kids=0)");
        assert_eq!(t.path("/c1/a/b"), "~/a/b");
        assert_eq!(t.path("/c1"), "~");
        assert_eq!(t.path("/c10"), "/c10");
        assert_eq!(ttl(&Ttl::Remaining(Duration::from_millis(5497))), "Remaining(~6s)");
        assert_eq!(ttl(&Ttl::Remaining(Duration::from_millis(5500))), "Remaining(~6s)");
    }
}
