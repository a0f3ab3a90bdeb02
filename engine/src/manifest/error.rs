//! Why a manifest was rejected, and the helpers that make the messages precise.

use serde_json::Value;

/// Why [`Manifest::load`](super::Manifest::load) rejected a manifest.
///
/// Every variant that concerns a value names its full key path (`RpcService.rpc_port`,
/// `flavors.pvp.RpcService.rpc_tags[1]`), so the message alone says what to edit.
/// Nothing is ever partly applied: a rejected manifest yields no `Manifest` at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read. Check the path and its permissions.
    #[error("cannot read manifest {path}: {message}")]
    Io { path: String, kind: std::io::ErrorKind, message: String },
    /// The text is not JSON. `line` and `column` are 1-based (column 0 means "before the
    /// first character", e.g. for an empty file).
    #[error("invalid JSON at line {line}, column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    /// A key the engine does not know; most often a typo, hence the suggestion.
    #[error("{path}: unknown key{}", suggestion_note(suggestion))]
    UnknownKey { path: String, suggestion: Option<String> },
    /// A value of the wrong JSON type.
    #[error("{path}: expected {expected}, found {found}")]
    WrongType { path: String, expected: String, found: String },
    /// A value of the right type outside the accepted range.
    #[error("{path}: out of range: expected {expected}, found {found}")]
    OutOfRange { path: String, expected: String, found: String },
    /// A well-typed value that is still unusable (e.g. a ZooKeeper node without a port).
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    /// A required section or key is absent.
    #[error("{path}: missing required key")]
    Missing { path: String },
    /// `--flavor` named a flavor the manifest does not define.
    #[error("unknown flavor {name:?}; known flavors: {}", known_list(known))]
    UnknownFlavor { name: String, known: Vec<String> },
}

fn suggestion_note(s: &Option<String>) -> String {
    match s {
        Some(s) => format!(" (did you mean {s}?)"),
        None => String::new(),
    }
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "none (the manifest has no \"flavors\" section)".to_owned()
    } else {
        known.join(", ")
    }
}

/// Longest string value quoted verbatim in an error; longer ones are cut with `...`.
pub(crate) const FOUND_STRING_CHARS_MAX: usize = 40;

/// Describes a JSON value for "found ..." in an error: its type and, for scalars, the value.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) if n.is_f64() => format!("number {n}"),
        Value::Number(n) => format!("integer {n}"),
        Value::String(s) => {
            if s.chars().count() > FOUND_STRING_CHARS_MAX {
                let cut: String = s.chars().take(FOUND_STRING_CHARS_MAX).collect();
                format!("string {:?}...", cut)
            } else {
                format!("string {s:?}")
            }
        }
        Value::Array(a) => format!("an array of {} element{}", a.len(), if a.len() == 1 { "" } else { "s" }),
        Value::Object(_) => "an object".to_owned(),
    }
}

/// Largest edit distance at which an unknown key still gets a "did you mean" suggestion.
const SUGGESTION_DISTANCE_MAX: usize = 3;

/// Shortest unknown key that is suggested a known key merely for being part of it
/// (`rpc_threads` -> `rpc_threads_size`, `port` -> `rpc_port`).
const SUGGESTION_PART_CHARS_MIN: usize = 4;

/// The known name closest to `unknown` (case-insensitive Levenshtein distance), if close
/// enough to be a plausible typo, or if one name contains the other. Ties go to the first in
/// `known`, so the answer is stable.
pub(crate) fn suggest<'a>(unknown: &str, known: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let u = unknown.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let kl = k.to_lowercase();
        let d = levenshtein(&u, &kl);
        // Short names need a tighter bound, or every 3-letter key would suggest another.
        let limit = SUGGESTION_DISTANCE_MAX.min(k.chars().count().max(u.chars().count()) / 3).max(1);
        let part = u.chars().count().min(kl.chars().count()) >= SUGGESTION_PART_CHARS_MIN
            && (kl.contains(&u) || u.contains(&kl));
        if (d <= limit || part) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k.to_owned())
}

/// Longest string compared by [`levenshtein`]; longer inputs get no suggestion (keeps the
/// quadratic comparison cheap on hostile input).
const LEVENSHTEIN_CHARS_MAX: usize = 64;

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > LEVENSHTEIN_CHARS_MAX || b.len() > LEVENSHTEIN_CHARS_MAX {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("rpc_prot", "rpc_port"), 2);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("same", "same"), 0);
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let known = ["rpc_port", "rpc_tags", "rpc_enabled"];
        assert_eq!(suggest("rpc_prot", known), Some("rpc_port".into()));
        assert_eq!(suggest("RPC_ENABLED", known), Some("rpc_enabled".into()));
        assert_eq!(suggest("zookeeper", known), None);
        assert_eq!(suggest("rpc_threads", ["rpc_port", "rpc_threads_size"]), Some("rpc_threads_size".into()));
        assert_eq!(suggest("port", known), Some("rpc_port".into()));
        assert_eq!(suggest("rpc", known), None, "too short to be a part");
        assert_eq!(suggest("x", ["y"]), Some("y".into()));
        assert_eq!(suggest("xy", ["ab"]), None);
    }

    #[test]
    fn describe_values() {
        assert_eq!(describe(&serde_json::json!("80")), "string \"80\"");
        assert_eq!(describe(&serde_json::json!(1.5)), "number 1.5");
        assert_eq!(describe(&serde_json::json!(-3)), "integer -3");
        assert_eq!(describe(&serde_json::json!([1])), "an array of 1 element");
        assert_eq!(describe(&serde_json::json!("x".repeat(50))), format!("string {:?}...", "x".repeat(40)));
    }
}
