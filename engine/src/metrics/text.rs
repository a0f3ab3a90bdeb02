//! The Prometheus text exposition format, version 0.0.4.
//!
//! ```text
//! # HELP sandtable_rpc_client_calls_started_total RPC calls made, by message type.
//! # TYPE sandtable_rpc_client_calls_started_total counter
//! sandtable_rpc_client_calls_started_total{method="echo"} 3
//! # HELP sandtable_rpc_client_call_duration_seconds ...
//! # TYPE sandtable_rpc_client_call_duration_seconds histogram
//! sandtable_rpc_client_call_duration_seconds_bucket{method="echo",le="0.0005"} 0
//! ...
//! sandtable_rpc_client_call_duration_seconds_bucket{method="echo",le="+Inf"} 3
//! sandtable_rpc_client_call_duration_seconds_sum{method="echo"} 0.006
//! sandtable_rpc_client_call_duration_seconds_count{method="echo"} 3
//! ```
//!
//! Label values escape `\`, `"` and line feeds; HELP text escapes `\` and line feeds.
//! Floats are written in Rust's shortest round-trip form, with `+Inf`, `-Inf` and `NaN`
//! spelled as Prometheus expects.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{Cell, Family, Kind};

/// Checks a metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) and its label names
/// (`[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`, distinct, no `le` on histograms).
pub(super) fn check_name(name: &str, labels: &[&str], histogram: bool) -> Result<(), &'static str> {
    let ok_first = |c: char, colon: bool| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let ok_rest = |c: char, colon: bool| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    let valid = |s: &str, colon: bool| {
        let mut cs = s.chars();
        cs.next().is_some_and(|c| ok_first(c, colon)) && cs.all(|c| ok_rest(c, colon))
    };
    if !valid(name, true) {
        return Err("metric names are [a-zA-Z_:][a-zA-Z0-9_:]*");
    }
    for (i, l) in labels.iter().enumerate() {
        if !valid(l, false) || l.starts_with("__") {
            return Err("label names are [a-zA-Z_][a-zA-Z0-9_]* and do not start with __");
        }
        if histogram && *l == "le" {
            return Err("`le` is reserved on histograms");
        }
        if labels[..i].contains(l) {
            return Err("label names must be distinct");
        }
    }
    Ok(())
}

/// A label value with `\`, `"` and line feeds escaped.
pub(super) fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// HELP text with `\` and line feeds escaped.
pub(super) fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value or bound as Prometheus reads it.
pub(super) fn fmt_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".to_owned()
    } else if x == f64::INFINITY {
        "+Inf".to_owned()
    } else if x == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{x}")
    }
}

/// `{a="x",b="y"}` (empty for no labels), with `extra` appended (the `le` of buckets).
fn label_set(names: &[String], values: &[String], extra: Option<(&str, &str)>) -> String {
    let pairs: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .chain(extra)
        .map(|(n, v)| format!("{n}=\"{}\"", escape_label(v)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", pairs.join(","))
    }
}

/// Writes one family: HELP, TYPE and every series (`gauge_value` for callback gauges).
pub(super) fn write_family(
    out: &mut String,
    f: &Family,
    gauge_value: Option<f64>,
    series: &[(Vec<String>, Cell)],
) {
    let name = &f.name;
    let _ = writeln!(out, "# HELP {name} {}", escape_help(&f.help));
    let _ = writeln!(out, "# TYPE {name} {}", f.kind.type_name());
    if let Kind::GaugeFn = f.kind {
        if let Some(v) = gauge_value {
            let _ = writeln!(out, "{name} {}", fmt_float(v));
        }
        return;
    }
    for (values, cell) in series {
        match cell {
            Cell::Counter(c) => {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    label_set(&f.labels, values, None),
                    c.load(Ordering::Relaxed)
                );
            }
            Cell::Gauge(g) => {
                let _ = writeln!(
                    out,
                    "{name}{} {}",
                    label_set(&f.labels, values, None),
                    g.load(Ordering::Relaxed)
                );
            }
            Cell::Histogram(h) => {
                let snap = h.snapshot();
                let mut cumulative = 0u64;
                for (i, n) in snap.buckets.iter().enumerate() {
                    cumulative += n;
                    let le = h.bounds.get(i).map_or_else(|| "+Inf".to_owned(), |b| fmt_float(*b));
                    let labels = label_set(&f.labels, values, Some(("le", &le)));
                    let _ = writeln!(out, "{name}_bucket{labels} {cumulative}");
                }
                let labels = label_set(&f.labels, values, None);
                let sum = snap.sum_nanos as f64 / 1e9;
                let _ = writeln!(out, "{name}_sum{labels} {}", fmt_float(sum));
                let _ = writeln!(out, "{name}_count{labels} {}", snap.count);
            }
        }
    }
}
