//! The row model: calls on the versioned, fenced rows of SQL instances (the `Db` port,
//! [`engine::env::Db`]) as a history records them, and their sequential specification for
//! the linearizability search ([`check_rows`]).
//!
//! # The object
//! One SQL *instance* is one linearizable object: a `transact` may span several of its rows,
//! and the port promises it takes effect wholly, at one point, or not at all. A history is
//! therefore checked instance by instance (P-compositionality), with the model state being
//! every row of that instance the history names — which includes per-row linearizability,
//! and makes a multi-row transaction seen half-applied unlinearizable.
//!
//! A row is `(value, version, fence)`; a never-written key is `(absent, 0, 0)`, and a
//! placeholder (after a `Delete`, or a `RaiseFence` of an absent key) is absent with its
//! version and fence kept. Each call follows the port's rules exactly (`engine::env::db`):
//! per operation the fence first (`Fenced` when the row's fence is higher), then the
//! expected version (`VersionMismatch` / `NotFound`); a successful `Put`/`Delete` bumps the
//! version and sets the fence; `RaiseFence` sets the fence only; `Guard` checks the fence and
//! that the row exists and changes nothing. A refused transaction changes nothing and
//! answers for its first failing operation.
//!
//! # Outcomes
//! A call answered by the instance is `Ok`, refusals included ([`DbRes::Refused`]: the
//! instance's answer says exactly what the state was). `Fail` = certainly not applied
//! (nothing was sent); `Info` = maybe applied (timeout or connection loss after sending).
//! Unknown reads are dropped; an unknown transaction, if linearized, does what the state
//! dictates (possibly being refused, i.e. nothing).

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use engine::env::Expect;
use serde::{Deserialize, Serialize};

use super::linearizable::{search, LinConfig, Model, SearchOp, SearchOutcome, CHECKER};
use super::register::Interner;
use super::Report;
use crate::history::{History, Operation, Outcome};

/// How many operations of the longest linearizable prefix a violation message shows.
const PREFIX_TAIL_SHOWN: usize = 12;
/// How many unplaceable operations a violation message lists.
const STUCK_SHOWN: usize = 16;

/// One operation of a recorded `transact` (all on one table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RowWrite {
    Put {
        key: String,
        value: String,
        expect: Expect,
        fence: u64,
    },
    Delete {
        key: String,
        expect: Expect,
        fence: u64,
    },
    RaiseFence {
        key: String,
        fence: u64,
    },
    /// A read-only condition: the row's fence is at most `fence` and the row exists.
    Guard {
        key: String,
        fence: u64,
    },
}

impl RowWrite {
    pub fn key(&self) -> &str {
        match self {
            RowWrite::Put { key, .. }
            | RowWrite::Delete { key, .. }
            | RowWrite::RaiseFence { key, .. }
            | RowWrite::Guard { key, .. } => key,
        }
    }

    pub fn fence(&self) -> u64 {
        match self {
            RowWrite::Put { fence, .. }
            | RowWrite::Delete { fence, .. }
            | RowWrite::RaiseFence { fence, .. }
            | RowWrite::Guard { fence, .. } => *fence,
        }
    }

    /// `Put` and `Delete`: the operations that change data (and bump the version).
    pub fn writes_data(&self) -> bool {
        matches!(self, RowWrite::Put { .. } | RowWrite::Delete { .. })
    }
}

/// One call on a SQL instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DbCall {
    Get { key: String },
    Transact(Vec<RowWrite>),
}

/// A call and the instance it went to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbOp {
    pub instance: String,
    pub call: DbCall,
}

/// A live row as read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowSeen {
    pub value: String,
    pub version: u64,
    pub fence: u64,
}

/// What one operation of a committed `transact` answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteSeen {
    Put { version: u64 },
    Delete { version: u64, existed: bool },
    RaiseFence { row: Option<RowSeen>, fence: u64 },
    Guard { version: u64 },
}

/// Why the instance refused a `transact` (nothing applied), naming its first failing op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    Fenced { op_index: usize, row_fence: u64 },
    VersionMismatch { op_index: usize, actual: u64 },
    NotFound { op_index: usize },
}

