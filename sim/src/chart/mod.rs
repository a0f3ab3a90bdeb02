//! A picture of one run (`sim replay … --chart FILE.html`): one self-contained HTML page with
//! an inline SVG — a lane per node (services, servers, clients, the observer), the frames
//! between them as arrows, fault windows as shaded bands over the lanes they hit, kills,
//! restarts, pauses and clock jumps as marks, the history's operations as bars coloured by
//! outcome, and the operations a checker's violation names outlined in red.
//!
//! # Layout
//! - [`record`]: what a charted run records while it runs ([`ChartTap`]); uncharted runs
//!   have no tap and pay nothing.
//! - [`model`]: the chart as data ([`Chart`]), built from a charted run.
//! - [`render`](mod@render): the HTML page, a pure function of the [`Chart`].
//!
//! Same seed, same bytes: the chart holds only simulated time and recording order.

pub mod model;
pub mod record;
pub mod render;

pub use model::{build, Chart, ChartOptions, MESSAGES_DRAWN_MAX};
pub use record::{ChartLog, ChartTap, FaultEvent, NodeTap, FRAMES_RECORDED_MAX};
pub use render::render;

use scenarios::faults::FaultPlan;
use scenarios::{Scenario, Topology, Workload};

use crate::runner::{run_charted, RunOptions, SeedResult};

/// Runs `seed` of `scenario` with `plan` (charted) and returns its result and its chart page.
#[allow(clippy::too_many_arguments)]
pub fn chart_run(
    scenario: &dyn Scenario,
    seed: u64,
    bug: Option<&str>,
    topo: Topology,
    plan: FaultPlan,
    workload: Workload,
    run_opts: RunOptions,
    opts: ChartOptions,
) -> (SeedResult, Chart, String) {
    let (result, charted) = run_charted(scenario, seed, bug, topo, plan, workload, run_opts);
    let chart = build(&result, &charted, opts);
    let html = render(&chart);
    (result, chart, html)
}
