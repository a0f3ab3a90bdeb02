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
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

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

/// The node name recorded on madsim's `node` spans.
struct NodeName(String);

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

fn ours(target: &str) -> bool {
    ["sim", "scenarios", "engine", "real", "tests"]
        .iter()
        .any(|c| target == *c || target.starts_with(&format!("{c}::")))
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

    /// The `tracing` layer feeding this collector.
    pub fn layer(&self) -> TraceLayer {
        TraceLayer { collector: self.clone() }
    }
}

pub struct TraceLayer {
    collector: TraceCollector,
}

impl<S> Layer<S> for TraceLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "node" {
            return;
        }
        let mut sink = String::new();
        let mut v = FieldFmt { out: &mut sink, message: None, name_only: true, name: None };
        attrs.record(&mut v);
        if let (Some(name), Some(span)) = (v.name, ctx.span(id)) {
            span.extensions_mut().insert(NodeName(name));
        }
    }

    fn enabled(&self, metadata: &tracing::Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        let level = *metadata.level();
        if ours(metadata.target()) {
            level <= Level::INFO
                || (self.collector.output == TraceOutput::PrintVerbose && level <= Level::DEBUG)
        } else {
            level <= Level::WARN || !metadata.is_event()
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let level = *meta.level();
        let hashed = if ours(meta.target()) { level <= Level::INFO } else { level <= Level::WARN };
        if !hashed && self.collector.output != TraceOutput::PrintVerbose {
            return;
        }
        let node = ctx
            .event_scope(event)
            .and_then(|scope| {
                scope.from_root().find_map(|s| s.extensions().get::<NodeName>().map(|n| n.0.clone()))
            })
            .unwrap_or_else(|| "-".to_string());
        let t = madsim::time::TimeHandle::try_current().map(|h| h.elapsed()).unwrap_or_default();
        let mut fields = String::new();
        let mut v = FieldFmt { out: &mut fields, message: None, name_only: false, name: None };
        event.record(&mut v);
        let message = v.message.unwrap_or_default();
        let line = format!(
            "{:>10.6}s {:<10} {:<5} {}: {}{}",
            t.as_secs_f64(),
            node,
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
}
