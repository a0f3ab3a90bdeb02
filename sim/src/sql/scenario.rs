//! SQL instances of a scenario's topology as the runner names them (`db-0..db-{N-1}`,
//! [`scenarios::Topology::sql_name`]): the `Db` directory every node of a run gets.

use std::sync::Arc;

use engine::env::Env;
use scenarios::Topology;

use super::{sql_addr, SimDb, DB_CALL_TIMEOUT};

/// `env` with a `Db` directory of the topology's SQL instances `db-0..db-{count-1}` (a
/// [`SimDb`] client of each node at [`sql_addr`]); `env` unchanged when `count` is 0. Clients
/// connect lazily, so a node that never calls one sends nothing.
pub fn with_sql(mut env: Env, count: usize) -> Env {
    if count == 0 {
        return env;
    }
    let dir = (0..count).fold(engine::env::DbInstances::empty(), |dir, i| {
        let db = SimDb::new(
            Topology::sql_name(i),
            env.net.clone(),
            env.clock.clone(),
            env.spawn.clone(),
            sql_addr(i),
            DB_CALL_TIMEOUT,
        );
        dir.with(Arc::new(db)).expect("instance names are distinct")
    });
    env.db = Arc::new(dir);
    env
}