impl Refusal {
    pub fn op_index(&self) -> usize {
        match *self {
            Refusal::Fenced { op_index, .. }
            | Refusal::VersionMismatch { op_index, .. }
            | Refusal::NotFound { op_index } => op_index,
        }
    }
}

/// The instance's answer to a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DbRes {
    /// `get`: the live row, or `None` (absent or a placeholder).
    Row(Option<RowSeen>),
    /// `transact` committed: one result per op.
    Written(Vec<WriteSeen>),
    /// `transact` refused.
    Refused(Refusal),
}

impl DbCall {
    /// Whether `res` is the right kind of answer for this call.
    pub fn accepts(&self, res: &DbRes) -> bool {
        match (self, res) {
            (DbCall::Get { .. }, DbRes::Row(_)) => true,
            (DbCall::Transact(ops), DbRes::Written(w)) => {
                w.len() == ops.len()
                    && ops.iter().zip(w).all(|(o, w)| {
                        matches!(
                            (o, w),
                            (RowWrite::Put { .. }, WriteSeen::Put { .. })
                                | (RowWrite::Delete { .. }, WriteSeen::Delete { .. })
                                | (RowWrite::RaiseFence { .. }, WriteSeen::RaiseFence { .. })
                                | (RowWrite::Guard { .. }, WriteSeen::Guard { .. })
                        )
                    })
            }
            (DbCall::Transact(ops), DbRes::Refused(r)) => r.op_index() < ops.len(),
            _ => false,
        }
    }
}

fn show_expect(e: Expect) -> String {
    match e {
        Expect::Any => "any".into(),
        Expect::Absent => "absent".into(),
        Expect::Present => "present".into(),
        Expect::Version(v) => format!("v{v}"),
    }
}

impl fmt::Display for RowWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowWrite::Put { key, value, expect, fence } => {
                write!(f, "put {key}={value:?} if {} fence {fence}", show_expect(*expect))
            }
            RowWrite::Delete { key, expect, fence } => {
                write!(f, "delete {key} if {} fence {fence}", show_expect(*expect))
            }
            RowWrite::RaiseFence { key, fence } => write!(f, "raise_fence {key} to {fence}"),
            RowWrite::Guard { key, fence } => write!(f, "guard {key} fence {fence}"),
        }
    }
}

impl fmt::Display for DbOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.call {
            DbCall::Get { key } => write!(f, "{}: get {key}", self.instance),
            DbCall::Transact(ops) => {
                let ops: Vec<String> = ops.iter().map(|o| o.to_string()).collect();
                write!(f, "{}: transact [{}]", self.instance, ops.join("; "))
            }
        }
    }
}

impl fmt::Display for RowSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}@v{}/f{}", self.value, self.version, self.fence)
    }
}

impl fmt::Display for DbRes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbRes::Row(None) => f.write_str("absent"),
            DbRes::Row(Some(r)) => write!(f, "{r}"),
            DbRes::Written(ws) => {
                let parts: Vec<String> = ws
                    .iter()
                    .map(|w| match w {
                        WriteSeen::Put { version } => format!("v{version}"),
                        WriteSeen::Delete { version, existed } => {
                            format!("deleted v{version} existed={existed}")
                        }
                        WriteSeen::RaiseFence { row: Some(r), fence } => format!("raised {fence}: {r}"),
                        WriteSeen::RaiseFence { row: None, fence } => format!("raised {fence}: absent"),
                        WriteSeen::Guard { version } => format!("guard ok v{version}"),
                    })
                    .collect();
                write!(f, "ok [{}]", parts.join("; "))
            }
            DbRes::Refused(r) => write!(f, "refused {r:?}"),
        }
    }
}

/// One row of the model: interned value (0 = absent or placeholder), version, fence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(crate) struct Cell {
    val: u32,
    version: u64,
    fence: u64,
}

