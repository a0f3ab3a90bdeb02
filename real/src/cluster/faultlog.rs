//! The faults a live run applied, as records (kills, pauses, network and clock faults), the
//! plan written to a kept run directory, and the driver that turns the network schedule's
//! events into rule sets in the servers' namespaces.

use super::{clockfaults, netfaults, netns, secs, ClusterError, RunArgs, RunOutcome};

/// One clock fault of a run, as written to the server's control file.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockFaultRecord {
    /// Seconds into the run (true time).
    pub at_secs: f64,
    pub server: String,
    /// `None`: the heal's reset.
    pub kind: Option<clockfaults::ClockFaultKind>,
    pub offset_ms: i64,
    pub ppm: i64,
}

impl ClockFaultRecord {
    /// `clock skew game-1: offset -2500 ms, drift +0 ppm`.
    pub fn description(&self) -> String {
        let what = self.kind.map_or("clock set right", |k| match k {
            clockfaults::ClockFaultKind::Skew => "clock skew",
            clockfaults::ClockFaultKind::Jump => "clock jump",
            clockfaults::ClockFaultKind::Drift => "clock drift",
        });
        format!("{what} {}: offset {:+} ms, drift {:+} ppm", self.server, self.offset_ms, self.ppm)
    }
}

/// One network fault of a `--net` run, as applied.
#[derive(Debug, Clone, PartialEq)]
pub struct NetFaultRecord {
    /// Seconds into the run (true time) when its rules were loaded.
    pub at_secs: f64,
    /// How long it lasted (its rules were removed then, or at the heal).
    pub for_secs: f64,
    pub kind: netfaults::NetFaultKind,
    /// `partition game-1 | game-0,game-2,zk,redis`, ...
    pub description: String,
}

/// One SIGKILL of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct KillRecord {
    /// Seconds into the run.
    pub at_secs: f64,
    pub server: String,
    /// The incarnation killed.
    pub process: u64,
    /// The incarnation that replaced it (`None` if the run ended first).
    pub restarted_as: Option<u64>,
}

/// One SIGSTOP of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseRecord {
    /// Seconds into the run.
    pub at_secs: f64,
    pub server: String,
    pub process: u64,
    /// How long until its SIGCONT.
    pub for_secs: f64,
}

/// The faults a run applied, one per line in true-time order, for its kept directory.
pub fn fault_plan(out: &RunOutcome, seed: u64) -> String {
    let mut lines: Vec<(f64, String)> = Vec::new();
    for k in &out.kills {
        let then =
            k.restarted_as.map_or("not restarted".to_string(), |p| format!("restarted as process {p}"));
        lines.push((k.at_secs, format!("kill -9 {} (process {}), {then}", k.server, k.process)));
    }
    for p in &out.pauses {
        lines.push((
            p.at_secs,
            format!("SIGSTOP {} (process {}) for {:.2}s", p.server, p.process, p.for_secs),
        ));
    }
    for f in &out.net_faults {
        lines.push((f.at_secs, format!("{} for {:.2}s", f.description, f.for_secs)));
    }
    for c in &out.clock_faults {
        lines.push((c.at_secs, c.description()));
    }
    for f in &out.service_faults {
        lines.push((f.at_secs, format!("{} for {:.2}s", f.description, f.for_secs)));
    }
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut s = format!("fault seed {seed}\n");
    for (at, l) in lines {
        s.push_str(&format!("{at:8.2}s  {l}\n"));
    }
    s
}

/// Writes `text` to `path` by a rename, so a reader never sees half of it.
pub(super) fn write_atomically(path: &std::path::Path, text: &str) -> Result<(), ClusterError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| ClusterError::Io(format!("{}: {e}", path.display())))
}

/// The kinds `--net-faults` names (all when it names none).
pub(super) fn net_kinds(args: &RunArgs) -> Result<Vec<netfaults::NetFaultKind>, ClusterError> {
    if args.net_faults.is_empty() {
        return Ok(netfaults::NetFaultKind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for name in &args.net_faults {
        let k = netfaults::NetFaultKind::parse(name.trim()).map_err(ClusterError::Args)?;
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    Ok(kinds)
}

/// The network faults of a `--net` run as they happen: the schedule's events become rule
/// sets loaded into the servers' namespaces, and records for the printed plan.
pub(super) struct NetFaults<'a> {
    lab: &'a netns::NetLab,
    schedule: netfaults::NetSchedule,
    endpoints: netfaults::Endpoints,
    names: Vec<String>,
    /// Index in `records` of each active fault, by schedule id.
    open: std::collections::BTreeMap<u64, usize>,
    pub(super) records: Vec<NetFaultRecord>,
}

impl<'a> NetFaults<'a> {
    pub(super) fn new(
        lab: &'a netns::NetLab,
        schedule: netfaults::NetSchedule,
        endpoints: netfaults::Endpoints,
        names: Vec<String>,
    ) -> Self {
        NetFaults { lab, schedule, endpoints, names, open: Default::default(), records: Vec::new() }
    }

    /// Carries out the schedule's events at `now`: reloads the rules of every host whose
    /// faults changed, and prints each fault as it starts.
    pub(super) fn step(&mut self, now: u64) -> Result<(), ClusterError> {
        let events = self.schedule.step(now);
        let mut hosts = std::collections::BTreeSet::new();
        for e in events {
            match e {
                netfaults::NetEvent::Start { id, fault, for_ns } => {
                    hosts.insert(fault.host());
                    let description = fault.describe(&self.names);
                    println!("net fault at {:.2}s for {:.2}s: {description}", secs(now), secs(for_ns));
                    self.open.insert(id, self.records.len());
                    self.records.push(NetFaultRecord {
                        at_secs: secs(now),
                        for_secs: secs(for_ns),
                        kind: fault.kind(),
                        description,
                    });
                }
                netfaults::NetEvent::End { id, fault } => {
                    hosts.insert(fault.host());
                    if let Some(i) = self.open.remove(&id) {
                        self.records[i].for_secs = secs(now) - self.records[i].at_secs;
                    }
                }
            }
        }
        for host in hosts {
            let rules = netfaults::host_rules(host, self.schedule.active(), &self.endpoints);
            self.lab.load_rules(host, &netfaults::render(&rules))?;
        }
        Ok(())
    }
}
