//! A typed reader over one JSON object, producing path-precise errors.
//!
//! Each section parser declares its keys up front ([`Fields::new`]), so unknown keys are
//! found (and near misses suggested) before any value is read, then pulls typed values one
//! by one. The first problem wins; the order (unknown keys sorted, then fields in declaration
//! order) is fixed, so the same manifest always gets the same message.

use std::ops::RangeInclusive;

use serde_json::{Map, Value};

use super::error::{describe, suggest, ManifestError};

/// `path` joined with `key`: `RpcService` + `rpc_port` = `RpcService.rpc_port`.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Requires `v` to be an object.
pub(crate) fn as_object<'a>(path: &str, v: &'a Value) -> Result<&'a Map<String, Value>, ManifestError> {
    v.as_object().ok_or_else(|| wrong_type(path, "an object", v))
}

pub(crate) fn wrong_type(path: &str, expected: &str, found: &Value) -> ManifestError {
    ManifestError::WrongType { path: path.to_owned(), expected: expected.to_owned(), found: describe(found) }
}

/// Rejects the first (in sorted order) key of `map` that is not in `known`.
pub(crate) fn check_keys(path: &str, map: &Map<String, Value>, known: &[&str]) -> Result<(), ManifestError> {
    let mut unknown: Vec<&String> = map.keys().filter(|k| !known.contains(&k.as_str())).collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(k) => Err(ManifestError::UnknownKey {
            path: join(path, k),
            suggestion: suggest(k, known.iter().copied()),
        }),
    }
}

/// The keys of one section, read with defaults.
pub(crate) struct Fields<'a> {
    path: &'a str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Checks that `v` is an object whose keys are all in `known`.
    pub(crate) fn new(path: &'a str, v: &'a Value, known: &[&str]) -> Result<Self, ManifestError> {
        let map = as_object(path, v)?;
        check_keys(path, map, known)?;
        Ok(Fields { path, map })
    }

    fn get(&self, key: &str) -> Option<(String, &'a Value)> {
        self.map.get(key).map(|v| (join(self.path, key), v))
    }

    /// The full path of `key` in this section.
    pub(crate) fn path_of(&self, key: &str) -> String {
        join(self.path, key)
    }

    pub(crate) fn bool(&self, key: &str, default: bool) -> Result<bool, ManifestError> {
        match self.get(key) {
            None => Ok(default),
            Some((p, v)) => v.as_bool().ok_or_else(|| wrong_type(&p, "a boolean", v)),
        }
    }

    /// A string, or `None` when absent.
    pub(crate) fn opt_string(&self, key: &str) -> Result<Option<String>, ManifestError> {
        match self.get(key) {
            None => Ok(None),
            Some((p, v)) => {
                v.as_str().map(|s| Some(s.to_owned())).ok_or_else(|| wrong_type(&p, "a string", v))
            }
        }
    }

    pub(crate) fn string(&self, key: &str, default: &str) -> Result<String, ManifestError> {
        Ok(self.opt_string(key)?.unwrap_or_else(|| default.to_owned()))
    }

    /// An array of strings (an absent key gives an empty list).
    pub(crate) fn string_list(&self, key: &str) -> Result<Vec<String>, ManifestError> {
        let Some((p, v)) = self.get(key) else { return Ok(Vec::new()) };
        let arr = v.as_array().ok_or_else(|| wrong_type(&p, "an array of strings", v))?;
        arr.iter()
            .enumerate()
            .map(|(i, e)| {
                e.as_str().map(str::to_owned).ok_or_else(|| wrong_type(&format!("{p}[{i}]"), "a string", e))
            })
            .collect()
    }

    /// An integer in `range`. Non-integers (strings, `1.5`, `8015.0`) are `WrongType`;
    /// integers outside the range (including negative ones) are `OutOfRange`.
    pub(crate) fn uint(
        &self,
        key: &str,
        range: RangeInclusive<u64>,
        default: u64,
    ) -> Result<u64, ManifestError> {
        debug_assert!(range.contains(&default), "default {default} of {key} outside {range:?}");
        let Some((p, v)) = self.get(key) else { return Ok(default) };
        let expected = format!("an integer {}..={}", range.start(), range.end());
        let in_range = match v {
            Value::Number(n) if n.is_u64() => n.as_u64().filter(|x| range.contains(x)),
            Value::Number(n) if n.is_i64() => None, // negative
            _ => return Err(ManifestError::WrongType { path: p, expected, found: describe(v) }),
        };
        in_range.ok_or_else(|| ManifestError::OutOfRange { path: p, expected, found: describe(v) })
    }
}
