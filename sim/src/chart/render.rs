//! The chart as one self-contained HTML page: a header (run, verdict, violations, counts,
//! legend) and one inline SVG with a small inline script for zoom and pan on the time axis.
//! Nothing is fetched: no CDN, no fonts, no images.
//!
//! [`render`] is a pure function of the [`Chart`]: same chart, same bytes. Every element that
//! sits on the time axis carries its times (`data-t0`/`data-t1`, or `data-t` for marks, in
//! ms) and is drawn at its place for the whole run; the script moves them when the visible
//! window changes (wheel: zoom around the pointer, drag: pan, double-click: whole run) and
//! sets `data-rendered` on the SVG once it has drawn (the headless check looks for it).

use std::fmt::Write as _;

use scenarios::history::ViewOutcome;

use super::model::{Chart, MarkKind, OpBar};

/// Width of the lane-name column, px.
const LABEL_W: f64 = 130.0;
/// Width of the plot (the whole run when not zoomed), px.
const PLOT_W: f64 = 1400.0;
const RIGHT_PAD: f64 = 16.0;
/// Height of the time axis above the lanes, px.
const AXIS_H: f64 = 34.0;
/// Height of one row of operation bars, px.
const ROW_H: f64 = 16.0;
/// Space above and below a lane's rows, px.
const LANE_PAD: f64 = 12.0;
/// Ticks on the time axis, at most.
const TICKS_MAX: u64 = 14;

/// Text for HTML/SVG content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            _ => o.push(c),
        }
    }
    o
}

/// `ns` as milliseconds with three decimals (µs), by integer arithmetic.
fn ms(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000, (ns / 1_000) % 1_000)
}

/// `ns` as seconds with three decimals (ms), by integer arithmetic.
fn secs(ns: u64) -> String {
    format!("{}.{:03}", ns / 1_000_000_000, (ns / 1_000_000) % 1_000)
}

struct Geometry {
    end_ns: u64,
    lane_top: Vec<f64>,
    lane_h: Vec<f64>,
    height: f64,
}

impl Geometry {
    fn new(chart: &Chart) -> Geometry {
        let (mut lane_top, mut lane_h) = (Vec::new(), Vec::new());
        let mut y = AXIS_H;
        for l in &chart.lanes {
            let h = l.rows as f64 * ROW_H + 2.0 * LANE_PAD;
            lane_top.push(y);
            lane_h.push(h);
            y += h;
        }
        Geometry { end_ns: chart.end_ns.max(1), lane_top, lane_h, height: y + 8.0 }
    }

    fn x(&self, ns: u64) -> f64 {
        LABEL_W + ns as f64 / self.end_ns as f64 * PLOT_W
    }

    fn mid(&self, lane: usize) -> f64 {
        self.lane_top[lane] + self.lane_h[lane] / 2.0
    }
}

