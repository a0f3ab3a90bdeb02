//! The run trace: every `tracing` event of a simulated run, tagged with the node it ran on
//! and the simulated time, folded into a hash (and printed on `replay`).
//!
//! madsim enters a span `node{id, name}` whenever it polls a node's task; this layer picks
//! the name from that span, so engine code never has to pass node names to its log calls.
//! The hash covers INFO and above from Sandtable's own crates plus WARN and above from
//! everything else; `replay --verbose` also prints DEBUG lines, which are not hashed, so
//! verbosity never changes the hash.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Level, Subscriber};

/// Where trace lines go besides the hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TraceOutput {
    /// Hash only (sweeps).
    HashOnly,
    /// Also print hashed lines to stdout.
    Print,
    /// Also print, including unhashed DEBUG lines.
    PrintVerbose,
}

#[derive(Default)]
struct State {
    hasher: Sha256,
    lines: u64,
}

/// Collects the trace of one run.
#[derive(Clone)]
pub struct TraceCollector {
    state: Arc<Mutex<State>>,
    output: TraceOutput,
}

struct FieldFmt<'a> {
    out: &'a mut String,
    message: Option<String>,
    name_only: bool,
    name: Option<String>,
}

impl Visit for FieldFmt<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.name_only {
            if field.name() == "name" {
                self.name = Some(value.to_string());
            }
            return;
        }
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            let _ = write!(self.out, " {}={}", field.name(), value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if self.name_only {
            if field.name() == "name" {
                self.name = Some(format!("{value:?}").trim_matches('"').to_string());
            }
            return;
        }
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            let _ = write!(self.out, " {}={:?}", field.name(), value);
        }
    }
}

/// Whether `target` is one of this workspace's crates or a module in one. Called for every
/// event and span the simulation creates, so it does not allocate.
fn ours(target: &str) -> bool {
    ["sim", "scenarios", "engine", "real", "tests"]
        .iter()
        .any(|c| target.strip_prefix(c).is_some_and(|rest| rest.is_empty() || rest.starts_with("::")))
}

impl TraceCollector {
    pub fn new(output: TraceOutput) -> Self {
        TraceCollector { state: Arc::default(), output }
    }

    /// Hex SHA-256 of every hashed line so far.
    pub fn hash(&self) -> String {
        let st = self.state.lock().expect("trace poisoned");
        hex::encode(&st.hasher.clone().finalize()[..16])
    }

    /// Number of hashed lines.
    pub fn lines(&self) -> u64 {
        self.state.lock().expect("trace poisoned").lines
    }

    /// Adds a line that did not come from `tracing` (fault plan, verdict).
    pub fn add_line(&self, line: &str) {
        let mut st = self.state.lock().expect("trace poisoned");
        st.hasher.update(line.as_bytes());
        st.hasher.update(b"\n");
        st.lines += 1;
        drop(st);
        if self.output != TraceOutput::HashOnly {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }

    /// The `tracing` subscriber feeding this collector.
    pub fn subscriber(&self) -> TraceSubscriber {
        TraceSubscriber { collector: self.clone(), spans: Mutex::default() }
    }
}

/// The subscriber of one simulated run: hashes (and prints) events, tagged with their node.
///
/// Hand-written rather than `tracing_subscriber::Registry` plus a layer: madsim enters a
/// span on every poll of every task, and the registry's reference-counted span slots
/// (clone, enter, exit, try_close through a sharded slab) were 10-15% of a scenario's
/// instructions (callgrind, issue 19). A run creates a few thousand spans (one per madsim
/// node and task; the engine makes none), so this subscriber keeps each one's node name in
/// a vector for the whole run and never frees a slot; a run is one thread, so the stack of
/// entered spans is a plain vector too.
pub struct TraceSubscriber {
    collector: TraceCollector,
    spans: Mutex<Spans>,
}

#[derive(Default)]
struct Spans {
    /// Node name of span `Id(i + 1)`: its own for a `node` span, else its parent's.
    node: Vec<Option<Arc<str>>>,
    /// Entered spans, innermost last.
    entered: Vec<Id>,
}

impl Spans {
    fn node_of(&self, id: &Id) -> Option<Arc<str>> {
        let i = usize::try_from(id.into_u64()).ok()?.checked_sub(1)?;
        self.node.get(i).cloned().flatten()
    }
}

impl TraceSubscriber {
    fn spans(&self) -> std::sync::MutexGuard<'_, Spans> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Subscriber for TraceSubscriber {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        let level = *metadata.level();
        if ours(metadata.target()) {
            level <= Level::INFO
                || (self.collector.output == TraceOutput::PrintVerbose && level <= Level::DEBUG)
        } else {
            level <= Level::WARN || !metadata.is_event()
        }
    }

    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let own = if attrs.metadata().name() == "node" {
            let mut sink = String::new();
            let mut v = FieldFmt { out: &mut sink, message: None, name_only: true, name: None };
            attrs.record(&mut v);
            v.name.map(Arc::from)
        } else {
            None
        };
        let mut spans = self.spans();
        let node = own.or_else(|| {
            if let Some(parent) = attrs.parent() {
                spans.node_of(parent)
            } else if attrs.is_contextual() {
                spans.entered.last().and_then(|id| spans.node_of(id))
            } else {
                None
            }
        });
        spans.node.push(node);
        Id::from_u64(spans.node.len() as u64)
    }

    fn record(&self, _span: &Id, _values: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let level = *meta.level();
        let hashed = if ours(meta.target()) { level <= Level::INFO } else { level <= Level::WARN };
        if !hashed && self.collector.output != TraceOutput::PrintVerbose {
            return;
        }
        let node = {
            let spans = self.spans();
            let span = if let Some(parent) = event.parent() {
                Some(parent.clone())
            } else if event.is_contextual() {
                spans.entered.last().cloned()
            } else {
                None
            };
            span.and_then(|id| spans.node_of(&id))
        };
        let t = madsim::time::TimeHandle::try_current().map(|h| h.elapsed()).unwrap_or_default();
        let mut fields = String::new();
        let mut v = FieldFmt { out: &mut fields, message: None, name_only: false, name: None };
        event.record(&mut v);
        let message = v.message.unwrap_or_default();
        let line = format!(
            "{:>10.6}s {:<10} {:<5} {}: {}{}",
            t.as_secs_f64(),
            node.as_deref().unwrap_or("-"),
            level.as_str(),
            meta.target(),
            message,
            fields
        );
        if hashed {
            self.collector.add_line(&line);
        } else {
            let _ = writeln!(std::io::stdout().lock(), "{line}");
        }
    }

    fn enter(&self, span: &Id) {
        self.spans().entered.push(span.clone());
    }

    fn exit(&self, span: &Id) {
        let mut spans = self.spans();
        if let Some(i) = spans.entered.iter().rposition(|e| e == span) {
            spans.entered.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ours;

    #[test]
    fn ours_matches_the_workspace_crates_and_their_modules_only() {
        for t in ["sim", "engine", "engine::rpc::client", "scenarios::catalogue", "real", "tests"] {
            assert!(ours(t), "{t} is ours");
        }
        for t in ["madsim", "simple", "engineer::x", "tokio::net", "real_estate", "sim_x::y", ""] {
            assert!(!ours(t), "{t} is not ours");
        }
    }
}
