//! chart.svg: grouped bars (one group per workload, one bar per target) for
//! throughput and for p99 latency, with min–max whiskers. Hand-written SVG:
//! no plotting dependency for two bar charts.

use std::fmt::Write as _;

use crate::stats::{find, Spread, Summary};

const WIDTH: f64 = 1000.0;
const PANEL: f64 = 300.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const GAP: f64 = 70.0;
const COLORS: [&str; 6] = [
    "#7f7f7f", "#d95f02", "#1b9e77", "#7570b3", "#e7298a", "#66a61e",
];

/// The chart for `summaries`, workloads and targets in the given order;
/// `rate` names the throughput's unit (`ops/s`, `req/s`).
pub(crate) fn chart(
    title: &str,
    rate: &str,
    summaries: &[Summary],
    workloads: &[String],
    targets: &[&str],
) -> String {
    let height = TOP + 2.0 * PANEL + 2.0 * GAP;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    for (i, target) in targets.iter().enumerate() {
        let x = LEFT + i as f64 * 150.0;
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="38" width="14" height="14" fill="{color}"/><text x="{}" y="50">{}</text>"#,
            x + 20.0,
            escape(target)
        );
    }
    let throughput = format!("throughput (k{rate}, higher is better)");
    let panels = [
        Panel::new(&throughput, |s| s.ops_per_sec, 1e-3),
        Panel::new("p99 latency (µs, lower is better)", |s| s.p99_us, 1.0),
    ];
    for (i, mut panel) in panels.into_iter().enumerate() {
        panel.top = TOP + GAP / 2.0 + i as f64 * (PANEL + GAP);
        panel.draw(&mut svg, summaries, workloads, targets);
    }
    svg.push_str("</svg>\n");
    svg
}

struct Panel<'a> {
    top: f64,
    label: &'a str,
    measure: fn(&Summary) -> Spread,
    scale: f64,
}

impl<'a> Panel<'a> {
    fn new(label: &'a str, measure: fn(&Summary) -> Spread, scale: f64) -> Self {
        Self {
            top: 0.0,
            label,
            measure,
            scale,
        }
    }

    fn draw(
        &self,
        svg: &mut String,
        summaries: &[Summary],
        workloads: &[String],
        targets: &[&str],
    ) {
        let plot_w = WIDTH - LEFT - RIGHT;
        let bottom = self.top + PANEL;
        let max = summaries
            .iter()
            .map(|s| (self.measure)(s).max * self.scale)
            .fold(0.0, f64::max);
        let (step, top_value) = axis(max);
        let y = |v: f64| bottom - v / top_value * PANEL;
        let _ = writeln!(
            svg,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
            self.top - 10.0,
            escape(self.label)
        );
        let mut tick = 0.0;
        while tick <= top_value + step / 2.0 {
            let ty = y(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" x2="{}" y1="{ty:.1}" y2="{ty:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                ty + 4.0,
                short(tick)
            );
            tick += step;
        }
        let group_w = plot_w / workloads.len().max(1) as f64;
        let bar_w = group_w * 0.8 / targets.len().max(1) as f64;
        for (g, workload) in workloads.iter().enumerate() {
            let gx = LEFT + g as f64 * group_w + group_w * 0.1;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                gx + group_w * 0.4,
                bottom + 18.0,
                escape(workload)
            );
            for (b, target) in targets.iter().enumerate() {
                let Some(s) = find(summaries, target, workload) else {
                    continue;
                };
                let m = (self.measure)(s);
                let (med, lo, hi) = (
                    m.median * self.scale,
                    m.min * self.scale,
                    m.max * self.scale,
                );
                let x = gx + b as f64 * bar_w;
                let cx = x + bar_w * 0.45;
                let color = COLORS[b % COLORS.len()];
                let _ = writeln!(
                    svg,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: {} ({}–{})</title></rect>"#,
                    y(med),
                    bar_w * 0.9,
                    bottom - y(med),
                    escape(target),
                    escape(workload),
                    short(med),
                    short(lo),
                    short(hi)
                );
                let _ = writeln!(
                    svg,
                    r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/><text x="{cx:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                    y(lo),
                    y(hi),
                    y(hi) - 4.0,
                    short(med)
                );
            }
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" x2="{}" y1="{bottom}" y2="{bottom}" stroke="black"/>"#,
            WIDTH - RIGHT
        );
    }
}

/// A round tick step (1, 2 or 5 × 10^n) giving about 5 ticks, and the axis top.
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 5.0);
    }
    let raw = max / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step, (max / step).ceil() * step)
}

fn short(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
