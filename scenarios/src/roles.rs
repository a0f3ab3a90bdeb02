//! What scenarios need to answer [`ScenarioRun::role`](crate::scenario::ScenarioRun::role):
//! which node a server incarnation runs on, and which incarnation acted last.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::history::ProcessId;
use crate::scenario::ServerCtx;

/// Server incarnations (process ids) by the node they run on, and the one that reported the
/// latest act. Shared by every node of a run.
#[derive(Clone, Default)]
pub struct LatestActor(Arc<Mutex<Inner>>);

#[derive(Default)]
struct Inner {
    nodes: BTreeMap<ProcessId, String>,
    latest: Option<ProcessId>,
}

impl LatestActor {
    /// Notes a server incarnation starting (call from [`ScenarioRun::server`](crate::scenario::ScenarioRun::server)).
    pub fn started(&self, ctx: &ServerCtx) {
        self.started_on(ctx.process, &ctx.spec.name);
    }

    /// Notes server incarnation `server` starting on `node`.
    pub fn started_on(&self, server: ProcessId, node: &str) {
        engine::env::lock(&self.0).nodes.insert(server, node.to_string());
    }

    /// Notes that server incarnation `server` acted just now.
    pub fn acted(&self, server: ProcessId) {
        engine::env::lock(&self.0).latest = Some(server);
    }

    /// The node of the incarnation that acted last, if it is known.
    pub fn node(&self) -> Option<String> {
        let latest = engine::env::lock(&self.0).latest;
        latest.and_then(|p| self.node_of(p))
    }

    /// The node server incarnation `server` runs on, if it started here.
    pub fn node_of(&self, server: ProcessId) -> Option<String> {
        engine::env::lock(&self.0).nodes.get(&server).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_actor_is_named_by_its_node_once_it_started() {
        let a = LatestActor::default();
        assert_eq!(a.node(), None);
        a.acted(7);
        assert_eq!(a.node(), None, "an incarnation not started here has no node");
        engine::env::lock(&a.0).nodes.insert(7, "game-1".into());
        engine::env::lock(&a.0).nodes.insert(9, "game-2".into());
        assert_eq!(a.node().as_deref(), Some("game-1"));
        a.acted(9);
        assert_eq!(a.node().as_deref(), Some("game-2"));
    }
}
