//! The `Spawn` port on `tokio::spawn`.

use engine::env::{Spawn, TaskHandle};
use futures::future::BoxFuture;

#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSpawn;

impl Spawn for TokioSpawn {
    fn spawn(&self, _name: &str, fut: BoxFuture<'static, ()>) -> TaskHandle {
        let h = tokio::spawn(fut);
        let abort = h.abort_handle();
        TaskHandle::new(move || abort.abort())
    }
}
