//! A waker that counts its wake-ups, for tests of who wakes whom.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};

struct Count(AtomicUsize);

impl Wake for Count {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A [`Waker`] and the number of times it (or a clone of it) was woken.
pub struct CountingWaker {
    count: Arc<Count>,
    waker: Waker,
}

impl CountingWaker {
    pub fn new() -> CountingWaker {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        CountingWaker { waker: Waker::from(count.clone()), count }
    }

    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    /// Wake-ups so far.
    pub fn woken(&self) -> usize {
        self.count.0.load(Ordering::SeqCst)
    }
}

impl Default for CountingWaker {
    fn default() -> Self {
        CountingWaker::new()
    }
}
