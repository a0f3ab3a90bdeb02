//! What a hosted player's game code sends the client, on its way from the backend to the
//! gate: numbered, and carried either in the answer of the `_gate.forward` whose frame caused
//! it (no frame of its own) or in `_gate.deliver` calls.
//!
//! [`Outflow`] is the backend's side (one per binding), [`OutOrder`] the gate's (one per
//! player). Both are I/O-free state machines.
//!
//! # Why two paths, and why numbers
//! A client frame behind a gate used to cost six frames between processes: the client's,
//! `_gate.forward` and its acknowledgment, `_gate.deliver` and its acknowledgment, the
//! reply to the client. When the forward's answer waits until its frame was handled (at most
//! [`FORWARD_ANSWER_HOLD`]) and carries the replies, the hop costs four, as a plain relay
//! does. What the game sends at other times (pushes, replies of slow handlers) still goes by
//! `_gate.deliver`. The two paths are different connections (a forward's answer travels on
//! the gate's connection to the backend, a delivery on the backend's to the gate), so the
//! gate could see them out of order; every frame of a binding therefore carries its number,
//! from 0, and the gate lets frames out in that order ([`OutOrder`]): a batch whose first
//! number is ahead of the next one expected waits (at most [`OUTPUT_GAP_WAIT`]) for the
//! batch in flight on the other path, and skips the missing numbers after that (their
//! frames were lost with a call that failed). The backend sends one delivery at a time
//! (the next once the gate answered the previous), so at most one batch of each path is
//! in flight per binding, and in the normal case nothing waits at all.
//!
//! # Inputs of [`Outflow`]
//! [`Outflow::take`] (frames and markers out of the gated session, in order; a marker, an
//! empty frame, says the session finished handling one client frame), [`Outflow::wait`] (a
//! forward queued its frame and waits), [`Outflow::give_up`] (its hold ran out),
//! [`Outflow::end`] (the session's output ended). It answers waiting forwards and says what
//! to deliver.

use std::time::Duration;

use bytes::Bytes;

/// Longest a forward's answer waits for its frame to be handled; then it carries what came
/// out so far, and the rest goes by `_gate.deliver`. The gate reads the client's next frame
/// only once the answer came, so this is also the longest a slow handler delays the
/// forwarding of the player's next frame (the backend would handle that one only after this
/// one anyway).
pub const FORWARD_ANSWER_HOLD: Duration = Duration::from_millis(50);

/// Longest the gate waits for missing output numbers before it skips them (their frames were
/// lost with a failed call).
pub const OUTPUT_GAP_WAIT: Duration = Duration::from_secs(1);

/// Frames for the gate, numbered from `first`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    pub first: u64,
    pub frames: Vec<Bytes>,
}

/// What [`Outflow::take`] decided for a batch, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// Answer the waiting forward `forward` with these frames.
    Answer { forward: u64, frames: Numbered },
    /// Deliver these by `_gate.deliver` (and wait for its answer before the next batch).
    Deliver(Numbered),
}

/// A forward waiting for the output of its frame.
#[derive(Debug)]
struct Waiting {
    forward: u64,
    frames: Numbered,
}

/// The backend's side of one binding's output.
#[derive(Debug, Default)]
pub struct Outflow {
    /// The number of the next frame.
    next: u64,
    waiting: Option<Waiting>,
    /// Forward ids handed out so far.
    forwards: u64,
    ended: bool,
}

impl Outflow {
    pub fn new() -> Outflow {
        Outflow::default()
    }

    /// Frames numbered so far: after [`Outflow::end`], the binding's whole output.
    pub fn numbered(&self) -> u64 {
        self.next
    }

    /// A forward queued its frame and waits for what handling it sends the client. Returns
    /// its id, and the answer of a forward that was waiting already (its frame's handling
    /// did not finish, the new frame's comes after it: it takes what came out so far).
    /// After [`Outflow::end`] the new forward is answered at once (empty), as the second value.
    pub fn wait(&mut self) -> (u64, Option<Out>) {
        let forward = self.forwards;
        self.forwards += 1;
        if self.ended {
            let frames = Numbered { first: self.next, frames: Vec::new() };
            return (forward, Some(Out::Answer { forward, frames }));
        }
        let earlier = self.answer_waiting();
        self.waiting = Some(Waiting { forward, frames: Numbered { first: self.next, frames: Vec::new() } });
        (forward, earlier)
    }

