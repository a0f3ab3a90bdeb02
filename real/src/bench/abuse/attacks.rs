//! The attacks of `real abuse`, one function each (the table in the module docs of
//! [`super`] says what each does).

use super::*;

/// `ping_flood`: see the module docs.
pub async fn ping_flood(target: &mut Target) -> Result<Measurement, BenchError> {
    let mut m = Meter::begin(target, "ping_flood", &[(Probe::WsLogin, HONEST_OTHER_IP)])?;
    let mut conn = raw_ws_upgrade(m.ws()).await?;
    // Masked (client-to-server) ping frames, RFC 6455 §5.2: FIN + opcode 9, mask bit +
    // length, the masking key, the masked payload.
    let mask = [0x5a_u8, 0xc3, 0x1e, 0x77];
    let mut frame = vec![0x89, 0x80 | PING_PAYLOAD_BYTES as u8];
    frame.extend_from_slice(&mask);
    frame.extend((0..PING_PAYLOAD_BYTES).map(|i| b'p' ^ mask[i % 4]));
    let chunk: Vec<u8> =
        frame.iter().copied().cycle().take(frame.len() * (PING_WRITE_CHUNK_BYTES / frame.len())).collect();
    m.start_probes();
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut closed_after = None;
    while start.elapsed() < PING_FLOOD_FOR {
        let left = PING_FLOOD_FOR.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, conn.write_all(&chunk)).await {
            Err(_) => break,
            Ok(Ok(())) => sent += chunk.len() as u64,
            Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
        }
    }
    m.finish_probes().await;
    drop(conn);
    m.fact("bytes_sent", sent as f64);
    m.fact("pings_sent", (sent / frame.len() as u64) as f64);
    match closed_after {
        Some(d) => {
            m.fact("closed_by_server_after_ms", d.as_secs_f64() * 1e3);
            m.note(format!(
                "closed by the server after {:.2} s and {:.1} MiB of pings",
                d.as_secs_f64(),
                sent as f64 / MIB
            ));
        }
        None => m.note(format!(
            "not closed within {:.1} s; {:.1} MiB of pings sent, none of the pongs read",
            PING_FLOOD_FOR.as_secs_f64(),
            sent as f64 / MIB
        )),
    }
    m.finish().await
}

/// A raw WebSocket connection from [`ATTACKER_IP`] whose upgrade was answered 101; nothing
/// is read from it afterwards.
async fn raw_ws_upgrade(addr: SocketAddr) -> Result<TcpStream, BenchError> {
    let what = || format!("raw WebSocket upgrade on {addr}");
    let mut s =
        connect_from(ATTACKER_IP, addr, Some(ATTACKER_RCVBUF)).await.map_err(BenchError::io(what()))?;
    s.write_all(UPGRADE_HEAD.as_bytes()).await.map_err(BenchError::io(what()))?;
    s.write_all(b"\r\n").await.map_err(BenchError::io(what()))?;
    // Read the response head byte by byte, so that nothing after it is consumed.
    let mut head = Vec::new();
    let read = async {
        while !head.ends_with(b"\r\n\r\n") {
            let b = s.read_u8().await?;
            head.push(b);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(PROBE_TIMEOUT, read)
        .await
        .map_err(|_| BenchError::op(BENCH, format!("{}: no answer", what())))?
        .map_err(BenchError::io(what()))?;
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(BenchError::op(BENCH, format!("{}: {}", what(), String::from_utf8_lossy(&head))));
    }
    Ok(s)
}

/// `slow_reader`: see the module docs.
pub async fn slow_reader(target: &mut Target) -> Result<Measurement, BenchError> {
    let mut m = Meter::begin(target, "slow_reader", &[(Probe::TcpLogin, HONEST_OTHER_IP)])?;
    let addr = m.tcp_json();
    m.start_probes();
    for i in 0..SLOW_READER_CLIENTS {
        let user = format!("slow-reader-{}-{i}", std::process::id());
        let r = slow_reader_client(addr, &user).await?;
        let n = i + 1;
        m.fact(&format!("client{n}_bytes_sent"), r.sent as f64);
        if let Some(d) = r.closed_after {
            m.fact(&format!("client{n}_closed_by_server_after_ms"), d.as_secs_f64() * 1e3);
        }
        m.note(format!(
            "slow reader {n}: {} requests ({:.0} MiB) sent, {}",
            r.requests,
            r.sent as f64 / MIB,
            match r.closed_after {
                Some(d) => format!("closed by the server after {:.2} s", d.as_secs_f64()),
                None => format!(
                    "not closed (stopped at {} or {:?})",
                    fmt_mib(SLOW_READER_MAX_BYTES),
                    SLOW_READER_MAX_FOR
                ),
            }
        ));
    }
    m.finish_probes().await;
    let slow = m.target.log().matches("slow reader").count();
    m.fact("slow_reader_log_lines", slow as f64);
    m.finish().await
}

fn fmt_mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB)
}

