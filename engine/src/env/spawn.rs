//! The `Spawn` port: concurrent tasks on this node.

use futures::future::BoxFuture;

/// Starts tasks on the current node. Under the simulator a task belongs to the node that
/// spawned it: killing the node drops the task (as a process crash would).
pub trait Spawn: Send + Sync {
    /// Runs `fut` concurrently. The task keeps running when the handle is dropped;
    /// [`TaskHandle::abort`] cancels it at its next await point.
    fn spawn(&self, name: &str, fut: BoxFuture<'static, ()>) -> TaskHandle;
}

/// Cancels a spawned task on demand. Dropping the handle detaches the task.
pub struct TaskHandle {
    abort: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl TaskHandle {
    pub fn new(abort: impl FnOnce() + Send + Sync + 'static) -> Self {
        TaskHandle { abort: Some(Box::new(abort)) }
    }

    /// Cancels the task. Idempotent.
    pub fn abort(mut self) {
        if let Some(a) = self.abort.take() {
            a();
        }
    }

    /// Returns a guard that aborts the task when dropped (for tasks owned by a component).
    pub fn abort_on_drop(self) -> AbortOnDrop {
        AbortOnDrop(Some(self))
    }
}

impl std::fmt::Debug for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TaskHandle")
    }
}

/// Aborts its task when dropped.
#[derive(Debug)]
pub struct AbortOnDrop(Option<TaskHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
        }
    }
}
