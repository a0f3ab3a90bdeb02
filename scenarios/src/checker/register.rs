//! The register model: keyed registers with read, write and compare-and-set.
//!
//! Every key is an independent register that starts absent (`None`).
//! - `Read` returns the current value;
//! - `Write(v)` sets it to `Some(v)`;
//! - `Cas { expected, new }` sets it to `Some(new)` iff the current value equals `expected`
//!   (`None` = "absent"), and returns whether it did. A `Cas(false)` result is a constraint
//!   too: at its linearization point the current value differed from `expected`.
//!
//! For the search, values are interned per key to small integers so that the
//! model state is a `u32` and steps never allocate.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::linearizable::Model;

/// An operation on one register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterOp {
    Read,
    Write(String),
    Cas { expected: Option<String>, new: String },
}

/// The result of a [`RegisterOp`] that completed `Ok`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegisterResult {
    Read(Option<String>),
    Written,
    Cas(bool),
}

/// A register operation on a named key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedOp {
    pub key: String,
    pub op: RegisterOp,
}

impl KeyedOp {
    pub fn read(key: impl Into<String>) -> Self {
        KeyedOp { key: key.into(), op: RegisterOp::Read }
    }
    pub fn write(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyedOp { key: key.into(), op: RegisterOp::Write(value.into()) }
    }
    pub fn cas(key: impl Into<String>, expected: Option<&str>, new: impl Into<String>) -> Self {
        KeyedOp {
            key: key.into(),
            op: RegisterOp::Cas { expected: expected.map(str::to_string), new: new.into() },
        }
    }
}

impl RegisterOp {
    /// Whether `result` is the right kind of result for this operation.
    pub fn accepts(&self, result: &RegisterResult) -> bool {
        matches!(
            (self, result),
            (RegisterOp::Read, RegisterResult::Read(_))
                | (RegisterOp::Write(_), RegisterResult::Written)
                | (RegisterOp::Cas { .. }, RegisterResult::Cas(_))
        )
    }
}

/// Renders an optional register value: `absent` or the quoted string.
pub(crate) struct ShowValue<'a>(pub Option<&'a str>);

impl fmt::Display for ShowValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("absent"),
            Some(v) => write!(f, "{v:?}"),
        }
    }
}

impl fmt::Display for RegisterOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterOp::Read => f.write_str("read"),
            RegisterOp::Write(v) => write!(f, "write {v:?}"),
            RegisterOp::Cas { expected, new } => {
                write!(f, "cas {} -> {new:?}", ShowValue(expected.as_deref()))
            }
        }
    }
}

impl fmt::Display for RegisterResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterResult::Read(v) => write!(f, "{}", ShowValue(v.as_deref())),
            RegisterResult::Written => f.write_str("ok"),
            RegisterResult::Cas(true) => f.write_str("true"),
            RegisterResult::Cas(false) => f.write_str("false"),
        }
    }
}

/// Interned register value: 0 = absent, `n > 0` = the `n`-th distinct string of this key.
pub(crate) type Val = u32;

/// Per-key string interner (deterministic: ids are assigned in first-seen order).
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: BTreeMap<String, Val>,
    names: Vec<String>,
}

impl Interner {
    pub(crate) fn intern(&mut self, v: Option<&str>) -> Val {
        let Some(v) = v else { return 0 };
        if let Some(&id) = self.ids.get(v) {
            return id;
        }
        self.names.push(v.to_string());
        let id = Val::try_from(self.names.len()).expect("more than u32::MAX distinct values");
        self.ids.insert(v.to_string(), id);
        id
    }

    pub(crate) fn name(&self, v: Val) -> Option<&str> {
        if v == 0 {
            None
        } else {
            Some(self.names[v as usize - 1].as_str())
        }
    }
}

/// A register operation with interned values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IOp {
    Read,
    Write(Val),
    Cas { expected: Val, new: Val },
}

/// A register result with interned values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IRes {
    Read(Val),
    Written,
    Cas(bool),
}

