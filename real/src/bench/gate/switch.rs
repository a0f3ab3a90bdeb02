//! The switch cases of the `gate` bench: players moving between two backends on one
//! connection (see the module doc of [`super`]).

use super::*;

/// The switch cases: [`SWITCH_PLAYERS`] players on a fresh gate with two fresh backends
/// (sharing one SQLite file, as the backends of a deployment share their database), each
/// moving between the backends on its one connection: `cs_move {backend: the other}`, and
/// once `sc_move` said the switch has started, an applied `cs_counter_add` (which the gate
/// holds until the new backend has the player). The pause is counted from the instant
/// `cs_move` was written until `sc_moved` was read; the held message from the instant the add
/// was written until its `sc_counter`, answered by the new backend, was read: it also pays
/// for the new backend's first use of the player's counter object, lent by the old backend
/// on demand. Baseline: the same players' adds without a switch, one at a time, in the same
/// rounds.
pub(super) async fn switch(env: &ProcEnv, report: &mut BenchReport) -> Result<(), BenchError> {
    let data = env.dir.join("switch");
    let backends =
        [env.spawn("game-s1", "game", APP_SWITCH, &data)?, env.spawn("game-s2", "game", APP_SWITCH, &data)?];
    let gate = env.spawn("gate-s", "gate", APP_SWITCH, &data)?;
    let servers = [&backends[0], &backends[1], &gate];
    let names = [backends[0].name.as_str(), backends[1].name.as_str()];
    let other = |of: &str| if of == names[0] { names[1] } else { names[0] };
    let result = async {
        for s in servers {
            s.wait_healthy().await?;
        }
        let mut clients = open_players(gate.client, "sw", SWITCH_PLAYERS, Some(&env.keys())).await?;
        // A first move of each player, not measured: until both backends see each other in
        // their cluster views a move is refused (`unknown backend`); it also creates each
        // player's counter.
        for c in &mut clients {
            let start = Instant::now();
            loop {
                let to = other(&c.backend).to_string();
                match c.switch_to(&to).await? {
                    Ok(_) => break,
                    Err(why) if start.elapsed() < BACKEND_SEEN_WITHIN => {
                        tracing::debug!(why, "warm-up move refused; again");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(why) => return Err(BenchError::op(BENCH, format!("move refused: {why}"))),
                }
            }
        }
        let refused = |why: String| BenchError::op(BENCH, format!("move refused: {why}"));
        let (mut plain, mut alone, mut together) = (Runs::default(), Runs::default(), Runs::default());
        let started = Instant::now();
        for _ in 0..SWITCH_ROUNDS {
            for c in &mut clients {
                let sent = Instant::now();
                c.add(Msg::Add).await?;
                plain.held.push(sent.elapsed());
            }
            for c in &mut clients {
                let to = other(&c.backend).to_string();
                alone.push(c.switch_to(&to).await?.map_err(refused)?);
            }
            let all = futures::future::join_all(clients.iter_mut().map(|c| {
                let to = other(&c.backend).to_string();
                async move { c.switch_to(&to).await }
            }))
            .await;
            for r in all {
                together.push(r?.map_err(refused)?);
            }
        }
        Ok::<_, BenchError>((plain, alone, together, started.elapsed()))
    }
    .await;
    let (plain, alone, together, elapsed) = result.map_err(|e| with_logs(e, &servers))?;
    let plain = plain.held(elapsed);
    for (case, runs) in [
        ("switch, 1 player at a time".to_string(), alone),
        (format!("switch, {SWITCH_PLAYERS} players at once"), together),
    ] {
        let (pause, held) = (runs.pause(elapsed), runs.held(elapsed));
        let ms = |s: &Sample, q: f64| s.percentile_us(q) / 1_000.0;
        for (metric, q) in [("p50", 0.5), ("p99", 0.99)] {
            let row = |what: &str, s: &Sample| {
                Row::new(&case, &format!("{metric} {what}"), "ms", Better::Lower, ms(s, q), ms(&plain, q))
            };
            report.rows.push(row("switch pause", &pause));
            report.rows.push(row("held message", &held));
        }
        let verdict = if ms(&pause, 0.99) <= SWITCH_PAUSE_P99_TARGET_MS { "met" } else { "NOT met" };
        report.notes.push(format!(
            "{case}: cs_move written -> sc_moved read p50 {} ms, p99 {} ms, max {} ms (target p99 <= \
             {SWITCH_PAUSE_P99_TARGET_MS} ms: {verdict}); an add written once sc_move said the switch had \
             started (held by the gate), answered by the new backend, p50 {} ms, p99 {} ms; an add without a switch (the rows' baseline) p50 {} ms, p99 {} ms; {} \
             switches, each on the player's one connection",
            fmt_num(ms(&pause, 0.5)),
            fmt_num(ms(&pause, 0.99)),
            fmt_num(ms(&pause, 1.0)),
            fmt_num(ms(&held, 0.5)),
            fmt_num(ms(&held, 0.99)),
            fmt_num(ms(&plain, 0.5)),
            fmt_num(ms(&plain, 0.99)),
            pause.ops(),
        ));
    }
    Ok(())
}

/// The switches of one switch case: pauses and held messages.
#[derive(Default)]
struct Runs {
    pause: Vec<Duration>,
    held: Vec<Duration>,
}

impl Runs {
    fn push(&mut self, (pause, held): (Duration, Duration)) {
        self.pause.push(pause);
        self.held.push(held);
    }
    fn sample(v: &[Duration], elapsed: Duration) -> Sample {
        Sample::new(elapsed, v.iter().map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)).collect())
    }
    fn pause(&self, elapsed: Duration) -> Sample {
        Runs::sample(&self.pause, elapsed)
    }
    fn held(&self, elapsed: Duration) -> Sample {
        Runs::sample(&self.held, elapsed)
    }
}

