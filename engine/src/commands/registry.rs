//! A game's command set: each command's name, format check and effect on the user's state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::orm::Model;

/// One command of a game (e.g. `build {building, cost}`), as it arrives in a pack:
/// `{"op": NAME, ...fields}`. Deserialized from that object (the `op` field is ignored by a
/// struct that does not declare it).
pub trait Command<S>: DeserializeOwned + Send + 'static {
    /// The `op` naming it: `[a-z][a-z0-9_]*`.
    const NAME: &'static str;
    /// Format checks that need no state (ranges, lengths), run at submit: a pack with a
    /// command failing them is malformed and never stored.
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// Applies the command to the user's state. An `Err` is a *logical* error (not enough
    /// gold, no such building): the whole pack fails and changes nothing.
    fn apply(&self, state: &mut S) -> Result<(), String>;
}

type ValidateFn = fn(&Value) -> Result<(), String>;
type ApplyFn<S> = fn(&Value, &mut S) -> Result<(), String>;

struct Entry<S> {
    realtime: bool,
    validate: ValidateFn,
    apply: ApplyFn<S>,
}

impl<S> Clone for Entry<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for Entry<S> {}

fn validate_as<S, C: Command<S>>(v: &Value) -> Result<(), String> {
    C::deserialize(v).map_err(|e| e.to_string())?.validate()
}

fn apply_as<S, C: Command<S>>(v: &Value, state: &mut S) -> Result<(), String> {
    C::deserialize(v).map_err(|e| e.to_string())?.apply(state)
}

/// The commands of one game over its per-user state model `S` (an object-store model keyed
/// by the user id, in the user's shard): queued ones (sent in packs) and real-time ones.
pub struct CommandSet<S: Model> {
    initial: Arc<dyn Fn(&str) -> S + Send + Sync>,
    commands: BTreeMap<&'static str, Entry<S>>,
}

impl<S: Model> Clone for CommandSet<S> {
    fn clone(&self) -> Self {
        CommandSet { initial: self.initial.clone(), commands: self.commands.clone() }
    }
}

impl<S: Model> std::fmt::Debug for CommandSet<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandSet").field("model", &S::MODEL).field("commands", &self.names()).finish()
    }
}

impl<S: Model> CommandSet<S> {
    /// A set with no commands; `initial(user)` is a new user's state.
    pub fn new(initial: impl Fn(&str) -> S + Send + Sync + 'static) -> CommandSet<S> {
        CommandSet { initial: Arc::new(initial), commands: BTreeMap::new() }
    }

    /// Registers `C` as a command sent in packs (queued, executed later in pack order).
    pub fn queued<C: Command<S>>(self) -> CommandSet<S> {
        self.register::<C>(false)
    }

    /// Registers `C` as a real-time command: applied at once, never in a pack.
    pub fn realtime<C: Command<S>>(self) -> CommandSet<S> {
        self.register::<C>(true)
    }

    fn register<C: Command<S>>(mut self, realtime: bool) -> CommandSet<S> {
        assert!(valid_op(C::NAME), "command name {:?} must be [a-z][a-z0-9_]*", C::NAME);
        let entry = Entry { realtime, validate: validate_as::<S, C>, apply: apply_as::<S, C> };
        assert!(self.commands.insert(C::NAME, entry).is_none(), "command {:?} registered twice", C::NAME);
        self
    }

    /// The registered command names (sorted).
    pub fn names(&self) -> Vec<&'static str> {
        self.commands.keys().copied().collect()
    }

    /// A new user's state.
    pub fn initial(&self, user: &str) -> S {
        (self.initial)(user)
    }

    /// Checks one command's format: its `op` is a registered command of the kind asked for
    /// (`realtime` or queued) and its fields pass [`Command::validate`].
    pub fn check(&self, command: &Value, realtime: bool) -> Result<(), String> {
        let op = command_op(command)?;
        match self.commands.get(op) {
            None => Err(format!("unknown command {op:?}")),
            Some(e) if e.realtime != realtime => Err(format!(
                "command {op:?} is {}",
                if e.realtime { "real-time: send it on its own, not in a pack" } else { "not real-time" }
            )),
            Some(e) => (e.validate)(command),
        }
    }

    /// Applies one (checked) command to `state`; `Err` is a logical error.
    pub fn apply(&self, command: &Value, state: &mut S) -> Result<(), String> {
        let op = command_op(command)?;
        let entry = self.commands.get(op).ok_or_else(|| format!("unknown command {op:?}"))?;
        (entry.apply)(command, state)
    }

    /// Applies a pack's commands in order to a copy of `state`: the new state, or the index
    /// and reason of the first command that failed (then nothing of the pack applies).
    pub fn apply_all(&self, commands: &[Value], state: &S) -> Result<S, (usize, String)>
    where
        S: Clone,
    {
        let mut next = state.clone();
        for (i, c) in commands.iter().enumerate() {
            self.apply(c, &mut next).map_err(|why| (i, why))?;
        }
        Ok(next)
    }
}

/// A command's `op` field.
fn command_op(command: &Value) -> Result<&str, String> {
    match command.get("op") {
        Some(Value::String(op)) => Ok(op),
        Some(_) => Err("op is not a string".into()),
        None if command.is_object() => Err("no op field".into()),
        None => Err("a command is a JSON object".into()),
    }
}

fn valid_op(op: &str) -> bool {
    let mut chars = op.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && op.len() <= 32
}