impl IOp {
    pub(crate) fn intern(op: &RegisterOp, i: &mut Interner) -> IOp {
        match op {
            RegisterOp::Read => IOp::Read,
            RegisterOp::Write(v) => IOp::Write(i.intern(Some(v))),
            RegisterOp::Cas { expected, new } => {
                IOp::Cas { expected: i.intern(expected.as_deref()), new: i.intern(Some(new)) }
            }
        }
    }
}

impl IRes {
    pub(crate) fn intern(r: &RegisterResult, i: &mut Interner) -> IRes {
        match r {
            RegisterResult::Read(v) => IRes::Read(i.intern(v.as_deref())),
            RegisterResult::Written => IRes::Written,
            RegisterResult::Cas(b) => IRes::Cas(*b),
        }
    }
}

/// The sequential specification of one register, over interned values.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RegisterModel;

impl Model for RegisterModel {
    type Op = IOp;
    type Result = IRes;
    type State = Val;

    fn init(&self) -> Val {
        0
    }

    fn step(&self, state: &Val, op: &IOp, result: Option<&IRes>) -> Option<Val> {
        let s = *state;
        match (op, result) {
            (IOp::Read, Some(IRes::Read(v))) => (*v == s).then_some(s),
            // An unknown read constrains nothing; callers drop them, but stay total.
            (IOp::Read, None) => Some(s),
            (IOp::Write(v), Some(IRes::Written) | None) => Some(*v),
            (IOp::Cas { expected, new }, Some(IRes::Cas(true))) => (s == *expected).then_some(*new),
            (IOp::Cas { expected, .. }, Some(IRes::Cas(false))) => (s != *expected).then_some(s),
            (IOp::Cas { expected, new }, None) => Some(if s == *expected { *new } else { s }),
            // Result of the wrong kind: never consistent (the checker reports these upfront).
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_semantics() {
        let m = RegisterModel;
        let s0 = m.init();
        assert_eq!(m.step(&s0, &IOp::Read, Some(&IRes::Read(0))), Some(0));
        assert_eq!(m.step(&s0, &IOp::Read, Some(&IRes::Read(1))), None);
        assert_eq!(m.step(&s0, &IOp::Write(1), Some(&IRes::Written)), Some(1));
        assert_eq!(m.step(&1, &IOp::Cas { expected: 1, new: 2 }, Some(&IRes::Cas(true))), Some(2));
        assert_eq!(m.step(&1, &IOp::Cas { expected: 0, new: 2 }, Some(&IRes::Cas(true))), None);
        assert_eq!(m.step(&1, &IOp::Cas { expected: 0, new: 2 }, Some(&IRes::Cas(false))), Some(1));
        assert_eq!(m.step(&1, &IOp::Cas { expected: 1, new: 2 }, Some(&IRes::Cas(false))), None);
        assert_eq!(m.step(&1, &IOp::Cas { expected: 1, new: 2 }, None), Some(2));
        assert_eq!(m.step(&3, &IOp::Cas { expected: 1, new: 2 }, None), Some(3));
        assert_eq!(m.step(&0, &IOp::Write(1), Some(&IRes::Cas(true))), None);
    }

    #[test]
    fn interner_is_first_seen_order() {
        let mut i = Interner::default();
        assert_eq!(i.intern(None), 0);
        assert_eq!(i.intern(Some("b")), 1);
        assert_eq!(i.intern(Some("a")), 2);
        assert_eq!(i.intern(Some("b")), 1);
        assert_eq!(i.name(0), None);
        assert_eq!(i.name(2), Some("a"));
    }

    #[test]
    fn display() {
        assert_eq!(RegisterOp::Write("x".into()).to_string(), "write \"x\"");
        assert_eq!(RegisterOp::Cas { expected: None, new: "y".into() }.to_string(), "cas absent -> \"y\"");
        assert_eq!(RegisterResult::Read(None).to_string(), "absent");
        assert_eq!(RegisterResult::Cas(false).to_string(), "false");
        assert!(RegisterOp::Read.accepts(&RegisterResult::Read(None)));
        assert!(!RegisterOp::Read.accepts(&RegisterResult::Written));
    }
}