    /// `forward`'s hold ran out: what came out for it so far (`None` if it was answered
    /// already). Later frames are delivered.
    pub fn give_up(&mut self, forward: u64) -> Option<Numbered> {
        if self.waiting.as_ref().is_some_and(|w| w.forward == forward) {
            self.waiting.take().map(|w| w.frames)
        } else {
            None
        }
    }

    /// Frames and markers (empty frames) out of the gated session, in order.
    pub fn take(&mut self, items: impl IntoIterator<Item = Bytes>) -> Vec<Out> {
        let mut out: Vec<Out> = Vec::new();
        for item in items {
            if item.is_empty() {
                out.extend(self.answer_waiting());
                continue;
            }
            let n = self.next;
            self.next += 1;
            match (&mut self.waiting, out.last_mut()) {
                (Some(w), _) => w.frames.frames.push(item),
                (None, Some(Out::Deliver(d))) => d.frames.push(item),
                (None, _) => out.push(Out::Deliver(Numbered { first: n, frames: vec![item] })),
            }
        }
        out
    }

    /// The session's output ended: a waiting forward gets what came out for it.
    pub fn end(&mut self) -> Option<Out> {
        self.ended = true;
        self.answer_waiting()
    }

    fn answer_waiting(&mut self) -> Option<Out> {
        self.waiting.take().map(|w| Out::Answer { forward: w.forward, frames: w.frames })
    }
}

/// What the gate does with numbered frames of the current binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accept {
    /// Send these to the client now, in order (possibly none: all were old).
    Send(Vec<Bytes>),
    /// Numbers before `first` are missing: wait (at most [`OUTPUT_GAP_WAIT`]) for the
    /// answer that carries them, then call again with `skip` set.
    Wait,
}

/// The gate's side: the next number of the player's current binding's output.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutOrder {
    /// The binding (route epoch) the numbers belong to.
    epoch: u64,
    next: u64,
}

impl OutOrder {
    pub fn new() -> OutOrder {
        OutOrder::default()
    }

    /// The number the next frame of `epoch` must have.
    pub fn next(&self, epoch: u64) -> u64 {
        if epoch == self.epoch {
            self.next
        } else {
            0
        }
    }