struct SlowReaderRun {
    sent: u64,
    requests: u64,
    closed_after: Option<Duration>,
}

/// One slow reader: logs in (reading that reply), then sends `cs_send` to itself until the
/// server closes the connection or a bound is reached, reading nothing.
async fn slow_reader_client(addr: SocketAddr, user: &str) -> Result<SlowReaderRun, BenchError> {
    let what = || format!("slow reader on {addr}");
    let stream =
        connect_from(ATTACKER_IP, addr, Some(ATTACKER_RCVBUF)).await.map_err(BenchError::io(what()))?;
    let mut conn = tcp_framed(stream);
    let r = tcp_call(&mut conn, CS_LOGIN, &json!({ "user_name": user }), SC_LOGIN)
        .await
        .map_err(|e| BenchError::op(BENCH, format!("{}: login: {e}", what())))?;
    login_ok(&r).map_err(|e| BenchError::op(BENCH, format!("{}: {e}", what())))?;
    let mut stream = conn.into_inner();
    let body = json!({ "to": user, "message": "m".repeat(SLOW_READER_MESSAGE_BYTES) });
    let payload = codec::encode_json_message(Transport::TcpJson, CS_SEND, &body);
    let len = u32::try_from(payload.len()).map_err(|e| BenchError::setup(BENCH, e))?;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    let start = Instant::now();
    let (mut sent, mut requests) = (0u64, 0u64);
    let mut closed_after = None;
    while sent < SLOW_READER_MAX_BYTES && start.elapsed() < SLOW_READER_MAX_FOR {
        let left = SLOW_READER_MAX_FOR.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, stream.write_all(&frame)).await {
            Err(_) => break,
            Ok(Ok(())) => {
                sent += frame.len() as u64;
                requests += 1;
            }
            Ok(Err(_)) => {
                closed_after = Some(start.elapsed());
                break;
            }
        }
    }
    Ok(SlowReaderRun { sent, requests, closed_after })
}

/// `handshakes`: see the module docs.
pub async fn handshake_exhaustion(target: &mut Target) -> Result<Measurement, BenchError> {
    ensure_fds(HANDSHAKE_CONNECTIONS)?;
    let mut m = Meter::begin(target, "handshakes", &both_sources(Probe::WsLogin))?;
    let mut conns = open_many(HANDSHAKE_CONNECTIONS, m.ws()).await;
    // The upgrade request without the blank line that ends it: the server waits for the rest.
    let head = UPGRADE_HEAD.as_bytes();
    let written = futures::stream::iter(conns.iter_mut())
        .map(|c| async move { c.write_all(head).await.is_ok() })
        .buffer_unordered(CONNECTS_IN_FLIGHT)
        .filter(|ok| futures::future::ready(*ok))
        .count()
        .await;
    m.fact("connections", conns.len() as f64);
    m.fact("requests_written", written as f64);
    m.start_probes();
    tokio::time::sleep(HANDSHAKE_HOLD).await;
    m.finish_probes().await;
    // How many the server dropped meanwhile (a read returns at once on a closed one).
    let mut dropped = 0usize;
    for c in &mut conns {
        let mut b = [0u8; 1];
        if tokio::time::timeout(Duration::ZERO, c.read(&mut b)).await.is_ok() {
            dropped += 1;
        }
    }
    drop(conns);
    m.fact("dropped_by_server", dropped as f64);
    m.note(format!(
        "{written} of {HANDSHAKE_CONNECTIONS} half-open upgrades held >= {:.0} s; {dropped} dropped by the server meanwhile",
        HANDSHAKE_HOLD.as_secs_f64()
    ));
    m.finish().await
}

