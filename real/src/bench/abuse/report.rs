//! Running the attacks of `real abuse` and reporting them: one attack by name, the table,
//! the median of several runs, the whole command.

use super::*;

/// Runs attack `name` on `target`.
pub async fn run_attack(name: &str, target: &mut Target) -> Result<Measurement, BenchError> {
    match name {
        "ping_flood" => ping_flood(target).await,
        "slow_reader" => slow_reader(target).await,
        "handshakes" => handshake_exhaustion(target).await,
        "admin_flood" => admin_flood(target).await,
        "admin_slowloris" => admin_slowloris(target).await,
        "idle_tcp" => idle_tcp(target).await,
        other => Err(unknown_attack(other)),
    }
}

fn unknown_attack(name: &str) -> BenchError {
    BenchError::setup(BENCH, format!("unknown attack {name:?} (known: {})", ATTACKS.join(", ")))
}

/// The aligned table: one line per honest client of every measurement.
pub fn table(ms: &[Measurement]) -> String {
    let header = [
        "attack",
        "RSS before / peak / after (MiB)",
        "honest client",
        "during max ms",
        "after max ms",
        "notes",
    ];
    let mut cells: Vec<[String; 6]> = vec![header.map(str::to_string)];
    for m in ms {
        let rss = format!("{:.0} / {:.0} / {:.0}", m.rss_before_mib, m.rss_peak_mib, m.rss_after_mib);
        let mut notes = m.notes.join("; ");
        if !m.server_alive {
            notes.insert_str(0, "SERVER DIED; ");
        }
        if m.server_panicked {
            notes.insert_str(0, "PANICKED; ");
        }
        for (i, h) in m.honest.iter().enumerate() {
            let first = i == 0;
            cells.push([
                if first { m.attack.clone() } else { String::new() },
                if first { rss.clone() } else { String::new() },
                h.label(),
                h.during.cell(),
                h.after.cell(),
                if first { notes.clone() } else { String::new() },
            ]);
        }
    }
    let mut widths = [0usize; 5];
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            match widths.get(i) {
                Some(&w) if i == 3 || i == 4 => {
                    let _ = write!(line, "{c:>w$} | ");
                }
                Some(&w) => {
                    let _ = write!(line, "{c:<w$} | ");
                }
                None => line.push_str(c),
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The median of several runs of one attack, figure by figure (notes of the first run;
/// failures and the death or panic of any run kept).
pub fn median(runs: &[Measurement]) -> Option<Measurement> {
    let first = runs.first()?;
    let med = |f: &dyn Fn(&Measurement) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let honest = first
        .honest
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let probes = |during: bool| {
                let pick = |m: &Measurement| -> Probes {
                    let h = &m.honest[i.min(m.honest.len() - 1)];
                    if during {
                        h.during.clone()
                    } else {
                        h.after.clone()
                    }
                };
                let pm = |f: &dyn Fn(&Probes) -> f64| med(&|m: &Measurement| f(&pick(m)));
                Probes {
                    samples: pm(&|p: &Probes| p.samples as f64) as usize,
                    failed: pm(&|p: &Probes| p.failed as f64) as usize,
                    max_ms: pm(&|p: &Probes| p.max_ms),
                    median_ms: pm(&|p: &Probes| p.median_ms),
                    first_failure: runs.iter().find_map(|m| pick(m).first_failure),
                }
            };
            Honest { probe: h.probe, source: h.source, during: probes(true), after: probes(false) }
        })
        .collect();
    let facts = first
        .facts
        .keys()
        .map(|k| (k.clone(), med(&|m: &Measurement| m.fact(k).unwrap_or(f64::NAN))))
        .collect();
    let mut notes = vec![format!("median of {} runs", runs.len())];
    notes.extend(first.notes.iter().map(|n| format!("run 1: {n}")));
    Some(Measurement {
        attack: first.attack.clone(),
        rss_before_mib: med(&|m: &Measurement| m.rss_before_mib),
        rss_peak_mib: med(&|m: &Measurement| m.rss_peak_mib),
        rss_after_mib: med(&|m: &Measurement| m.rss_after_mib),
        honest,
        facts,
        notes,
        server_alive: runs.iter().all(|m| m.server_alive),
        server_panicked: runs.iter().any(|m| m.server_panicked),
        wall_secs: med(&|m: &Measurement| m.wall_secs),
    })
}

/// Everything `real abuse` measured.
#[derive(Debug, Clone, Serialize)]
pub struct AbuseReport {
    pub server_bin: PathBuf,
    /// Every run's measurements, run by run.
    pub runs: Vec<Vec<Measurement>>,
    /// Per attack, the median over the runs.
    pub medians: Vec<Measurement>,
}

/// `sandtable-server`: `--server-bin`, else next to this executable (or one directory up,
/// for a test binary in `deps/`).
fn server_bin(args: &AbuseArgs) -> Result<PathBuf, BenchError> {
    if let Some(p) = &args.server_bin {
        return Ok(p.clone());
    }
    let me = std::env::current_exe().map_err(BenchError::io("locating this executable"))?;
    let name = format!("sandtable-server{}", std::env::consts::EXE_SUFFIX);
    me.ancestors().skip(1).take(2).map(|d| d.join(&name)).find(|p| p.is_file()).ok_or_else(|| {
        BenchError::setup(BENCH, format!("no {name} next to {}: build it or pass --server-bin", me.display()))
    })
}

/// Runs the attacks named in `args` (all if none), each on a fresh server, `args.runs` times;
/// prints each table and, for several runs, the medians; writes `args.json` if set.
/// Blocking: call it outside any async runtime.
pub fn run(args: AbuseArgs) -> Result<AbuseReport, BenchError> {
    if let Some(bad) = args.attacks.iter().find(|a| !ATTACKS.contains(&a.as_str())) {
        return Err(unknown_attack(bad));
    }
    let names: Vec<&str> = ATTACKS
        .into_iter()
        .filter(|a| args.attacks.is_empty() || args.attacks.iter().any(|n| n == a))
        .collect();
    let exe = server_bin(&args)?;
    let fd = raise_fd_limit();
    println!("server: {}", exe.display());
    println!("open files (RLIMIT_NOFILE): {} (hard {})", fd.soft, fd.hard);
    println!("starting private Redis and ZooKeeper ...");
    let services = Services::start()?;
    let rt = crate::bench::driver::runtime()?;
    let mut runs = Vec::new();
    for run in 0..args.runs.max(1) {
        let mut ms = Vec::new();
        for name in &names {
            let m = rt.block_on(async {
                let mut target = Target::spawn(&exe, &services, &format!("abuse-{name}-{run}"))?;
                target.wait_healthy().await?;
                run_attack(name, &mut target).await
            })?;
            println!("[run {}] {}", run + 1, m.table().lines().nth(1).unwrap_or_default());
            ms.push(m);
        }
        println!("\nrun {}:\n{}", run + 1, table(&ms));
        runs.push(ms);
    }
    drop(rt);
    let medians: Vec<Measurement> = (0..names.len())
        .filter_map(|i| median(&runs.iter().filter_map(|r| r.get(i).cloned()).collect::<Vec<_>>()))
        .collect();
    if runs.len() > 1 {
        println!("median of {} runs:\n{}", runs.len(), table(&medians));
    }
    let report = AbuseReport { server_bin: exe, runs, medians };
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| BenchError::op(BENCH, e))?;
        std::fs::write(path, text).map_err(BenchError::io(format!("writing {}", path.display())))?;
        println!("measurements written to {}", path.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(attack: &str, peak: f64, during_max: f64) -> Measurement {
        let p = Probes { samples: 4, failed: 0, max_ms: during_max, median_ms: 1.0, first_failure: None };
        Measurement {
            attack: attack.to_string(),
            rss_before_mib: 20.0,
            rss_peak_mib: peak,
            rss_after_mib: 21.0,
            honest: vec![Honest {
                probe: Probe::WsLogin,
                source: HONEST_OTHER_IP,
                during: p.clone(),
                after: p,
            }],
            facts: BTreeMap::from([("bytes_sent".to_string(), peak)]),
            notes: vec!["n".to_string()],
            server_alive: true,
            server_panicked: false,
            wall_secs: 1.0,
        }
    }

    #[test]
    fn the_median_is_taken_figure_by_figure() {
        let med = median(&[m("x", 300.0, 5.0), m("x", 100.0, 9000.0), m("x", 200.0, 7.0)]).unwrap();
        assert_eq!(med.rss_peak_mib, 200.0);
        assert_eq!(med.honest[0].during.max_ms, 7.0);
        assert_eq!(med.fact("bytes_sent"), Some(200.0));
        assert!(median(&[]).is_none());
    }

    #[test]
    fn the_table_has_a_line_per_honest_client_and_shows_failures() {
        let mut a = m("ping_flood", 300.0, 5.0);
        a.honest[0].during.failed = 2;
        let t = table(&[a]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2, "{t}");
        assert!(lines[1].starts_with("ping_flood"), "{t}");
        assert!(lines[1].contains("20 / 300 / 21") && lines[1].contains("(2/4 failed)"), "{t}");
    }
}
