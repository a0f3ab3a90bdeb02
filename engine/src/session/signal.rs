//! [`Signal`]: a one-shot event any number of tasks can wait for, in one small allocation.
//!
//! Every session has three (closed, abort, done), so their cost is per-session memory. The
//! obvious construction from `futures` (a `oneshot` channel behind `Shared`) takes three
//! allocations per signal (the channel, `Shared`'s state and its notifier) plus a boxed
//! future per wait; this one takes one `Arc` per signal and a small vector of waiters while
//! someone waits. `engine` runs on neither tokio nor madsim, so `tokio::sync::Notify` is not
//! an option.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::env::lock;

#[derive(Default)]
struct State {
    fired: bool,
    /// One slot per live [`Wait`] that was polled while the signal was not fired; a dropped
    /// `Wait` frees its slot for the next.
    waiters: Vec<Option<Waker>>,
}

/// A one-shot event: [`fire`](Signal::fire) completes every [`wait`](Signal::wait), those
/// made before and after it. Dropping the signal fires it, so that no wait outlives its
/// signal pending forever (as a `oneshot` receiver completes when its sender is dropped).
pub(super) struct Signal {
    state: Arc<Mutex<State>>,
}

impl Signal {
    pub(super) fn new() -> Self {
        Signal { state: Arc::new(Mutex::new(State::default())) }
    }

    /// Fires the signal (idempotent) and wakes every waiter.
    pub(super) fn fire(&self) {
        let wakers = {
            let mut s = lock(&self.state);
            if s.fired {
                return;
            }
            s.fired = true;
            std::mem::take(&mut s.waiters)
        };
        for w in wakers.into_iter().flatten() {
            w.wake();
        }
    }

    /// Completes once fired.
    pub(super) fn wait(&self) -> Wait {
        Wait { state: self.state.clone(), slot: None }
    }
}

impl Drop for Signal {
    fn drop(&mut self) {
        self.fire();
    }
}

/// The future of [`Signal::wait`].
pub(super) struct Wait {
    state: Arc<Mutex<State>>,
    /// This wait's slot in `waiters`, once it has registered.
    slot: Option<usize>,
}

impl Future for Wait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut s = lock(&this.state);
        if s.fired {
            this.slot = None;
            return Poll::Ready(());
        }
        match this.slot.and_then(|i| s.waiters.get_mut(i)) {
            Some(Some(w)) if w.will_wake(cx.waker()) => {}
            Some(slot) => *slot = Some(cx.waker().clone()),
            None => {
                let free = s.waiters.iter().position(Option::is_none);
                let i = match free {
                    Some(i) => i,
                    None => {
                        s.waiters.push(None);
                        s.waiters.len() - 1
                    }
                };
                s.waiters[i] = Some(cx.waker().clone());
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            let mut s = lock(&self.state);
            if let Some(slot) = s.waiters.get_mut(i) {
                *slot = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::task::noop_waker_ref;
    use futures::FutureExt;

    fn poll(w: &mut Wait) -> Poll<()> {
        w.poll_unpin(&mut Context::from_waker(noop_waker_ref()))
    }

    #[test]
    fn every_wait_completes_once_fired_including_waits_made_after() {
        let s = Signal::new();
        let (mut a, mut b) = (s.wait(), s.wait());
        assert!(poll(&mut a).is_pending());
        assert!(poll(&mut b).is_pending());
        s.fire();
        s.fire();
        assert!(poll(&mut a).is_ready());
        assert!(poll(&mut b).is_ready());
        assert!(poll(&mut s.wait()).is_ready());
    }

    #[test]
    fn dropped_waits_give_their_slots_to_later_ones() {
        let s = Signal::new();
        for _ in 0..100 {
            let mut w = s.wait();
            assert!(poll(&mut w).is_pending());
            assert!(poll(&mut w).is_pending(), "a repeated poll reuses the slot");
        }
        assert_eq!(lock(&s.state).waiters.len(), 1);
    }

    #[test]
    fn dropping_the_signal_completes_its_waits() {
        let s = Signal::new();
        let mut w = s.wait();
        assert!(poll(&mut w).is_pending());
        drop(s);
        assert!(poll(&mut w).is_ready());
    }

    #[test]
    fn firing_wakes_a_pending_waiter_once() {
        struct Count(std::sync::atomic::AtomicUsize);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(me: &Arc<Self>) {
                me.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let count = Arc::new(Count(Default::default()));
        let waker = futures::task::waker(count.clone());
        let s = Signal::new();
        let mut w = s.wait();
        assert!(w.poll_unpin(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 0);
        s.fire();
        s.fire();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(w.poll_unpin(&mut Context::from_waker(&waker)).is_ready());
    }
}
