//! `gate_route`'s clients: client `i` plays player `p{i}`. It gets a session key from the
//! login server, connects to one of the gates the key came with (at random), sometimes shows
//! it a bad key first (forged, altered, expired, another user's), logs in, and then sends
//! numbered `cs_counter_add` messages — one at a time or pipelined in bursts — asks to move
//! to another backend now and then (sometimes with a burst of adds sent right behind the
//! `cs_move`, which the switch must neither lose nor let the old backend handle late), and
//! now and then leaves for another gate with the same key. It keeps what a real client keeps: the next `seq` to send and the highest one
//! answered; after a lost connection or an unanswered add it sends again from the first
//! unanswered `seq` (the backend answers a repeat as a duplicate), and after a `gap` answer
//! from the seq the backend expects.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use engine::env::RandExt;
use engine::gate::SessionKeys;
use engine::signed::parse_secret;
use serde_json::{json, Value};

use super::history::{Arrival, BadKey, GateOp, GateRes, Rec, Transcripts};
use super::{n_of, player_of, BACKENDS};
use crate::game_client::{GameClient, ReqError};
use crate::game_host::SIM_SESSION_KEY_SECRET;
use crate::history::OpHandle;
use crate::scenario::ClientCtx;

/// How long a client waits for an answer (a bind that waits out a dead backend takes up to
/// its session timeout, 6 s, and more).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client still waits for the answer to its `cs_move` after the gate recovered its
/// player (`sc_moved {recovered: true}`): a frame the lost backend refused is sent again at
/// once, within the gate's forward timeout (2 s).
pub const RECOVERED_REPLY_WAIT: Duration = Duration::from_secs(5);
/// How long a client waits for `sc_moved` after `sc_move`.
pub const MOVE_WAIT: Duration = Duration::from_secs(10);
/// Probability that a connection starts with a bad key.
const BAD_KEY_PROBABILITY: f64 = 0.3;
/// Probability of fetching a new key before the next connection.
const NEW_KEY_PROBABILITY: f64 = 0.2;
/// Pause between two requests, ms, drawn from this range.
const THINK_MS: std::ops::Range<u64> = 20..200;
/// Pause after a failed connect, key fetch or login.
const RETRY_PAUSE: Duration = Duration::from_millis(300);
/// Most adds of one pipelined burst (at least 2).
const BURST_MAX: u64 = 5;

/// The server index of the login server (the topology's first server).
pub const LOGIN_INDEX: usize = 0;

/// The name of backend `b`.
pub fn backend_name(b: usize) -> String {
    format!("game-{b}")
}

/// What a client knows of its player's counter.
#[derive(Debug, Clone, Copy)]
struct Book {
    /// The next `seq` to send.
    next_seq: u64,
    /// The highest `seq` answered (applied or duplicate).
    confirmed: u64,
}

/// Why a connection's play ended.
enum Ended {
    /// Lost, closed, or an answer did not come: connect again.
    Broken,
    /// The client chose to leave for another gate.
    Leave,
}

pub struct Client {
    pub ctx: ClientCtx,
    pub rec: Rec,
    pub transcripts: Transcripts,
    /// Connection numbers of the run.
    pub conns: Arc<AtomicU64>,
}

impl Client {
    fn now_ns(&self) -> u64 {
        (self.ctx.phases.now)()
    }

    async fn pause(&self, d: Duration) {
        self.ctx.env.clock.sleep(d).await;
    }

    async fn connect(&self, addr: SocketAddr) -> Option<GameClient> {
        GameClient::connect(&self.ctx.env, self.ctx.phases.now.clone(), addr).await
    }

    pub async fn run(self) {
        let player = player_of(self.ctx.index);
        let mut book = Book { next_seq: 1, confirmed: 0 };
        let mut key: Option<(String, Vec<SocketAddr>)> = None;
        while !self.ctx.phases.finished() && self.ctx.budget.left() {
            if key.is_none() || self.ctx.env.rand.gen_bool(NEW_KEY_PROBABILITY) {
                key = self.fetch_key(&player).await;
            }
            let Some((k, gates)) = key.clone() else {
                self.pause(RETRY_PAUSE).await;
                continue;
            };
            let Some(&gate) = self.ctx.env.rand.choose(&gates) else {
                key = None;
                self.pause(RETRY_PAUSE).await;
                continue;
            };
            let Some(mut c) = self.connect(gate).await else {
                self.pause(RETRY_PAUSE).await;
                continue;
            };
            let gate_ix = self.ctx.servers.index_of(gate).unwrap_or(usize::MAX);
            if self.ctx.env.rand.gen_bool(BAD_KEY_PROBABILITY)
                && !self.probe_bad_key(&mut c, &player, gate_ix, &k).await
            {
                continue;
            }
            let conn = self.conns.fetch_add(1, Ordering::Relaxed);
            let Some(backend) = self.login(&mut c, &player, gate_ix, conn, &k).await else {
                key = key.filter(|_| c.is_open());
                self.pause(RETRY_PAUSE).await;
                continue;
            };
            match self.play(&mut c, conn, &player, &mut book, backend).await {
                Ended::Broken => self.pause(RETRY_PAUSE).await,
                Ended::Leave => {}
            }
        }
    }