/// The tick step (ms) for a window of `span_ms`: 1, 2 or 5 times a power of ten.
fn tick_step_ms(span_ms: u64) -> u64 {
    let mut step = 1u64;
    loop {
        for m in [1, 2, 5] {
            if span_ms / (step * m) <= TICKS_MAX {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// The window (ns) around the operations `ids`: from the first invocation to the last end,
/// widened by half its length on each side (at least 50 ms); `None` if none is on the chart.
fn zoom_window(chart: &Chart, ids: &[usize]) -> Option<(u64, u64)> {
    let named: Vec<&OpBar> = chart.ops.iter().filter(|o| ids.contains(&o.op.id)).collect();
    let start = named.iter().map(|o| o.op.invoke_ns).min()?;
    let end = named.iter().map(|o| o.end_ns).max()?;
    let margin = ((end - start) / 2).max(50_000_000);
    Some((start.saturating_sub(margin), (end + margin).min(chart.end_ns)))
}

fn outcome_class(b: &OpBar) -> &'static str {
    match (b.op.outcome, b.op.complete_ns) {
        (ViewOutcome::Ok, _) => "ok",
        (ViewOutcome::Fail, _) => "fail",
        (ViewOutcome::Info, Some(_)) => "info",
        (ViewOutcome::Info, None) => "info open",
    }
}

fn op_title(chart: &Chart, b: &OpBar) -> String {
    let o = &b.op;
    let outcome = match (o.outcome, o.complete_ns) {
        (ViewOutcome::Ok, _) => format!("ok: {}", o.result),
        (ViewOutcome::Fail, _) => "failed (did not take effect)".to_string(),
        (ViewOutcome::Info, Some(_)) => "unknown (may have taken effect)".to_string(),
        (ViewOutcome::Info, None) => "unknown (never completed)".to_string(),
    };
    let end = o.complete_ns.map_or_else(|| "…".to_string(), ms);
    let mut t = format!(
        "#{} {} on {} (process {})\n{}\n→ {}\n[{} .. {}] ms",
        o.id,
        o.name,
        chart.lanes[b.lane].name,
        o.process,
        o.detail,
        outcome,
        ms(o.invoke_ns),
        end
    );
    if b.violating {
        t.push_str("\nVIOLATION: named by a checker");
    }
    t
}

const STYLE: &str = r#"
body{font:13px/1.35 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:12px;color:#212121;background:#fff}
h1{font-size:18px;margin:0 0 4px}
.verdict{font-weight:600;padding:1px 6px;border-radius:3px;color:#fff;background:#2e7d32}
.verdict.safety,.verdict.crash,.verdict.nondet{background:#c62828}
.verdict.liveness,.verdict.inconcl{background:#ef6c00}
.stats{color:#555;margin:4px 0}
ol.violations{margin:6px 0;padding-left:22px}
ol.violations li{margin:4px 0}
ol.violations summary{font:12px/1.3 ui-monospace,Menlo,Consolas,monospace;cursor:pointer;color:#b71c1c}
ol.violations pre{margin:2px 0;font:12px/1.3 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;max-height:240px;overflow:auto;background:#fff3f3;border-left:3px solid #d50000;padding:4px 6px}
a.zoom{margin-left:8px}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:6px 0;color:#333}
.legend span{display:inline-flex;align-items:center;gap:4px}
.legend i{display:inline-block;width:18px;height:10px;border:1px solid #0003}
.help{color:#777;font-size:12px}
#wrap{overflow-x:auto;border:1px solid #ddd}
svg{font:11px system-ui,sans-serif;user-select:none;cursor:grab;display:block}
svg.dragging{cursor:grabbing}
.lane-bg{fill:#fafafa}.lane-bg.odd{fill:#f0f0f0}
.lane-name{fill:#212121;font-weight:600}.lane-kind{fill:#888;font-size:9px}
.tick{stroke:#ccc;stroke-width:1}.tick-label{fill:#555}
.phase{stroke:#1b5e20;stroke-width:1.5;stroke-dasharray:5 3}.phase.end{stroke:#424242}
.phase-label{fill:#1b5e20;font-weight:600}
.band{stroke:none}
.b-partition,.b-partition_one_way{fill:#2962ff;fill-opacity:.16}
.b-cut_link{fill:#00b8d4;fill-opacity:.2}
.b-kill{fill:#d50000;fill-opacity:.2}
.b-pause{fill:#aa00ff;fill-opacity:.16}
.b-clock_skew,.b-clock_drift{fill:#ffd600;fill-opacity:.28}
.b-packet_loss{fill:#795548;fill-opacity:.1}
.b-latency{fill:#607d8b;fill-opacity:.1}
.band-label{font-size:10px;fill:#333;pointer-events:none}
.msg{stroke:#37474f;stroke-opacity:.28;stroke-width:.8}
.op{stroke:#0005;stroke-width:.5}
.op.ok{fill:#43a047}.op.fail{fill:#9e9e9e}.op.info{fill:#fb8c00}.op.open{fill-opacity:.45}
.op.viol{stroke:#d50000;stroke-width:2.5}
.viol-flag{fill:#d50000;stroke:#fff;stroke-width:.8}
.mk-kill{stroke:#d50000;stroke-width:2.5}
.mk-restart{fill:#2e7d32}
.mk-pause,.mk-resume{fill:#aa00ff}
.mk-clock-jump{fill:#ff6f00;stroke:#000;stroke-width:.5}
.mk-skipped{fill:none;stroke:#757575;stroke-width:1.2}
"#;

const SCRIPT: &str = r#"
(function(){
  var svg=document.getElementById('chart');
  var L=+svg.getAttribute('data-left'),W=+svg.getAttribute('data-plot-width'),END=+svg.getAttribute('data-end-ms'),H=+svg.getAttribute('data-height'),TOP=+svg.getAttribute('data-axis-height');
  var spans=svg.querySelectorAll('[data-t0]'),marks=svg.querySelectorAll('[data-t]');
  var axis=document.getElementById('axis'),win=document.getElementById('window'),NS='http://www.w3.org/2000/svg';
  var a=0,b=END,MIN=Math.max(END/1e6,0.01);
  function X(t){return L+(t-a)/(b-a)*W;}
  function tickStep(span){var s=Math.pow(10,Math.floor(Math.log10(Math.max(span,1e-9)/14)));for(var i=0;i<4;i++){var m=[1,2,5,10][i];if(span/(s*m)<=14)return s*m;}return s*10;}
  function el(n,attrs,text){var e=document.createElementNS(NS,n);for(var k in attrs)e.setAttribute(k,attrs[k]);if(text!==undefined)e.textContent=text;return e;}
  function drawAxis(){
    while(axis.firstChild)axis.removeChild(axis.firstChild);
    var st=tickStep(b-a),dec=st>=1?0:Math.min(6,Math.ceil(-Math.log10(st)));
    for(var t=Math.ceil(a/st)*st;t<=b+1e-9;t+=st){var x=X(t);
      axis.appendChild(el('line',{'class':'tick',x1:x,x2:x,y1:TOP-6,y2:H}));
      axis.appendChild(el('text',{'class':'tick-label',x:x+2,y:TOP-10},(t/1000).toFixed(dec+3>3?dec+3:3).replace(/\.?0+$/,'')+' s'));}
  }
  function draw(){
    for(var i=0;i<spans.length;i++){var e=spans[i],t0=+e.getAttribute('data-t0'),t1=+e.getAttribute('data-t1'),tag=e.tagName;
      if(tag==='line'){e.setAttribute('x1',X(t0));e.setAttribute('x2',X(t1));}
      else if(tag==='text'){e.setAttribute('x',X(t0)+2);if(e.getAttribute('class')==='band-label'){e.style.display='';if(e.getComputedTextLength()>X(t1)-X(t0)-2)e.style.display='none';}}
      else{var x0=X(t0);e.setAttribute('x',x0);e.setAttribute('width',Math.max(X(t1)-x0,1.5));}}
    for(var j=0;j<marks.length;j++){var m=marks[j];m.setAttribute('transform','translate('+X(+m.getAttribute('data-t'))+','+m.getAttribute('data-y')+')');}
    drawAxis();
    win.textContent='showing '+(a/1000).toFixed(3)+' s .. '+(b/1000).toFixed(3)+' s of '+(END/1000).toFixed(3)+' s';
  }
  function clamp(na,nb){var s=Math.min(Math.max(nb-na,MIN),END);if(na<0){na=0;}if(na+s>END){na=END-s;}a=na;b=na+s;}
  function tAt(ev){var r=svg.getBoundingClientRect();return a+(ev.clientX-r.left-L)/W*(b-a);}
  svg.addEventListener('wheel',function(ev){ev.preventDefault();var t=tAt(ev),f=ev.deltaY<0?0.8:1.25,s=(b-a)*f;clamp(t-(t-a)*f,t-(t-a)*f+s);draw();},{passive:false});
  var drag=null;
  svg.addEventListener('mousedown',function(ev){drag={x:ev.clientX,a:a,b:b};svg.classList.add('dragging');});
  window.addEventListener('mousemove',function(ev){if(!drag)return;var dt=(drag.x-ev.clientX)/W*(drag.b-drag.a);clamp(drag.a+dt,drag.b+dt);draw();});
  window.addEventListener('mouseup',function(){drag=null;svg.classList.remove('dragging');});
  svg.addEventListener('dblclick',function(){a=0;b=END;draw();});
  function fromHash(){var m=/^#t=([0-9.]+)\.\.([0-9.]+)$/.exec(location.hash);if(m){clamp(+m[1],+m[2]);}}
  window.addEventListener('hashchange',function(){fromHash();draw();});
  fromHash();
  draw();
  svg.setAttribute('data-rendered',String(spans.length+marks.length));
})();
"#;

/// A mark's shape, centred on (0, 0).
fn mark_shape(kind: MarkKind) -> &'static str {
    match kind {
        MarkKind::Kill => r#"<path class="mk-kill" d="M-5,-5L5,5M-5,5L5,-5"/>"#,
        MarkKind::Restart => r#"<path class="mk-restart" d="M-4,-6L6,0L-4,6Z"/>"#,
        MarkKind::Pause => r#"<path class="mk-pause" d="M-4,-6h3v12h-3zM1,-6h3v12h-3z"/>"#,
        MarkKind::Resume => r#"<path class="mk-resume" d="M-3,-5L4,0L-3,5Z"/>"#,
        MarkKind::ClockJump => r#"<path class="mk-clock-jump" d="M0,-7L5,0L0,7L-5,0Z"/>"#,
        MarkKind::Skipped => r#"<circle class="mk-skipped" r="4"/>"#,
    }
}

fn legend() -> String {
    let mut s = String::from(r#"<div class="legend">"#);
    let swatch = |s: &mut String, style: &str, label: &str| {
        let _ = write!(s, r#"<span><i style="{style}"></i>{label}</span>"#);
    };
    swatch(&mut s, "background:#43a047", "op ok");
    swatch(&mut s, "background:#9e9e9e", "op failed");
    swatch(&mut s, "background:#fb8c00", "op unknown (maybe applied)");
    swatch(&mut s, "background:#fb8c0073", "op never completed");
    swatch(&mut s, "background:#fff;border:2.5px solid #d50000", "op named by a violation");
    swatch(&mut s, "background:#2962ff29", "partition");
    swatch(&mut s, "background:#00b8d433", "cut link");
    swatch(&mut s, "background:#d5000033", "killed");
    swatch(&mut s, "background:#aa00ff29", "paused");
    swatch(&mut s, "background:#ffd60047", "clock skew/drift");
    swatch(&mut s, "background:#7955481a", "packet loss (all)");
    swatch(&mut s, "background:#607d8b1a", "latency (all)");
    let sym = |s: &mut String, kind: MarkKind, label: &str| {
        let _ = write!(
            s,
            r#"<span><svg width="14" height="14" viewBox="-7 -7 14 14" style="cursor:default">{}</svg>{label}</span>"#,
            mark_shape(kind)
        );
    };
    sym(&mut s, MarkKind::Kill, "kill");
    sym(&mut s, MarkKind::Restart, "restart");
    sym(&mut s, MarkKind::Pause, "pause");
    sym(&mut s, MarkKind::Resume, "resume");
    sym(&mut s, MarkKind::ClockJump, "clock jump");
    sym(&mut s, MarkKind::Skipped, "fault skipped (node down)");
    s.push_str(
        r##"<span><svg width="24" height="10" style="cursor:default"><line class="msg" x1="1" y1="5" x2="20" y2="5" marker-end="url(#arrow)"/></svg>message</span>"##,
    );
    s.push_str("</div>\n");
    s
}

/// The whole page.
pub fn render(chart: &Chart) -> String {
    let g = Geometry::new(chart);
    let width = LABEL_W + PLOT_W + RIGHT_PAD;
    let mut h = String::new();
    let _ = writeln!(h, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">");
    let _ = writeln!(h, "<title>{} — {}</title>", esc(&chart.title), chart.verdict);
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(
        h,
        "<h1>{} <span class=\"verdict {v}\">{v}</span></h1>",
        esc(&chart.title),
        v = chart.verdict
    );
    let _ = writeln!(
        h,
        "<div class=\"stats\">trace-hash {} · chaos until the heal at {} s, clients stop at {} s, axis to {} s · {} lanes · {} operations ({} named by violations)</div>",
        esc(&chart.trace_hash),
        secs(chart.heal_ns),
        secs(chart.run_end_ns),
        secs(chart.end_ns),
        chart.lanes.len(),
        chart.ops.len(),
        chart.ops.iter().filter(|o| o.violating).count()
    );
    let mut msg_line =
        format!("{} messages delivered, {} drawn", chart.messages_delivered, chart.messages.len());
    if chart.messages_omitted() > 0 {
        let _ = write!(
            msg_line,
            " ({} omitted: at most {} are drawn, evenly spread)",
            chart.messages_omitted(),
            chart.messages.len()
        );
    }
    if chart.messages_undelivered > 0 {
        let _ = write!(msg_line, "; {} sent but never received (not drawn)", chart.messages_undelivered);
    }
    if chart.messages_unrecorded > 0 {
        let _ = write!(msg_line, "; {} not recorded (over the recording cap)", chart.messages_unrecorded);
    }
    let _ = writeln!(h, "<div class=\"stats\">{}</div>", esc(&msg_line));
    if chart.violations.is_empty() {
        let _ = writeln!(h, "<div class=\"stats\">No violations.</div>");
    } else {
        let _ = writeln!(h, "<ol class=\"violations\">");
        for v in &chart.violations {
            let (named, zoom) = match zoom_window(chart, &v.ops) {
                None => ("names no operations (nothing highlighted)".to_string(), String::new()),
                Some((t0, t1)) => {
                    let ids: Vec<String> = v.ops.iter().map(|i| format!("#{i}")).collect();
                    let zoom = format!(
                        " <a href=\"#t={t0}..{t1}\" class=\"zoom\" data-from=\"{t0}\" data-to=\"{t1}\">zoom to them</a>",
                        t0 = ms(t0),
                        t1 = ms(t1)
                    );
                    (format!("highlights {}", ids.join(" ")), zoom)
                }
            };
            let first = v.message.lines().next().unwrap_or("");
            let _ = writeln!(
                h,
                "<li><b>[{}]</b> {} — {}{zoom}<details><summary>{}</summary><pre>{}</pre></details></li>",
                esc(&v.checker),
                v.class,
                esc(&named),
                esc(first),
                esc(&v.message)
            );
        }
        let _ = writeln!(h, "</ol>");
    }
    h.push_str(&legend());
    let _ = writeln!(
        h,
        "<div class=\"help\">Wheel: zoom around the pointer · drag: pan · double-click: whole run · hover for details. <span id=\"window\"></span></div>"
    );

    // The SVG.
    let _ = writeln!(h, "<div id=\"wrap\">");
    let _ = writeln!(
        h,
        "<svg id=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{hh:.0}\" viewBox=\"0 0 {w:.0} {hh:.0}\" data-left=\"{LABEL_W}\" data-plot-width=\"{PLOT_W}\" data-end-ms=\"{}\" data-height=\"{hh:.0}\" data-axis-height=\"{AXIS_H}\">",
        ms(chart.end_ns),
        w = width,
        hh = g.height
    );
    let _ = writeln!(
        h,
        "<defs><marker id=\"arrow\" viewBox=\"0 0 6 6\" refX=\"6\" refY=\"3\" markerWidth=\"6\" markerHeight=\"6\" orient=\"auto\"><path d=\"M0,0L6,3L0,6Z\" fill=\"#37474f\" fill-opacity=\".6\"/></marker><clipPath id=\"plot\"><rect x=\"{LABEL_W}\" y=\"0\" width=\"{PLOT_W}\" height=\"{:.0}\"/></clipPath></defs>",
        g.height
    );
    // Lane backgrounds and names (not zoomed).
    for (i, l) in chart.lanes.iter().enumerate() {
        let odd = if i % 2 == 1 { " odd" } else { "" };
        let _ = writeln!(
            h,
            "<rect class=\"lane-bg{odd}\" x=\"0\" y=\"{:.1}\" width=\"{width:.0}\" height=\"{:.1}\"/><text class=\"lane-name\" x=\"6\" y=\"{:.1}\">{}</text><text class=\"lane-kind\" x=\"6\" y=\"{:.1}\">{}</text>",
            g.lane_top[i],
            g.lane_h[i],
            g.mid(i) + 1.0,
            esc(&l.name),
            g.mid(i) + 11.0,
            l.kind.name()
        );
    }
    // Everything on the time axis, clipped to the plot.
    let _ = writeln!(h, "<g clip-path=\"url(#plot)\">");
    let _ = writeln!(h, "<g id=\"axis\">");
    let step = tick_step_ms(chart.end_ns / 1_000_000);
    let mut t = 0u64;
    while t * 1_000_000 <= chart.end_ns {
        let x = g.x(t * 1_000_000);
        let _ = writeln!(
            h,
            "<line class=\"tick\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.0}\" y2=\"{:.0}\"/><text class=\"tick-label\" x=\"{:.1}\" y=\"{:.0}\">{} s</text>",
            AXIS_H - 6.0,
            g.height,
            x + 2.0,
            AXIS_H - 10.0,
            ms(t * 1_000_000).trim_end_matches('0').trim_end_matches('.')
        );
        t += step;
    }
    let _ = writeln!(h, "</g>");
    // Fault bands.
    let plot_top = AXIS_H;
    let plot_h = g.height - 8.0 - AXIS_H;
    for b in &chart.bands {
        let title = format!("{} [{} .. {}] ms", b.label, ms(b.start_ns), ms(b.end_ns));
        let (x0, x1) = (g.x(b.start_ns), g.x(b.end_ns));
        let rects: Vec<(f64, f64)> = if b.lanes.is_empty() {
            vec![(plot_top, plot_h)]
        } else {
            b.lanes.iter().map(|&l| (g.lane_top[l], g.lane_h[l])).collect()
        };
        for (y, hh) in &rects {
            let _ = writeln!(
                h,
                "<rect class=\"band b-{}\" data-t0=\"{}\" data-t1=\"{}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{hh:.1}\"><title>{}</title></rect>",
                b.kind,
                ms(b.start_ns),
                ms(b.end_ns),
                (x1 - x0).max(1.5),
                esc(&title)
            );
        }
        let label_y = rects.first().map_or(plot_top, |r| r.0) + 9.0;
        let _ = writeln!(
            h,
            "<text class=\"band-label\" data-t0=\"{}\" data-t1=\"{}\" x=\"{:.1}\" y=\"{label_y:.1}\">{}</text>",
            ms(b.start_ns),
            ms(b.end_ns),
            x0 + 2.0,
            esc(&b.label)
        );
    }
    // Heal and end of the run.
    for (ns, class, label) in [(chart.heal_ns, "phase", "heal"), (chart.run_end_ns, "phase end", "end")] {
        let x = g.x(ns);
        let _ = writeln!(
            h,
            "<line class=\"{class}\" data-t0=\"{t}\" data-t1=\"{t}\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.0}\" y2=\"{:.0}\"/><text class=\"phase-label\" data-t0=\"{t}\" data-t1=\"{t}\" x=\"{:.1}\" y=\"{:.0}\">{label}</text>",
            AXIS_H - 4.0,
            g.height,
            x + 2.0,
            AXIS_H - 1.0,
            t = ms(ns)
        );
    }
    // Messages (under the operations).
    let _ = writeln!(h, "<g class=\"messages\">");
    for m in &chart.messages {
        let _ = writeln!(
            h,
            "<line class=\"msg\" data-t0=\"{}\" data-t1=\"{}\" x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" marker-end=\"url(#arrow)\"><title>{} → {}, {} bytes, sent {} ms, received {} ms</title></line>",
            ms(m.sent_ns),
            ms(m.received_ns),
            g.x(m.sent_ns),
            g.mid(m.from),
            g.x(m.received_ns),
            g.mid(m.to),
            esc(&chart.lanes[m.from].name),
            esc(&chart.lanes[m.to].name),
            m.bytes,
            ms(m.sent_ns),
            ms(m.received_ns)
        );
    }
    let _ = writeln!(h, "</g>");
    // Operation bars; violating ones last so their outline is on top.
    let _ = writeln!(h, "<g class=\"ops\">");
    let mut order: Vec<&OpBar> = chart.ops.iter().filter(|o| !o.violating).collect();
    order.extend(chart.ops.iter().filter(|o| o.violating));
    for b in order {
        let y = g.lane_top[b.lane] + LANE_PAD + b.row as f64 * ROW_H + 1.0;
        let (x0, x1) = (g.x(b.op.invoke_ns), g.x(b.end_ns));
        let viol = if b.violating { " viol" } else { "" };
        let _ = writeln!(
            h,
            "<rect class=\"op {}{viol}\" data-op=\"{}\" data-t0=\"{}\" data-t1=\"{}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}</title></rect>",
            outcome_class(b),
            b.op.id,
            ms(b.op.invoke_ns),
            ms(b.end_ns),
            (x1 - x0).max(1.5),
            ROW_H - 3.0,
            esc(&op_title(chart, b))
        );
    }
    // A flag above each violating bar, the same size at every zoom.
    for b in chart.ops.iter().filter(|o| o.violating) {
        let y = g.lane_top[b.lane] + LANE_PAD + b.row as f64 * ROW_H - 1.0;
        let _ = writeln!(
            h,
            "<g class=\"viol-flag\" data-t=\"{}\" data-y=\"{y:.1}\" transform=\"translate({:.1},{y:.1})\"><path d=\"M-6,-9L6,-9L0,0Z\"/><title>#{} named by a violation</title></g>",
            ms(b.op.invoke_ns),
            g.x(b.op.invoke_ns),
            b.op.id
        );
    }
    let _ = writeln!(h, "</g>");
    // Marks.
    for m in &chart.marks {
        let y = g.mid(m.lane);
        let _ = writeln!(
            h,
            "<g class=\"mark\" data-t=\"{}\" data-y=\"{y:.1}\" transform=\"translate({:.1},{y:.1})\">{}<title>{} at {} ms</title></g>",
            ms(m.at_ns),
            g.x(m.at_ns),
            mark_shape(m.kind),
            esc(&m.label),
            ms(m.at_ns)
        );
    }
    let _ = writeln!(h, "</g>");
    // Lanes of what kind, for the headless check.
    let kinds: Vec<&str> = chart.lanes.iter().map(|l| l.kind.name()).collect();
    let _ = writeln!(h, "<desc>lanes: {}</desc>", esc(&kinds.join(" ")));
    let _ = writeln!(h, "</svg>\n</div>");
    let _ = writeln!(h, "<script>{SCRIPT}</script>\n</body>\n</html>");
    h
}

#[cfg(test)]
mod tests {
    use scenarios::history::OpView;

    use super::*;
    use crate::chart::model::{Band, ChartViolation, Lane, LaneKind, Mark, Message};

    fn chart() -> Chart {
        let lane = |name: &str, kind| Lane { name: name.into(), kind, rows: 1 };
        Chart {
            title: "kv <seed> 1".into(),
            verdict: "safety",
            trace_hash: "ab".into(),
            heal_ns: 1_000_000_000,
            run_end_ns: 1_500_000_000,
            end_ns: 2_000_000_000,
            lanes: vec![lane("redis", LaneKind::Service), lane("client-<0>", LaneKind::Client)],
            bands: vec![Band {
                lanes: vec![],
                start_ns: 100_000_000,
                end_ns: 200_000_000,
                kind: "packet_loss",
                label: "packet loss 20%".into(),
            }],
            marks: vec![Mark {
                lane: 0,
                at_ns: 300_000_000,
                kind: MarkKind::Kill,
                label: "kill redis".into(),
            }],
            messages: vec![Message { from: 1, to: 0, sent_ns: 1_234_567, received_ns: 2_000_000, bytes: 9 }],
            messages_delivered: 5,
            messages_undelivered: 1,
            messages_unrecorded: 0,
            ops: vec![OpBar {
                lane: 1,
                row: 0,
                op: OpView {
                    id: 7,
                    process: 2,
                    name: "Write".into(),
                    detail: "Write(\"<script>\")".into(),
                    outcome: ViewOutcome::Ok,
                    result: "Written".into(),
                    invoke_ns: 1_000_000,
                    complete_ns: Some(3_000_000),
                },
                end_ns: 3_000_000,
                violating: true,
            }],
            violations: vec![ChartViolation {
                checker: "linearizability".into(),
                class: "safety",
                message: "a & b".into(),
                ops: vec![7],
            }],
        }
    }

    #[test]
    fn text_is_escaped_for_html_and_attributes() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        let html = render(&chart());
        assert!(!html.contains("<script>\")"), "operation text is escaped");
        assert!(html.contains("Write(&quot;&lt;script&gt;&quot;)"));
        assert!(html.contains(">client-&lt;0&gt;</text>"));
        assert!(html.contains("<pre>a &amp; b</pre>"));
    }

    #[test]
    fn elements_carry_their_times_in_milliseconds() {
        let html = render(&chart());
        assert!(html.contains(r#"class="op ok viol" data-op="7" data-t0="1.000" data-t1="3.000""#), "{html}");
        assert!(html.contains(r#"class="msg" data-t0="1.234" data-t1="2.000""#));
        assert!(html.contains(r#"class="band b-packet_loss" data-t0="100.000" data-t1="200.000""#));
        assert!(html.contains(r#"class="mark" data-t="300.000""#));
        assert!(html.contains("highlights #7"));
        assert!(html.contains("4 omitted"));
    }

    #[test]
    fn the_page_fetches_nothing() {
        let html = render(&chart());
        assert!(!html.contains("src="), "no external scripts or images");
        assert!(!html.contains("href=\"http"), "no stylesheets or links");
        assert!(!html.contains("@import"));
    }

    #[test]
    fn ticks_are_one_two_or_five_times_a_power_of_ten() {
        assert_eq!(tick_step_ms(10), 1);
        assert_eq!(tick_step_ms(23_000), 2_000);
        assert_eq!(tick_step_ms(60_000), 5_000);
        assert_eq!(tick_step_ms(140_000), 10_000);
    }
}