impl Client {
    /// `cs_move {backend: to}`, and once its `sc_move` said the switch has started (the gate
    /// holds the player's frames from then on), an applied `cs_counter_add`. `Ok(Ok((pause,
    /// held)))`: `sc_moved {backend: to}` came, then the add's `sc_counter` from `to`; the pause
    /// is from writing `cs_move` to reading `sc_moved`, `held` from writing the add to reading
    /// its answer. `Ok(Err(reason))`: the move was refused (no add was sent).
    async fn switch_to(&mut self, to: &str) -> Result<Result<(Duration, Duration), String>, BenchError> {
        let bad = |what: &str, v: &Value| BenchError::op(BENCH, format!("move to {to}: {what}: {v}"));
        let sent = Instant::now();
        let r = self.call(CS_MOVE, json!({ "backend": to }), SC_MOVE).await?;
        if r["error"] != json!(false) {
            return Ok(Err(r["error_message"].as_str().unwrap_or_default().to_string()));
        }
        let seq = self.seq + 1;
        let add_sent = Instant::now();
        self.send(CS_ADD, json!({ "n": 1, "seq": seq })).await?;
        let mut pause = None;
        loop {
            let (t, v) = self.recv(&format!("the move to {to}")).await?;
            match (t.as_str(), pause) {
                (SC_MOVED, None) if v == json!({ "backend": to, "recovered": false }) => {
                    pause = Some(sent.elapsed())
                }
                (SC_COUNTER, Some(pause)) => {
                    let held = add_sent.elapsed();
                    let answered = |k: &str, want: Value| v[k] == want;
                    if !(answered("error", json!(false))
                        && answered("seq", json!(seq))
                        && answered("backend", json!(to))
                        && answered("duplicate", json!(false)))
                    {
                        return Err(bad("the held add was not applied once by the new backend", &v));
                    }
                    self.seq = seq;
                    self.backend = to.to_string();
                    return Ok(Ok((pause, held)));
                }
                _ => return Err(bad(&format!("{t} out of order (sc_moved, then sc_counter)"), &v)),
            }
        }
    }
}