/// An interned [`RowWrite`] (`slot` = the key's index in the instance's state).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IWrite {
    Put { slot: usize, val: u32, expect: Expect, fence: u64 },
    Delete { slot: usize, expect: Expect, fence: u64 },
    Raise { slot: usize, fence: u64 },
    Guard { slot: usize, fence: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ICall {
    Get { slot: usize },
    Transact(Vec<IWrite>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IWriteSeen {
    Put { version: u64 },
    Delete { version: u64, existed: bool },
    Raise { row: Option<Cell>, fence: u64 },
    Guard { version: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IRes {
    Row(Option<Cell>),
    Written(Vec<IWriteSeen>),
    Refused(Refusal),
}

/// Checks `expect` against the live version (`None`: absent or placeholder), as the port does.
fn check_expect(op_index: usize, expect: Expect, live: Option<u64>) -> Result<(), Refusal> {
    match (expect, live) {
        (Expect::Any, _) | (Expect::Absent, None) | (Expect::Present, Some(_)) => Ok(()),
        (Expect::Absent, Some(actual)) => Err(Refusal::VersionMismatch { op_index, actual }),
        (Expect::Present | Expect::Version(_), None) => Err(Refusal::NotFound { op_index }),
        (Expect::Version(v), Some(actual)) if v == actual => Ok(()),
        (Expect::Version(_), Some(actual)) => Err(Refusal::VersionMismatch { op_index, actual }),
    }
}

/// Applies a transaction to `state` by the port's rules: the new state and the results, or
/// the refusal of its first failing operation.
fn apply(state: &[Cell], ops: &[IWrite]) -> Result<(Vec<Cell>, Vec<IWriteSeen>), Refusal> {
    let mut s = state.to_vec();
    let mut results = Vec::with_capacity(ops.len());
    for (op_index, op) in ops.iter().enumerate() {
        let (IWrite::Put { slot, fence, .. }
        | IWrite::Delete { slot, fence, .. }
        | IWrite::Raise { slot, fence }
        | IWrite::Guard { slot, fence }) = *op;
        let cell = &mut s[slot];
        if fence < cell.fence {
            return Err(Refusal::Fenced { op_index, row_fence: cell.fence });
        }
        let live = (cell.val != 0).then_some(cell.version);
        results.push(match *op {
            IWrite::Put { val, expect, .. } => {
                check_expect(op_index, expect, live)?;
                *cell = Cell { val, version: cell.version + 1, fence };
                IWriteSeen::Put { version: cell.version }
            }
            IWrite::Delete { expect, .. } => {
                check_expect(op_index, expect, live)?;
                *cell = Cell { val: 0, version: cell.version + 1, fence };
                IWriteSeen::Delete { version: cell.version, existed: live.is_some() }
            }
            IWrite::Raise { .. } => {
                cell.fence = fence;
                IWriteSeen::Raise { row: (cell.val != 0).then_some(*cell), fence }
            }
            IWrite::Guard { .. } => {
                check_expect(op_index, Expect::Present, live)?;
                IWriteSeen::Guard { version: cell.version }
            }
        });
    }
    Ok((s, results))
}

/// The sequential specification of one instance's rows.
#[derive(Debug, Clone)]
pub(crate) struct RowsModel {
    slots: usize,
}

impl Model for RowsModel {
    type Op = ICall;
    type Result = IRes;
    type State = Vec<Cell>;

    fn init(&self) -> Vec<Cell> {
        vec![Cell::default(); self.slots]
    }

    fn step(&self, state: &Vec<Cell>, op: &ICall, result: Option<&IRes>) -> Option<Vec<Cell>> {
        match (op, result) {
            (ICall::Get { slot }, Some(IRes::Row(seen))) => {
                let c = state[*slot];
                let now = (c.val != 0).then_some(c);
                (now == *seen).then(|| state.clone())
            }
            (ICall::Get { .. }, None) => Some(state.clone()),
            (ICall::Transact(ops), result) => match (apply(state, ops), result) {
                (Ok((next, _)), None) => Some(next),
                (Err(_), None) => Some(state.clone()),
                (Ok((next, got)), Some(IRes::Written(seen))) => (got == *seen).then_some(next),
                (Err(refusal), Some(IRes::Refused(seen))) => (refusal == *seen).then(|| state.clone()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Per-instance interning of keys (slots) and values.
#[derive(Default)]
struct Names {
    slots: BTreeMap<String, usize>,
    keys: Vec<String>,
    values: Interner,
}

impl Names {
    fn slot(&mut self, key: &str) -> usize {
        if let Some(&s) = self.slots.get(key) {
            return s;
        }
        self.keys.push(key.to_string());
        self.slots.insert(key.to_string(), self.keys.len() - 1);
        self.keys.len() - 1
    }

    fn cell(&mut self, r: &RowSeen) -> Cell {
        Cell { val: self.values.intern(Some(&r.value)), version: r.version, fence: r.fence }
    }

    fn call(&mut self, c: &DbCall) -> ICall {
        match c {
            DbCall::Get { key } => ICall::Get { slot: self.slot(key) },
            DbCall::Transact(ops) => ICall::Transact(
                ops.iter()
                    .map(|o| match o {
                        RowWrite::Put { key, value, expect, fence } => IWrite::Put {
                            slot: self.slot(key),
                            val: self.values.intern(Some(value)),
                            expect: *expect,
                            fence: *fence,
                        },
                        RowWrite::Delete { key, expect, fence } => {
                            IWrite::Delete { slot: self.slot(key), expect: *expect, fence: *fence }
                        }
                        RowWrite::RaiseFence { key, fence } => {
                            IWrite::Raise { slot: self.slot(key), fence: *fence }
                        }
                        RowWrite::Guard { key, fence } => {
                            IWrite::Guard { slot: self.slot(key), fence: *fence }
                        }
                    })
                    .collect(),
            ),
        }
    }

    fn res(&mut self, r: &DbRes) -> IRes {
        match r {
            DbRes::Row(row) => IRes::Row(row.as_ref().map(|r| self.cell(r))),
            DbRes::Written(ws) => IRes::Written(
                ws.iter()
                    .map(|w| match w {
                        WriteSeen::Put { version } => IWriteSeen::Put { version: *version },
                        WriteSeen::Delete { version, existed } => {
                            IWriteSeen::Delete { version: *version, existed: *existed }
                        }
                        WriteSeen::RaiseFence { row, fence } => {
                            IWriteSeen::Raise { row: row.as_ref().map(|r| self.cell(r)), fence: *fence }
                        }
                        WriteSeen::Guard { version } => IWriteSeen::Guard { version: *version },
                    })
                    .collect(),
            ),
            DbRes::Refused(r) => IRes::Refused(*r),
        }
    }

    fn show(&self, state: &[Cell]) -> String {
        let rows: Vec<String> = self
            .keys
            .iter()
            .zip(state)
            .map(|(k, c)| match self.values.name(c.val) {
                Some(v) => format!("{k}={v:?}@v{}/f{}", c.version, c.fence),
                None => format!("{k}=absent@v{}/f{}", c.version, c.fence),
            })
            .collect();
        rows.join(", ")
    }
}

type Op = Operation<DbOp, DbRes>;

/// Checks a history of calls on SQL instances for linearizability, instance by instance,
/// against the row model (see the module doc). Reports under the linearizability checker's
/// name, with its counters (`linearizability.keys_checked` counts instances here).
pub fn check_rows(history: &History<DbOp, DbRes>, cfg: &LinConfig) -> Report {
    let mut report = Report::default();
    for name in [
        "keys_checked",
        "ops_checked",
        "info_ops",
        "info_reads_dropped",
        "failed_ops_dropped",
        "search_steps",
        "non_linearizable_keys",
        "inconclusive_keys",
    ] {
        report.count(&format!("{CHECKER}.{name}"), 0);
    }
    report.count_max(&format!("{CHECKER}.max_ops_per_key"), 0);
    let mut by_instance: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in &history.ops {
        by_instance.entry(op.op.instance.as_str()).or_default().push(op);
    }
    for (instance, mut ops) in by_instance {
        ops.sort_by_key(|o| o.id);
        check_instance(instance, &ops, cfg, &mut report);
    }
    report
}

fn check_instance(instance: &str, inst_ops: &[&Op], cfg: &LinConfig, report: &mut Report) {
    let mut names = Names::default();
    let mut searched: Vec<&Op> = Vec::new();
    let mut ops: Vec<SearchOp<ICall, IRes>> = Vec::new();
    for &o in inst_ops {
        let result = match o.outcome() {
            Outcome::Fail => {
                report.count(&format!("{CHECKER}.failed_ops_dropped"), 1);
                continue;
            }
            Outcome::Info => {
                if matches!(o.op.call, DbCall::Get { .. }) {
                    report.count(&format!("{CHECKER}.info_reads_dropped"), 1);
                    continue;
                }
                report.count(&format!("{CHECKER}.info_ops"), 1);
                None
            }
            Outcome::Ok(r) => {
                if !o.op.call.accepts(r) {
                    report.violation_with_ops(
                        CHECKER,
                        format!(
                            "{instance}: malformed operation {} (answer does not fit the call; left out \
                             of the search)",
                            describe(o)
                        ),
                        vec![o.id],
                    );
                    continue;
                }
                Some(names.res(r))
            }
        };
        ops.push(SearchOp {
            op: names.call(&o.op.call),
            result,
            process: o.process,
            invoke_ns: o.invoke_ns,
            return_ns: o.return_ns(),
        });
        searched.push(o);
    }
    report.count(&format!("{CHECKER}.keys_checked"), 1);
    report.count(&format!("{CHECKER}.ops_checked"), ops.len() as u64);
    report.count_max(&format!("{CHECKER}.max_ops_per_key"), ops.len() as u64);

    let model = RowsModel { slots: names.keys.len() };
    match search(&model, &ops, cfg.step_budget) {
        SearchOutcome::Linearizable { steps } => report.count(&format!("{CHECKER}.search_steps"), steps),
        SearchOutcome::Inconclusive { steps } => {
            report.count(&format!("{CHECKER}.search_steps"), steps);
            report.count(&format!("{CHECKER}.inconclusive_keys"), 1);
            tracing::warn!(
                instance,
                ops = ops.len(),
                steps,
                "linearizability search budget exhausted; instance is inconclusive (not a violation)"
            );
        }
        SearchOutcome::NotLinearizable { steps, prefix, state, stuck, deadline } => {
            report.count(&format!("{CHECKER}.search_steps"), steps);
            report.count(&format!("{CHECKER}.non_linearizable_keys"), 1);
            let mut m = String::new();
            let _ = writeln!(m, "{instance} is not linearizable ({} ops, {steps} search steps).", ops.len());
            let _ = write!(m, "Longest linearizable prefix: {} ops", prefix.len());
            if prefix.len() > PREFIX_TAIL_SHOWN {
                let _ = write!(m, " (last {PREFIX_TAIL_SHOWN} shown)");
            }
            let _ = writeln!(m, ":");
            for &i in &prefix[prefix.len().saturating_sub(PREFIX_TAIL_SHOWN)..] {
                let _ = writeln!(m, "  {}", describe(searched[i]));
            }
            let _ = writeln!(m, "after which the rows are: {}.", names.show(&state));
            let _ = writeln!(m, "None of these pending ops can be linearized next:");
            for &i in stuck.iter().take(STUCK_SHOWN) {
                let mark = if Some(i) == deadline { "  <- must take effect by its return" } else { "" };
                let _ = writeln!(m, "  {}{mark}", describe(searched[i]));
            }
            if stuck.len() > STUCK_SHOWN {
                let _ = writeln!(m, "  ... and {} more", stuck.len() - STUCK_SHOWN);
            }
            // The operations none of which can go next: where the history stops making sense.
            let mut involved: Vec<usize> = stuck.iter().map(|&i| searched[i].id).collect();
            involved.sort_unstable();
            report.violation_with_ops(CHECKER, m.trim_end().to_string(), involved);
        }
    }
}

/// `#id p<process> <op> -> <result> [invoke..return]`, times in ns.
pub fn describe(o: &Op) -> String {
    let (result, end) = match &o.completion {
        Some((t, Outcome::Ok(r))) => (r.to_string(), format!("{t}]")),
        Some((t, Outcome::Fail)) => ("fail".to_string(), format!("{t}]")),
        Some((t, Outcome::Info)) => (format!("info@{t}"), "∞)".to_string()),
        None => ("info (never completed)".to_string(), "∞)".to_string()),
    };
    format!("#{} p{} {} -> {result} [{}..{end}", o.id, o.process, o.op, o.invoke_ns)
}

#[cfg(test)]
mod tests;
