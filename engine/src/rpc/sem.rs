//! A small async counting semaphore (the engine has no runtime to borrow one from).
//!
//! Waiters are served first come, first served. A permit handed to a waiter that gave up in
//! the meantime comes back (dropping the unreceived permit releases it), so none leaks.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;

use super::lock;

#[derive(Debug)]
struct State {
    available: usize,
    waiters: VecDeque<oneshot::Sender<Permit>>,
}

#[derive(Clone, Debug)]
pub struct Semaphore {
    state: Arc<Mutex<State>>,
}

/// Held while a handler runs; dropping it lets the next waiter in.
#[derive(Debug)]
pub struct Permit {
    sem: Option<Semaphore>,
}

impl Semaphore {
    pub fn new(permits: usize) -> Self {
        Semaphore { state: Arc::new(Mutex::new(State { available: permits, waiters: VecDeque::new() })) }
    }

    pub async fn acquire(&self) -> Permit {
        let rx = {
            let mut st = lock(&self.state);
            if st.available > 0 && st.waiters.is_empty() {
                st.available -= 1;
                return Permit { sem: Some(self.clone()) };
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.push_back(tx);
            rx
        };
        match rx.await {
            Ok(p) => p,
            // The semaphore is never dropped while a waiter's future is alive (the waiter
            // holds a clone), so the sender is never dropped unsent.
            Err(oneshot::Canceled) => unreachable!("semaphore waiter dropped unserved"),
        }
    }

    fn release(&self) {
        loop {
            let next = {
                let mut st = lock(&self.state);
                match st.waiters.pop_front() {
                    Some(w) => w,
                    None => {
                        st.available += 1;
                        return;
                    }
                }
            };
            match next.send(Permit { sem: Some(self.clone()) }) {
                Ok(()) => return,
                // That waiter is gone: defuse the permit and try the next one.
                Err(mut p) => p.sem = None,
            }
        }
    }

    #[cfg(test)]
    fn available(&self) -> usize {
        lock(&self.state).available
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(s) = self.sem.take() {
            s.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn permits_are_bounded_and_come_back() {
        let s = Semaphore::new(2);
        let a = s.acquire().now_or_never().expect("free");
        let b = s.acquire().now_or_never().expect("free");
        let mut c = Box::pin(s.acquire());
        assert!(c.as_mut().now_or_never().is_none());
        drop(a);
        let c = c.now_or_never().expect("handed over");
        assert_eq!(s.available(), 0);
        drop((b, c));
        assert_eq!(s.available(), 2);
    }

    #[test]
    fn a_waiter_that_gave_up_does_not_leak_its_permit() {
        let s = Semaphore::new(1);
        let a = s.acquire().now_or_never().expect("free");
        let mut w = Box::pin(s.acquire());
        assert!(w.as_mut().now_or_never().is_none());
        drop(w);
        drop(a);
        assert_eq!(s.available(), 1);
    }
}