    /// `cs_login` on the login server: a key and the gates' addresses.
    async fn fetch_key(&self, player: &str) -> Option<(String, Vec<SocketAddr>)> {
        let mut c = self.connect(self.ctx.servers.addr(LOGIN_INDEX)).await?;
        let r = c.request("cs_login", json!({ "user_name": player }), "sc_login").await.ok()?;
        if r["error"] != json!(false) {
            return None;
        }
        let key = r["session_key"].as_str()?.to_string();
        let gates: Vec<SocketAddr> = r["gates"]
            .as_array()?
            .iter()
            .filter_map(|g| {
                let ip: IpAddr = g["host"].as_str()?.parse().ok()?;
                Some(SocketAddr::new(ip, u16::try_from(g["port"].as_u64()?).ok()?))
            })
            .collect();
        (!gates.is_empty()).then_some((key, gates))
    }

    /// Shows the gate a bad key. True if the connection is still usable for the real login.
    async fn probe_bad_key(&self, c: &mut GameClient, player: &str, gate: usize, good: &str) -> bool {
        const KINDS: [BadKey; 4] = [BadKey::Forged, BadKey::Altered, BadKey::Expired, BadKey::OtherUser];
        let rand = &self.ctx.env.rand;
        let kind = *rand.choose(&KINDS).expect("kinds");
        let bad = match kind {
            BadKey::Forged => (0..good.len())
                .map(|_| char::from(b"0123456789abcdef"[rand.gen_range(0..16) as usize]))
                .collect(),
            BadKey::Altered => {
                let mut b = good.as_bytes().to_vec();
                let i = rand.gen_range(0..b.len() as u64) as usize;
                b[i] = if b[i] == b'0' { b'1' } else { b'0' };
                String::from_utf8(b).expect("hex")
            }
            BadKey::Expired => {
                sim_key(player, self.ctx.env.clock.wall_now().0 - 3_600_000, &*self.ctx.env.rand)
            }
            BadKey::OtherUser => {
                sim_key(&format!("{player}-other"), self.ctx.env.clock.wall_now().0, &*self.ctx.env.rand)
            }
        };
        let op = self.rec.invoke(self.ctx.process, GateOp::BadKeyLogin { player: player.into(), gate, kind });
        match c
            .request("cs_gate_login", json!({"user_name": player, "session_key": bad}), "sc_gate_login")
            .await
        {
            Err(ReqError::Error(e)) if e["code"] == json!("session_key_rejected") => {
                self.rec.ok(op, GateRes::KeyRejected);
                true
            }
            Ok(r) if r["error"] == json!(false) => {
                let backend = r["backend"].as_str().unwrap_or_default().to_string();
                self.rec.ok(op, GateRes::LoggedIn { backend });
                false
            }
            Ok(r) => {
                let message = r["error_message"].as_str().unwrap_or_default().to_string();
                self.rec.ok(op, GateRes::Refused { message });
                false
            }
            Err(_) => {
                self.rec.info(op);
                false
            }
        }
    }

    /// `cs_gate_login` with the valid key: the backend the player was bound to.
    async fn login(
        &self,
        c: &mut GameClient,
        player: &str,
        gate: usize,
        conn: u64,
        key: &str,
    ) -> Option<String> {
        let op = self.rec.invoke(self.ctx.process, GateOp::Login { player: player.into(), gate, conn });
        let body = json!({"user_name": player, "session_key": key});
        match c.request_any("cs_gate_login", body, &["sc_gate_login"]).await {
            Ok((_, r)) if r["error"] == json!(false) => {
                let backend = r["backend"].as_str().unwrap_or_default().to_string();
                self.rec.ok(op, GateRes::LoggedIn { backend: backend.clone() });
                self.transcripts.open(conn, self.ctx.process, player);
                self.transcripts.push(conn, self.now_ns(), Arrival::LoggedIn { backend: backend.clone() });
                Some(backend)
            }
            Ok((_, r)) => {
                let message = r["error_message"].as_str().unwrap_or_default().to_string();
                self.rec.ok(op, GateRes::Refused { message });
                None
            }
            Err(ReqError::Error(e)) if e["code"] == json!("session_key_rejected") => {
                // A valid key refused: expired on a skewed clock, say. Not applied anywhere.
                self.rec.ok(op, GateRes::KeyRejected);
                None
            }
            Err(_) => {
                self.rec.info(op);
                None
            }
        }
    }

