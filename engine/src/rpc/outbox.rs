//! The frame queue between a connection's users and its writer, bounded by a count.
//!
//! A `VecDeque` under a mutex with the writer's waker: a push wakes the writer if it waits,
//! and at the limit the *caller* decides what happens (see
//! [`OUTBOX_FRAMES_MAX`](super::client::OUTBOX_FRAMES_MAX) and
//! [`REPLY_QUEUE_MAX`](super::server::REPLY_QUEUE_MAX)). The writer sees the end once the queue
//! is closed (or every sender is gone) and drained.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use bytes::Bytes;

use super::lock;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushError {
    /// `max` frames are queued already.
    Full,
    /// The writer is gone (the connection ended).
    Closed,
}

struct State {
    queue: VecDeque<Bytes>,
    /// Closed by a sender, or the writer is gone: nothing more is queued.
    closed: bool,
    /// Live `OutboxTx` handles.
    senders: usize,
    /// The writer, waiting for a frame.
    writer: Option<Waker>,
}

/// A new queue holding at most `max` frames.
pub(super) fn outbox(max: usize) -> (OutboxTx, OutboxRx) {
    assert!(max > 0, "an outbox must hold at least one frame");
    let st = Arc::new(Mutex::new(State { queue: VecDeque::new(), closed: false, senders: 1, writer: None }));
    (OutboxTx { st: st.clone(), max }, OutboxRx { st })
}

/// The sending side; clones share the queue and its bound.
pub(super) struct OutboxTx {
    st: Arc<Mutex<State>>,
    max: usize,
}

impl Clone for OutboxTx {
    fn clone(&self) -> Self {
        lock(&self.st).senders += 1;
        OutboxTx { st: self.st.clone(), max: self.max }
    }
}

impl Drop for OutboxTx {
    fn drop(&mut self) {
        let waker = {
            let mut st = lock(&self.st);
            st.senders -= 1;
            if st.senders == 0 {
                st.writer.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl OutboxTx {
    /// Queues `frame` unless `max` frames are waiting or the queue is closed.
    pub(super) fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let waker = {
            let mut st = lock(&self.st);
            if st.closed {
                return Err(PushError::Closed);
            }
            if st.queue.len() >= self.max {
                return Err(PushError::Full);
            }
            st.queue.push_back(frame);
            st.writer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Ends the queue: the writer drains what is queued, then sees the end.
    pub(super) fn close(&self) {
        let waker = {
            let mut st = lock(&self.st);
            st.closed = true;
            st.writer.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// The writer's side. Dropping it closes the queue and drops what is queued.
pub(super) struct OutboxRx {
    st: Arc<Mutex<State>>,
}

impl OutboxRx {
    /// The next frame; `None` once the queue was closed (or every sender is gone) and drained.
    pub(super) async fn next(&mut self) -> Option<Bytes> {
        poll_fn(|cx| {
            let mut st = lock(&self.st);
            if let Some(f) = st.queue.pop_front() {
                return Poll::Ready(Some(f));
            }
            if st.closed || st.senders == 0 {
                return Poll::Ready(None);
            }
            st.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// The next frame if one is queued now; never waits (a writer batching what is ready).
    pub(super) fn try_next(&mut self) -> Option<Bytes> {
        lock(&self.st).queue.pop_front()
    }
}

impl Drop for OutboxRx {
    fn drop(&mut self) {
        let mut st = lock(&self.st);
        st.closed = true;
        st.queue.clear();
        st.writer = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn the_queue_refuses_a_frame_beyond_its_bound_and_frees_room_as_the_writer_drains() {
        let (tx, mut rx) = outbox(2);
        assert_eq!(tx.push(Bytes::from_static(b"1")), Ok(()));
        assert_eq!(tx.clone().push(Bytes::from_static(b"2")), Ok(()), "clones share the bound");
        assert_eq!(tx.push(Bytes::from_static(b"3")), Err(PushError::Full));
        assert_eq!(rx.next().now_or_never(), Some(Some(Bytes::from_static(b"1"))));
        assert_eq!(tx.push(Bytes::from_static(b"3")), Ok(()));
        tx.close();
        assert_eq!(tx.push(Bytes::from_static(b"4")), Err(PushError::Closed));
        assert_eq!(rx.next().now_or_never(), Some(Some(Bytes::from_static(b"2"))));
        assert_eq!(rx.next().now_or_never(), Some(Some(Bytes::from_static(b"3"))));
        assert_eq!(rx.next().now_or_never(), Some(None));
    }

    #[test]
    fn taking_what_is_ready_never_waits_and_frees_room_like_next() {
        let (tx, mut rx) = outbox(1);
        assert_eq!(rx.try_next(), None, "nothing queued: no frame, no wait");
        assert_eq!(tx.push(Bytes::from_static(b"1")), Ok(()));
        assert_eq!(tx.push(Bytes::from_static(b"2")), Err(PushError::Full));
        assert_eq!(rx.try_next(), Some(Bytes::from_static(b"1")));
        assert_eq!(tx.push(Bytes::from_static(b"2")), Ok(()), "the frame taken freed its room");
        tx.close();
        assert_eq!(rx.try_next(), Some(Bytes::from_static(b"2")));
        assert_eq!(rx.try_next(), None);
    }

    #[test]
    fn the_writer_waits_until_a_push_wakes_it_and_sees_the_end_once_every_sender_is_gone() {
        let (tx, mut rx) = outbox(4);
        let tx2 = tx.clone();
        let mut next = Box::pin(rx.next());
        assert_eq!(next.as_mut().now_or_never(), None, "nothing queued: the writer waits");
        drop(next);
        let count = crate::testing::CountingWaker::new();
        let mut cx = std::task::Context::from_waker(count.waker());
        let mut next = Box::pin(rx.next());
        assert!(next.as_mut().poll_unpin(&mut cx).is_pending());
        assert_eq!(tx2.push(Bytes::from_static(b"1")), Ok(()));
        assert_eq!(count.woken(), 1, "the push woke the writer");
        assert_eq!(next.as_mut().poll_unpin(&mut cx), Poll::Ready(Some(Bytes::from_static(b"1"))));
        drop(next);
        drop(tx);
        assert_eq!(rx.next().now_or_never(), None, "one sender is left: still waiting");
        assert_eq!(tx2.push(Bytes::from_static(b"2")), Ok(()));
        drop(tx2);
        assert_eq!(rx.next().now_or_never(), Some(Some(Bytes::from_static(b"2"))), "drained first");
        assert_eq!(rx.next().now_or_never(), Some(None), "then the end");
    }

    #[test]
    fn a_push_after_the_writer_is_gone_is_refused_as_closed() {
        let (tx, rx) = outbox(4);
        drop(rx);
        assert_eq!(tx.push(Bytes::from_static(b"1")), Err(PushError::Closed));
    }
}
