//! The `Spawn` port on madsim tasks: tasks belong to the node that spawns them.

use engine::env::{Spawn, TaskHandle};
use futures::future::BoxFuture;

#[derive(Clone, Copy, Debug, Default)]
pub struct SimSpawn;

impl Spawn for SimSpawn {
    fn spawn(&self, _name: &str, fut: BoxFuture<'static, ()>) -> TaskHandle {
        let handle = madsim::task::spawn(fut);
        let abort = handle.abort_handle();
        TaskHandle::new(move || abort.abort())
    }
}