    /// Plays on one logged-in connection until it breaks or the client leaves.
    async fn play(
        &self,
        c: &mut GameClient,
        conn: u64,
        player: &str,
        book: &mut Book,
        mut backend: String,
    ) -> Ended {
        let rand = self.ctx.env.rand.clone();
        // One operation: a round of play (adds, a burst, a move, or leaving).
        while !self.ctx.phases.finished() && self.ctx.budget.take() {
            let roll = rand.gen_range(0..100);
            let ok = match roll {
                0..55 => self.exchange(c, conn, player, book, None, 1, &mut backend).await,
                55..72 => {
                    let k = rand.gen_range(2..BURST_MAX + 1);
                    self.exchange(c, conn, player, book, None, k, &mut backend).await
                }
                72..82 => self.moves(c, conn, player, book, 0, &mut backend).await,
                82..88 => {
                    let k = rand.gen_range(1..BURST_MAX + 1);
                    self.moves(c, conn, player, book, k, &mut backend).await
                }
                88..93 => return Ended::Leave,
                _ => true,
            };
            if !ok {
                return Ended::Broken;
            }
            self.pause(Duration::from_millis(rand.gen_range(THINK_MS))).await;
        }
        Ended::Leave
    }

    /// Records the answer `r` to the add of `seq`.
    fn answer(&self, conn: u64, seq: u64, op: OpHandle, r: &Value, book: &mut Book) {
        let now = self.now_ns();
        if r["error"] == json!(false) {
            let backend = r["backend"].as_str().unwrap_or_default().to_string();
            let answered = r["seq"].as_u64().unwrap_or(0);
            self.transcripts.push(conn, now, Arrival::Answer { seq: answered, backend: backend.clone() });
            let value = r["value"].as_i64().unwrap_or(i64::MIN);
            let duplicate = r["duplicate"] == json!(true);
            self.rec.ok(op, GateRes::Counter { value, backend, duplicate });
            book.confirmed = book.confirmed.max(seq);
            return;
        }
        self.transcripts.push(conn, now, Arrival::Answer { seq, backend: String::new() });
        match r["error_message"].as_str() {
            Some("gap") => {
                let expected = r["expected"].as_u64().unwrap_or(1);
                self.rec.ok(op, GateRes::Gap { expected });
                book.next_seq = book.next_seq.min(expected);
                book.confirmed = book.confirmed.max(expected.saturating_sub(1));
            }
            // `try again`, `Not logged in`: nothing applied; `outcome unknown`: maybe.
            Some("try again") | Some("Not logged in") => {
                self.rec.fail(op);
                book.next_seq = book.next_seq.min(seq);
            }
            _ => {
                self.rec.info(op);
                book.next_seq = book.next_seq.min(seq);
            }
        }
    }

    /// The connection broke with `pending` unanswered: their outcome is unknown, and the next
    /// add goes from the first unanswered seq.
    fn broken(&self, pending: VecDeque<(u64, OpHandle)>, book: &mut Book) -> bool {
        for (_, op) in pending {
            self.rec.info(op);
        }
        book.next_seq = book.confirmed + 1;
        false
    }

    fn moved(&self, conn: u64, r: &Value, backend: &mut String) {
        let b = r["backend"].as_str().unwrap_or_default().to_string();
        let recovered = r["recovered"] == json!(true);
        self.transcripts.push(conn, self.now_ns(), Arrival::Moved { backend: b.clone(), recovered });
        *backend = b;
    }

    /// Asks to move to another backend, with `k` adds sent right behind the `cs_move` (0: none),
    /// and waits for the switch and every answer. The gate forwards the adds that reach it before
    /// the switch begins to the old backend and holds the rest for the new one, so their answers
    /// come from either side of `sc_moved`, in order, none lost. False if the connection broke
    /// or the switch did not come.
    async fn moves(
        &self,
        c: &mut GameClient,
        conn: u64,
        player: &str,
        book: &mut Book,
        k: u64,
        backend: &mut String,
    ) -> bool {
        let others: Vec<String> = (0..BACKENDS).map(backend_name).filter(|b| b != backend).collect();
        let Some(to) = self.ctx.env.rand.choose(&others).cloned() else { return true };
        self.exchange(c, conn, player, book, Some(to), k, backend).await
    }

