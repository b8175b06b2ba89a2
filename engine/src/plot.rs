//! Goodput over time as an SVG chart: offered load, attempts and goodput (requests per
//! second) per window of a run's `goodput` series, with the faults shaded and the
//! metastability verdict in the title. Plain SVG 1.1 text, no dependency: a README shows it
//! as an image.

use crate::design::{Design, FaultAction};
use crate::engine::{GoodputPoint, Metastability};
use std::fmt::Write;

const W: f64 = 760.0;
const H: f64 = 340.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 44.0;

/// A line of the chart: its name, its colour and its value in a window.
type Line = (&'static str, &'static str, fn(&GoodputPoint) -> f64);

/// The chart of `points` (one per goodput window); `faults` are (start, end) in simulated
/// seconds, shaded; `verdict` goes into the title when the run has one.
pub fn goodput_svg(
    title: &str,
    points: &[GoodputPoint],
    faults: &[(f64, f64)],
    verdict: Option<&Metastability>,
) -> String {
    let window = match points {
        [a, b, ..] => b.t_s - a.t_s,
        _ => 1.0,
    };
    let x_max = points
        .last()
        .map_or(1.0, |p| p.t_s + window)
        .max(f64::EPSILON);
    let y_max = nice_ceiling(
        points
            .iter()
            .flat_map(|p| [p.offered_per_s, p.attempts_per_s, p.goodput_per_s])
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.05,
    );
    let (plot_w, plot_h) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |t: f64| LEFT + plot_w * t / x_max;
    let sy = |v: f64| TOP + plot_h - plot_h * v / y_max;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>"
    );
    let heading = match verdict {
        Some(v) => format!("{title} — {}", v.verdict),
        None => title.to_string(),
    };
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"24\" font-size=\"15\">{}</text>",
        escape(&heading)
    );
    for &(start, end) in faults {
        let (a, b) = (sx(start.clamp(0.0, x_max)), sx(end.clamp(0.0, x_max)));
        let _ = writeln!(
            svg,
            "<rect x=\"{a:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"#f3d6d6\"/>",
            (b - a).max(1.5)
        );
    }
    for i in 0..=5 {
        let v = y_max * f64::from(i) / 5.0;
        let y = sy(v);
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e4e4e4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + plot_w,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
        let t = x_max * f64::from(i) / 5.0;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} s</text>",
            sx(t),
            TOP + plot_h + 16.0,
            trim(t)
        );
    }
    let _ = writeln!(
        svg,
        "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{plot_w}\" height=\"{plot_h}\" fill=\"none\" stroke=\"#888\"/>\n<text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">requests/s</text>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">simulated time</text>",
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        LEFT + plot_w / 2.0,
        H - 6.0
    );
    let lines: [Line; 3] = [
        ("offered", "#7f7f7f", |p| p.offered_per_s),
        ("attempts", "#ff7f0e", |p| p.attempts_per_s),
        ("goodput", "#1f77b4", |p| p.goodput_per_s),
    ];
    for (k, (name, colour, value)) in lines.iter().enumerate() {
        // Each window's rate held over the window: a step line.
        let mut path = Vec::with_capacity(points.len() * 2);
        for p in points {
            let y = sy(value(p));
            path.push(format!("{:.1},{y:.1}", sx(p.t_s)));
            path.push(format!("{:.1},{y:.1}", sx(p.t_s + window)));
        }
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{}\" points=\"{}\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" fill=\"{colour}\">{name}</text>",
            if *name == "goodput" { 2.0 } else { 1.2 },
            path.join(" "),
            LEFT + plot_w + 10.0,
            TOP + 14.0 + 16.0 * k as f64
        );
    }
    if !faults.is_empty() {
        let _ = writeln!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"#f3d6d6\"/><text x=\"{:.1}\" y=\"{:.1}\">fault</text>",
            LEFT + plot_w + 10.0,
            TOP + 14.0 + 16.0 * 3.0 - 9.0,
            LEFT + plot_w + 24.0,
            TOP + 14.0 + 16.0 * 3.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// The faults of `design` as (start, end) in simulated seconds, for [`goodput_svg`] (a fault
/// without a duration lasts to `end`; a flush is an instant).
pub fn fault_windows(design: &Design, end: f64) -> Vec<(f64, f64)> {
    design
        .faults
        .iter()
        .map(|f| match (&f.action, f.duration) {
            (FaultAction::Flush { .. }, _) => (f.at, f.at),
            (_, Some(d)) => (f.at, f.at + d),
            (_, None) => (f.at, end),
        })
        .collect()
}

/// 1, 2 or 5 × a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let power = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * power >= v {
            return step * power;
        }
    }
    10.0 * power
}

fn trim(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round())
    } else {
        format!("{v:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(t_s: f64, offered: f64, attempts: f64, good: f64) -> GoodputPoint {
        GoodputPoint {
            t_s,
            offered_per_s: offered,
            attempts_per_s: attempts,
            goodput_per_s: good,
        }
    }

    #[test]
    fn draws_three_step_lines_the_faults_and_an_escaped_title() {
        let points = [
            point(0.0, 70.0, 70.0, 70.0),
            point(10.0, 70.0, 250.0, 0.0),
            point(20.0, 70.0, 280.0, 0.0),
        ];
        let svg = goodput_svg("storm <a & b>", &points, &[(5.0, 15.0)], None);
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("storm &lt;a &amp; b&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        // Six points per line (two per window); the y axis reaches 300 (280 × 1.05 → 500).
        let goodput = svg
            .lines()
            .find(|l| l.contains("#1f77b4"))
            .expect("goodput line");
        assert_eq!(goodput.matches(',').count(), 6);
        assert!(svg.contains(">500</text>"), "{svg}");
        // The fault: 5 s to 15 s of 30 s over 550 px.
        assert!(svg.contains("<rect x=\"151.7\""), "{svg}");
        assert!(svg.contains(">fault</text>"));
    }
}
