//! The frame queue between a connection's users and its writer, bounded by a count.
//!
//! It is an unbounded channel plus a counter of queued frames, so that below the limit it
//! behaves (and wakes the writer) exactly as the unbounded channel it replaced, and at the
//! limit the *caller* decides what happens (see [`OUTBOX_FRAMES_MAX`](super::client::OUTBOX_FRAMES_MAX)
//! and [`REPLY_QUEUE_MAX`](super::server::REPLY_QUEUE_MAX)).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::channel::mpsc;
use futures::StreamExt;

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushError {
    /// `max` frames are queued already.
    Full,
    /// The writer is gone (the connection ended).
    Closed,
}

/// A new queue holding at most `max` frames.
pub(super) fn outbox(max: usize) -> (OutboxTx, OutboxRx) {
    assert!(max > 0, "an outbox must hold at least one frame");
    let (tx, rx) = mpsc::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    (OutboxTx { tx, queued: queued.clone(), max }, OutboxRx { rx, queued })
}

/// The sending side; cheap to clone (clones share the bound).
#[derive(Clone)]
pub(super) struct OutboxTx {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    max: usize,
}

impl OutboxTx {
    /// Queues `frame` unless `max` frames are waiting or the writer is gone.
    pub(super) fn push(&self, frame: Bytes) -> Result<(), PushError> {
        if self.tx.is_closed() {
            return Err(PushError::Closed);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(PushError::Full);
        }
        self.tx.unbounded_send(frame).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            PushError::Closed
        })
    }

    /// Ends the queue: the writer drains what is queued, then sees the end.
    pub(super) fn close(&self) {
        self.tx.close_channel();
    }
}

/// The writer's side.
pub(super) struct OutboxRx {
    rx: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

impl OutboxRx {
    /// The next frame; `None` once every sender is gone or the queue was closed and drained.
    pub(super) async fn next(&mut self) -> Option<Bytes> {
        let frame = self.rx.next().await;
        if frame.is_some() {
            let before = self.queued.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "a frame was taken that was never counted");
        }
        frame
    }

    /// The next frame if one is queued now; never waits (a writer batching what is ready).
    pub(super) fn try_next(&mut self) -> Option<Bytes> {
        let frame = self.rx.try_recv().ok();
        if frame.is_some() {
            let before = self.queued.fetch_sub(1, Ordering::AcqRel);
            debug_assert!(before > 0, "a frame was taken that was never counted");
        }
        frame
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
}