    /// Sends a `cs_move` to `to` (if any) and `k` adds (behind it) in one write, then reads every
    /// answer: the move's own (`sc_move`), the switch (`sc_moved`), the adds' (`sc_counter`,
    /// in send order, some maybe missing). False if the connection broke or a switch that
    /// started did not come.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        c: &mut GameClient,
        conn: u64,
        player: &str,
        book: &mut Book,
        to: Option<String>,
        k: u64,
        backend: &mut String,
    ) -> bool {
        let mut messages = Vec::new();
        let mut move_op = to.map(|to| {
            messages.push(("cs_move", json!({ "backend": to })));
            self.rec.invoke(self.ctx.process, GateOp::Move { player: player.into(), conn, to })
        });
        let mut pending: VecDeque<(u64, OpHandle)> = VecDeque::new();
        for _ in 0..k {
            let seq = book.next_seq;
            book.next_seq += 1;
            let n = n_of(seq);
            let op = self.rec.invoke(self.ctx.process, GateOp::Add { player: player.into(), conn, seq, n });
            self.transcripts.push(conn, self.now_ns(), Arrival::Sent { seq });
            pending.push_back((seq, op));
            messages.push(("cs_counter_add", json!({"n": n, "seq": seq})));
        }
        if c.send_many(&messages).await.is_err() {
            if let Some(op) = move_op.take() {
                self.rec.info(op);
            }
            return self.broken(pending, book);
        }
        // The move's own answer (`sc_move`) comes first, then the switch (`sc_moved`); the
        // adds' answers come before or after the switch. After a recovery the `cs_move` in
        // flight may never be answered (the gate drops a frame whose forward may have been
        // delivered to the lost backend; one the backend refused it sends again): wait a
        // little, then give it up with the connection, so no late answer is taken for the next
        // request's.
        let mut started = false;
        let mut switched = false;
        let mut recovered = false;
        while move_op.is_some() || (started && !switched) || !pending.is_empty() {
            let wait = if move_op.is_some() && recovered {
                RECOVERED_REPLY_WAIT
            } else if move_op.is_some() || !pending.is_empty() {
                REPLY_TIMEOUT
            } else {
                MOVE_WAIT
            };
            match c.wait_for(&["sc_move", "sc_moved", "sc_counter"], wait).await {
                Ok((t, r)) if t == "sc_moved" => {
                    self.moved(conn, &r, backend);
                    switched |= started;
                    // After a recovery the adds in flight to the lost backend may never be
                    // answered: send them again (a repeat is answered, never applied twice).
                    if r["recovered"] == json!(true) {
                        recovered = true;
                        if !pending.is_empty() {
                            let again: Vec<(&str, Value)> = pending
                                .iter()
                                .map(|(seq, _)| ("cs_counter_add", json!({"n": n_of(*seq), "seq": seq})))
                                .collect();
                            for (seq, _) in &pending {
                                self.transcripts.push(conn, self.now_ns(), Arrival::Sent { seq: *seq });
                            }
                            if c.send_many(&again).await.is_err() {
                                if let Some(op) = move_op.take() {
                                    self.rec.info(op);
                                }
                                return self.broken(pending, book);
                            }
                        }
                    }
                }
                Ok((t, r)) if t == "sc_move" => {
                    let Some(op) = move_op.take() else { continue };
                    if r["error"] == json!(false) {
                        self.rec.ok(op, GateRes::MoveStarted);
                        started = true;
                    } else {
                        let message = r["error_message"].as_str().unwrap_or_default().to_string();
                        self.rec.ok(op, GateRes::Refused { message });
                    }
                }
                Ok((_, r)) => {
                    // Answers come in send order, but some may be missing (a frame whose
                    // forward failed, a reply lost with its backend): an answer names its
                    // seq, and the adds before it on this connection get no answer.
                    let Some(seq) = r["seq"].as_u64().or(pending.front().map(|(s, _)| *s)) else { continue };
                    let Some(i) = pending.iter().position(|(s, _)| *s == seq) else { continue };
                    for (_, skipped) in pending.drain(..i) {
                        self.rec.info(skipped);
                    }
                    let (_, op) = pending.pop_front().expect("found above");
                    self.answer(conn, seq, op, &r, book);
                }
                Err(_) => {
                    if let Some(op) = move_op.take() {
                        self.rec.info(op);
                    }
                    return self.broken(pending, book);
                }
            }
        }
        true
    }
}

/// A key signed with the simulator's session-key secret, issued at `wall_ms` for `user`.
fn sim_key(user: &str, wall_ms: i64, rand: &dyn engine::env::Rand) -> String {
    let keys =
        SessionKeys::new(parse_secret(SIM_SESSION_KEY_SECRET).expect("valid"), Duration::from_secs(60));
    keys.issue(user, engine::env::WallTime(wall_ms), rand).map(|(k, _)| k).unwrap_or_default()
}
