//! Latency-by-percentile plots (SVG), in the style of HdrHistogram's plotter: the x axis is
//! logarithmic in 1/(1-q), so the tail (99%, 99.9%, 99.99%) gets as much room as the median.

use hdrhistogram::Histogram;
use std::fmt::Write;

const W: f64 = 900.0;
const H: f64 = 520.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
// Twelve, so that a flow's steps get a colour each (the first six as before).
const COLOURS: [&str; 12] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#000000", "#aec7e8",
];

/// An SVG plot of latency (ms) by percentile for each named histogram (values in µs).
pub fn percentile_svg(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    // x = log10(1 / (1 - q)) from q = 0 to 99.999%.
    let max_x = 5.0;
    let points: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, h)| {
            (0..=500)
                .map(|i| {
                    let x = max_x * i as f64 / 500.0;
                    let q = 1.0 - 10f64.powf(-x);
                    (x, h.value_at_quantile(q.min(1.0)) as f64 / 1000.0)
                })
                .collect()
        })
        .collect();
    let max_y = points
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(0.001);
    let top_y = nice_ceiling(max_y);
    let sx = |x: f64| LEFT + (W - LEFT - RIGHT) * x / max_x;
    let sy = |y: f64| H - BOTTOM - (H - TOP - BOTTOM) * y / top_y;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = write!(
        svg,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="16">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
    {
        let x = sx(i as f64);
        let _ = write!(
            svg,
            r##"<line x1="{x}" y1="{TOP}" x2="{x}" y2="{}" stroke="#ddd"/><text x="{x}" y="{}" text-anchor="middle">{label}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0
        );
    }
    for i in 0..=5 {
        let v = top_y * i as f64 / 5.0;
        let y = sy(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            format_ms(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text><text x="20" y="{}" transform="rotate(-90 20 {})" text-anchor="middle">latency (ms)</text>"#,
        W / 2.0,
        H - 15.0,
        H / 2.0,
        H / 2.0
    );
    for (i, ((name, h), pts)) in series.iter().zip(&points).enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        let ly = TOP + 16.0 * i as f64 + 8.0;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{}" width="12" height="3" fill="{colour}"/><text x="{}" y="{}">{} (n={}, max {} ms)</text>"#,
            LEFT + 10.0,
            ly - 3.0,
            LEFT + 28.0,
            ly + 2.0,
            escape(name),
            h.len(),
            format_ms(h.max() as f64 / 1000.0)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn format_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
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

    #[test]
    fn plot_has_one_line_per_series_and_a_scale_that_holds_the_max() {
        let mut a = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut b = a.clone();
        for v in 1..=1000u64 {
            a.record(v * 10).unwrap();
            b.record(v * 30).unwrap();
        }
        let svg = percentile_svg("t <1>", &[("sdsim", &a), ("peer", &b)]);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.contains("99.99%"));
        // b's max is 30 ms: the axis tops at 50.
        assert!(svg.contains(">50.00<"), "{svg}");
    }
}