    /// Frames `batch` of binding `epoch` (the route's current one: the caller checked).
    /// `skip` (after waiting [`OUTPUT_GAP_WAIT`]) gives up the numbers missing before it. An
    /// empty batch changes nothing.
    pub fn accept(&mut self, epoch: u64, batch: &Numbered, skip: bool) -> Accept {
        if epoch != self.epoch {
            // Epochs only grow: the numbering of a new binding starts at 0.
            *self = OutOrder { epoch, next: 0 };
        }
        if batch.frames.is_empty() {
            return Accept::Send(Vec::new());
        }
        if batch.first > self.next && !skip {
            return Accept::Wait;
        }
        let end = batch.first + batch.frames.len() as u64;
        // Frames numbered below `next` were sent already.
        let old = usize::try_from(self.next.saturating_sub(batch.first)).unwrap_or(usize::MAX);
        let keep = batch.frames.get(old..).unwrap_or_default().to_vec();
        self.next = self.next.max(end);
        Accept::Send(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }
    const MARK: Bytes = Bytes::new();

    fn numbered(first: u64, frames: &[&'static str]) -> Numbered {
        Numbered { first, frames: frames.iter().map(|s| f(s)).collect() }
    }

    #[test]
    fn a_waiting_forward_is_answered_with_what_its_frame_caused_at_the_marker() {
        let mut o = Outflow::new();
        let (id, earlier) = o.wait();
        assert_eq!(earlier, None);
        let out = o.take(vec![f("a"), f("b"), MARK]);
        assert_eq!(out, vec![Out::Answer { forward: id, frames: numbered(0, &["a", "b"]) }]);
        assert_eq!(o.numbered(), 2);
        assert_eq!(o.give_up(id), None, "answered already");
    }

    #[test]
    fn frames_with_no_forward_waiting_are_delivered_in_one_batch() {
        let mut o = Outflow::new();
        let out = o.take(vec![f("push1"), f("push2"), MARK]);
        assert_eq!(out, vec![Out::Deliver(numbered(0, &["push1", "push2"]))]);
        let (id, _) = o.wait();
        let out = o.take(vec![f("reply"), MARK, f("push3")]);
        assert_eq!(
            out,
            vec![
                Out::Answer { forward: id, frames: numbered(2, &["reply"]) },
                Out::Deliver(numbered(3, &["push3"]))
            ]
        );
    }

    #[test]
    fn a_forward_that_gives_up_takes_what_came_so_far_and_later_frames_are_delivered() {
        let mut o = Outflow::new();
        let (id, _) = o.wait();
        assert_eq!(o.take(vec![f("early")]), vec![]);
        assert_eq!(o.give_up(id), Some(numbered(0, &["early"])));
        assert_eq!(o.take(vec![f("late"), MARK]), vec![Out::Deliver(numbered(1, &["late"]))]);
    }

    #[test]
    fn a_second_forward_answers_the_first_with_what_came_so_far() {
        let mut o = Outflow::new();
        let (first, _) = o.wait();
        assert_eq!(o.take(vec![f("a")]), vec![]);
        let (second, earlier) = o.wait();
        assert_eq!(earlier, Some(Out::Answer { forward: first, frames: numbered(0, &["a"]) }));
        assert_eq!(
            o.take(vec![f("b"), MARK]),
            vec![Out::Answer { forward: second, frames: numbered(1, &["b"]) }]
        );
    }

    #[test]
    fn the_end_answers_a_waiting_forward_and_later_forwards_at_once() {
        let mut o = Outflow::new();
        let (id, _) = o.wait();
        assert_eq!(o.take(vec![f("a")]), vec![]);
        assert_eq!(o.end(), Some(Out::Answer { forward: id, frames: numbered(0, &["a"]) }));
        let (late, now) = o.wait();
        assert_eq!(now, Some(Out::Answer { forward: late, frames: numbered(1, &[]) }));
        assert_eq!(o.numbered(), 1);
    }

    #[test]
    fn the_gate_sends_in_number_order_and_waits_for_a_gap_before_a_delivery() {
        let mut g = OutOrder::new();
        assert_eq!(g.accept(7, &numbered(0, &["a"]), false), Accept::Send(vec![f("a")]));
        assert_eq!(g.accept(7, &numbered(2, &["c"]), false), Accept::Wait, "1 is missing");
        assert_eq!(g.next(7), 1);
        assert_eq!(g.accept(7, &numbered(1, &["b"]), true), Accept::Send(vec![f("b")]));
        assert_eq!(g.accept(7, &numbered(2, &["c"]), false), Accept::Send(vec![f("c")]));
        assert_eq!(g.next(7), 3);
    }

    #[test]
    fn the_gate_skips_a_gap_when_told_and_drops_what_it_sent_already() {
        let mut g = OutOrder::new();
        assert_eq!(g.accept(1, &numbered(3, &["d", "e"]), true), Accept::Send(vec![f("d"), f("e")]));
        assert_eq!(g.next(1), 5);
        assert_eq!(g.accept(1, &numbered(1, &["b", "c"]), false), Accept::Send(vec![]), "late: dropped");
        assert_eq!(
            g.accept(1, &numbered(4, &["e", "f"]), false),
            Accept::Send(vec![f("f")]),
            "overlap: only new"
        );
        assert_eq!(g.next(1), 6);
    }

    #[test]
    fn an_empty_batch_neither_waits_nor_moves_the_next_number() {
        let mut g = OutOrder::new();
        assert_eq!(g.accept(1, &numbered(4, &[]), false), Accept::Send(vec![]));
        assert_eq!(g.next(1), 0);
    }

    #[test]
    fn a_new_binding_numbers_from_zero() {
        let mut g = OutOrder::new();
        assert_eq!(g.accept(1, &numbered(0, &["a", "b"]), false), Accept::Send(vec![f("a"), f("b")]));
        assert_eq!(g.next(2), 0);
        assert_eq!(g.accept(2, &numbered(0, &["x"]), false), Accept::Send(vec![f("x")]));
        assert_eq!(g.next(2), 1);
    }
}
