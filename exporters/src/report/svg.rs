//! The report's charts as inline SVG: stacked bars, lines and horizontal bars, drawn by hand so
//! that they need no fonts or scripts and the same figures give the same bytes.

use std::fmt::Write as _;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 40.0;

/// Fixed colours, distinguishable in print and for the common colour-vision deficiencies.
pub const COLOURS: [&str; 6] = [
    "#2f6db5", "#9db9d9", "#e39b3b", "#5a9e6f", "#b5482f", "#7f6aa8",
];

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round step for about five ticks up to `max`.
pub fn tick_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-9);
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|step| *step >= raw)
        .unwrap_or(10.0 * magnitude)
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value == 0.0 {
        format!("{value:.0}")
    } else if value.abs() >= 1.0 {
        format!("{value:.1}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn open(svg: &mut String, title: &str, height: f64) {
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" role="img" class="chart" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11"><title>{0}</title><rect width="100%" height="100%" fill="#ffffff"/><text x="{LEFT}" y="18" font-size="13" font-weight="bold">{0}</text>"##,
        escape(title)
    );
}

fn empty(svg: &mut String) -> String {
    svg.push_str(r#"<text x="70" y="80">nothing to draw in this period</text></svg>"#);
    std::mem::take(svg)
}

/// Y grid and ticks from 0 to a round top above `max`; returns the top.
fn y_axis(svg: &mut String, max: f64, unit: &str) -> f64 {
    let step = tick_step(max.max(1e-9));
    let top = (max.max(1e-9) / step).ceil() * step;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let y = TOP + plot_h - tick / top * plot_h;
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            number(tick)
        );
        tick += step;
    }
    let _ = write!(
        svg,
        r#"<text x="14" y="{0:.1}" transform="rotate(-90 14 {0:.1})" text-anchor="middle">{1}</text>"#,
        TOP + plot_h / 2.0,
        escape(unit)
    );
    top
}

fn legend(svg: &mut String, names: &[&str]) {
    for (index, name) in names.iter().enumerate() {
        let y = TOP + 10.0 + index as f64 * 18.0;
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" y="{:.1}" width="12" height="12" fill="{}"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            WIDTH - RIGHT + 12.0,
            y - 10.0,
            COLOURS[index % COLOURS.len()],
            WIDTH - RIGHT + 30.0,
            y,
            escape(name)
        );
    }
}

/// Labels under the x axis, at most about twelve of them.
fn x_labels(svg: &mut String, labels: &[String], x_of: impl Fn(usize) -> f64) {
    let every = labels.len().div_ceil(12).max(1);
    for (index, label) in labels.iter().enumerate().step_by(every) {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x_of(index),
            HEIGHT - BOTTOM + 16.0,
            escape(label)
        );
    }
}

/// Stacked bars: one bar per label, one layer per series (negative values drawn as zero).
pub fn stacked_bars(
    title: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, Vec<f64>)],
) -> String {
    let mut svg = String::new();
    open(&mut svg, title, HEIGHT);
    if labels.is_empty() {
        return empty(&mut svg);
    }
    let totals: Vec<f64> = (0..labels.len())
        .map(|index| {
            series
                .iter()
                .map(|(_, values)| values[index].max(0.0))
                .sum()
        })
        .collect();
    let top = y_axis(&mut svg, totals.iter().copied().fold(0.0, f64::max), unit);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / labels.len() as f64;
    let bar = (slot * 0.7).max(1.0);
    for index in 0..labels.len() {
        let mut base = 0.0;
        for (layer, (_, values)) in series.iter().enumerate() {
            let value = values[index].max(0.0);
            let y = TOP + plot_h - (base + value) / top * plot_h;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{y:.1}" width="{bar:.1}" height="{:.1}" fill="{}"/>"#,
                LEFT + slot * index as f64 + (slot - bar) / 2.0,
                value / top * plot_h,
                COLOURS[layer % COLOURS.len()]
            );
            base += value;
        }
    }
    x_labels(&mut svg, labels, |index| LEFT + slot * (index as f64 + 0.5));
    let names: Vec<&str> = series.iter().map(|(name, _)| *name).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// Lines with points; a missing value (`None`) breaks its line.
pub fn lines(
    title: &str,
    unit: &str,
    labels: &[String],
    series: &[(&str, Vec<Option<f64>>)],
) -> String {
    let mut svg = String::new();
    open(&mut svg, title, HEIGHT);
    if labels.is_empty() {
        return empty(&mut svg);
    }
    let max = series
        .iter()
        .flat_map(|(_, values)| values.iter().flatten().copied())
        .fold(0.0, f64::max);
    let top = y_axis(&mut svg, max, unit);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / labels.len() as f64;
    let x = |index: usize| LEFT + slot * (index as f64 + 0.5);
    for (layer, (_, values)) in series.iter().enumerate() {
        let colour = COLOURS[layer % COLOURS.len()];
        let mut path = String::new();
        let mut pen_down = false;
        for (index, value) in values.iter().enumerate() {
            let Some(value) = value else {
                pen_down = false;
                continue;
            };
            let y = TOP + plot_h - value / top * plot_h;
            let _ = write!(
                path,
                "{}{:.1},{y:.1} ",
                if pen_down { "L" } else { "M" },
                x(index)
            );
            pen_down = true;
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#,
                x(index)
            );
        }
        if !path.is_empty() {
            let _ = write!(
                svg,
                r#"<path d="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
                path.trim_end()
            );
        }
    }
    x_labels(&mut svg, labels, x);
    let names: Vec<&str> = series.iter().map(|(name, _)| *name).collect();
    legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// Horizontal bars, one per item, labelled with their value.
pub fn horizontal_bars(title: &str, unit: &str, items: &[(String, f64)]) -> String {
    let row = 20.0;
    let height = TOP + 10.0 + row * items.len().max(1) as f64 + 10.0;
    let mut svg = String::new();
    open(&mut svg, title, height);
    if items.is_empty() {
        return empty(&mut svg);
    }
    let label_w = 200.0;
    let max = items
        .iter()
        .map(|(_, v)| v.max(0.0))
        .fold(0.0, f64::max)
        .max(1e-9);
    let plot_w = WIDTH - label_w - 120.0;
    for (index, (label, value)) in items.iter().enumerate() {
        let y = TOP + 10.0 + row * index as f64;
        let shown: String = label.chars().take(30).collect();
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text><rect x="{label_w:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}">{} {}</text>"#,
            label_w - 6.0,
            y + 13.0,
            escape(&shown),
            y + 2.0,
            (value.max(0.0) / max * plot_w).max(0.5),
            row - 6.0,
            COLOURS[0],
            label_w + (value.max(0.0) / max * plot_w) + 6.0,
            y + 13.0,
            number(*value),
            escape(unit)
        );
    }
    svg.push_str("</svg>");
    svg
}