/// `admin_flood`: see the module docs.
pub async fn admin_flood(target: &mut Target) -> Result<Measurement, BenchError> {
    ensure_fds(ADMIN_FLOOD_CONNECTIONS)?;
    let mut m = Meter::begin(target, "admin_flood", &both_sources(Probe::Health))?;
    let conns = open_many(ADMIN_FLOOD_CONNECTIONS, m.api()).await;
    let opened = conns.len();
    m.start_probes();
    tokio::time::sleep(ADMIN_FLOOD_HOLD).await;
    let statuses: Vec<Option<String>> = futures::stream::iter(conns)
        .map(|mut c| async move {
            let ask = async {
                c.write_all(HEALTH_REQUEST).await.ok()?;
                let mut buf = Vec::new();
                c.read_to_end(&mut buf).await.ok()?;
                String::from_utf8_lossy(&buf).split_whitespace().nth(1).map(str::to_string)
            };
            tokio::time::timeout(ADMIN_REPLY_WITHIN, ask).await.ok().flatten()
        })
        .buffer_unordered(ADMIN_FLOOD_CONNECTIONS)
        .collect()
        .await;
    m.finish_probes().await;
    let answered = statuses.iter().filter(|s| s.is_some()).count();
    let ok = statuses.iter().filter(|s| s.as_deref() == Some("200")).count();
    m.fact("connections", opened as f64);
    m.fact("answered", answered as f64);
    m.fact("answered_200", ok as f64);
    m.note(format!("{answered} of {opened} simultaneous admin connections answered ({ok} with 200)"));
    m.finish().await
}

/// `admin_slowloris`: see the module docs.
pub async fn admin_slowloris(target: &mut Target) -> Result<Measurement, BenchError> {
    ensure_fds(SLOWLORIS_CONNECTIONS)?;
    let mut m = Meter::begin(target, "admin_slowloris", &both_sources(Probe::Health))?;
    let conns = open_many(SLOWLORIS_CONNECTIONS, m.api()).await;
    let opened = conns.len();
    m.start_probes();
    let start = Instant::now();
    // Each connection: one byte per SLOWLORIS_BYTE_EVERY until SLOWLORIS_HOLD; when the
    // server closed it, when that was noticed.
    let closed: Vec<Option<Duration>> =
        futures::future::join_all(conns.into_iter().map(|mut c| async move {
            let mut at = 0usize;
            while start.elapsed() < SLOWLORIS_HOLD {
                let byte = SLOWLORIS_REQUEST[at % (SLOWLORIS_REQUEST.len() - 4)];
                if c.write_all(&[byte]).await.is_err() {
                    return Some(start.elapsed());
                }
                at += 1;
                // A closed connection also shows as a readable EOF.
                let mut b = [0u8; 64];
                if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(SLOWLORIS_BYTE_EVERY, c.read(&mut b)).await {
                    return Some(start.elapsed());
                }
            }
            None
        }))
        .await;
    m.finish_probes().await;
    let mut cut: Vec<f64> = closed.iter().flatten().map(Duration::as_secs_f64).collect();
    cut.sort_by(f64::total_cmp);
    m.fact("connections", opened as f64);
    m.fact("closed_by_server", cut.len() as f64);
    if let (Some(first), Some(last)) = (cut.first(), cut.last()) {
        m.note(format!(
            "{} of {opened} slowloris connections closed by the server within {:.0} s (between {first:.1} s and {last:.1} s)",
            cut.len(),
            SLOWLORIS_HOLD.as_secs_f64()
        ));
    } else {
        m.note(format!(
            "none of {opened} slowloris connections closed within {:.0} s",
            SLOWLORIS_HOLD.as_secs_f64()
        ));
    }
    m.finish().await
}

/// `idle_tcp`: see the module docs.
pub async fn idle_tcp(target: &mut Target) -> Result<Measurement, BenchError> {
    ensure_fds(IDLE_TCP_CONNECTIONS)?;
    let mut m = Meter::begin(target, "idle_tcp", &both_sources(Probe::TcpLogin))?;
    let conns = open_many(IDLE_TCP_CONNECTIONS, m.tcp_json()).await;
    m.fact("connections", conns.len() as f64);
    m.start_probes();
    tokio::time::sleep(IDLE_TCP_HOLD).await;
    m.finish_probes().await;
    m.note(format!(
        "{} of {IDLE_TCP_CONNECTIONS} idle TCP JSON connections held {:.0} s",
        conns.len(),
        IDLE_TCP_HOLD.as_secs_f64()
    ));
    drop(conns);
    m.finish().await
}
