//! [`Executor`]: a deterministic single-threaded executor implementing the `Spawn` port.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::task::Context;

use futures::future::BoxFuture;
use futures::task::ArcWake;

use crate::env::{lock, Spawn, TaskHandle};

/// Most polls one [`Executor::run_until_stalled`] makes: a test that needs more has a busy loop.
pub const POLLS_PER_RUN_MAX: usize = 100_000;

/// Runs spawned tasks on the test's own thread, in FIFO wake order, only when the test calls
/// [`run_until_stalled`](Executor::run_until_stalled): no threads, no runtime, the same
/// order on every run. Clones share one task set; [`Executor::spawner`] is the `Spawn` port.
#[derive(Clone, Default)]
pub struct Executor {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    tasks: Mutex<BTreeMap<u64, BoxFuture<'static, ()>>>,
    ready: Arc<Mutex<VecDeque<u64>>>,
    aborted: Mutex<BTreeSet<u64>>,
    last_task: Mutex<u64>,
}

struct TaskWaker {
    task: u64,
    ready: Arc<Mutex<VecDeque<u64>>>,
}

impl ArcWake for TaskWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        lock(&arc_self.ready).push_back(arc_self.task);
    }
}

impl Executor {
    pub fn new() -> Self {
        Executor::default()
    }

    /// The `Spawn` port of this executor.
    pub fn spawner(&self) -> Arc<dyn Spawn> {
        Arc::new(ExecSpawn(Arc::downgrade(&self.inner)))
    }

    /// Polls woken tasks until none is left to poll; returns how many polls it made.
    ///
    /// # Panics
    /// After [`POLLS_PER_RUN_MAX`] polls (a task that wakes itself forever).
    pub fn run_until_stalled(&self) -> usize {
        let inner = &self.inner;
        for polls in 0..POLLS_PER_RUN_MAX {
            let Some(task) = lock(&inner.ready).pop_front() else { return polls };
            if lock(&inner.aborted).contains(&task) {
                continue;
            }
            let Some(mut fut) = lock(&inner.tasks).remove(&task) else { continue };
            let waker = futures::task::waker(Arc::new(TaskWaker { task, ready: inner.ready.clone() }));
            let done = fut.as_mut().poll(&mut Context::from_waker(&waker)).is_ready();
            if !done && !lock(&inner.aborted).contains(&task) {
                lock(&inner.tasks).insert(task, fut);
            }
        }
        panic!("executor still busy after {POLLS_PER_RUN_MAX} polls");
    }

    /// Tasks spawned and neither finished nor aborted.
    pub fn live_tasks(&self) -> usize {
        lock(&self.inner.tasks).len()
    }
}

struct ExecSpawn(Weak<Inner>);

impl Spawn for ExecSpawn {
    fn spawn(&self, _name: &str, fut: BoxFuture<'static, ()>) -> TaskHandle {
        let Some(inner) = self.0.upgrade() else {
            // The executor is gone: the task could never run.
            return TaskHandle::new(|| {});
        };
        let task = {
            let mut last = lock(&inner.last_task);
            *last += 1;
            *last
        };
        lock(&inner.tasks).insert(task, fut);
        lock(&inner.ready).push_back(task);
        let exec = Arc::downgrade(&inner);
        TaskHandle::new(move || {
            if let Some(exec) = exec.upgrade() {
                lock(&exec.aborted).insert(task);
                let fut = lock(&exec.tasks).remove(&task);
                drop(fut); // outside the lock: dropping may abort or wake other tasks
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::oneshot;
    use futures::FutureExt;

    #[test]
    fn tasks_run_in_spawn_order_and_only_when_asked() {
        let exec = Executor::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            let log = log.clone();
            exec.spawner().spawn("t", async move { lock(&log).push(i) }.boxed());
        }
        assert!(lock(&log).is_empty());
        exec.run_until_stalled();
        assert_eq!(*lock(&log), [0, 1, 2]);
        assert_eq!(exec.live_tasks(), 0);
    }

    #[test]
    fn an_aborted_task_never_runs_again() {
        let exec = Executor::new();
        let (tx, rx) = oneshot::channel::<()>();
        let ran = Arc::new(Mutex::new(false));
        let ran2 = ran.clone();
        let h = exec.spawner().spawn(
            "t",
            async move {
                let _ = rx.await;
                *lock(&ran2) = true;
            }
            .boxed(),
        );
        exec.run_until_stalled();
        assert_eq!(exec.live_tasks(), 1);
        h.abort();
        let _ = tx.send(());
        exec.run_until_stalled();
        assert!(!*lock(&ran));
        assert_eq!(exec.live_tasks(), 0);
    }
}
