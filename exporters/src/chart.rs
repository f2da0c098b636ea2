//! The facility's power over time as an SVG chart: stacked areas for jobs, idle devices and
//! unattributed energy (facility overhead), whose top is the site meter's measured power.
//!
//! Written by hand rather than through a plotting crate so that it needs no fonts and the same
//! figures always give the same bytes.

use std::fmt::Write as _;

use footprint_core::units::NANOS_PER_HOUR;
use footprint_proto::v1::FacilityWindow;

use crate::report::svg::{escape, tick_step};

// The plot area both power charts (this one and the forecast's) share.
pub(crate) const WIDTH: f64 = 960.0;
pub(crate) const HEIGHT: f64 = 380.0;
pub(crate) const LEFT: f64 = 64.0;
pub(crate) const RIGHT: f64 = 150.0;
pub(crate) const TOP: f64 = 40.0;
pub(crate) const BOTTOM: f64 = 44.0;

/// Draws the kW grid and its tick labels for values up to `max`; returns the axis top (a round
/// number of ticks).
pub(crate) fn kw_grid(svg: &mut String, max: f64) -> f64 {
    let step = tick_step(max.max(1e-6));
    let top = (max.max(1e-6) / step).ceil() * step;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let y = |kw: f64| TOP + plot_h - kw / top * plot_h;
    let mut tick = 0.0;
    while tick <= top + step / 2.0 {
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            y(tick),
            y(tick),
            LEFT - 6.0,
            y(tick) + 4.0,
            format_kw(tick)
        );
        tick += step;
    }
    top
}

/// Average power of `mj` over `window`, in kW.
fn kilowatts(mj: f64, window: &FacilityWindow) -> f64 {
    let seconds = (window.end_ns - window.start_ns) as f64 / 1e9;
    if seconds <= 0.0 {
        0.0
    } else {
        mj / seconds / 1e6
    }
}

/// The stacked power chart of `windows` (consecutive, equal steps), titled `title`.
pub fn facility_power_svg(windows: &[FacilityWindow], title: &str) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"##,
        escape(title)
    );
    let (Some(first), Some(last)) = (windows.first(), windows.last()) else {
        svg.push_str(r#"<text x="64" y="80">no settled data</text></svg>"#);
        return svg;
    };
    // Layers from the bottom: jobs, idle, unattributed (negative unattributed is drawn as zero;
    // the measured line then sits below the stack and shows the disagreement).
    let layers: Vec<[f64; 4]> = windows
        .iter()
        .map(|w| {
            let jobs = kilowatts(w.jobs_mj as f64, w);
            let idle = kilowatts(w.idle_mj as f64, w);
            let unattributed = kilowatts(w.unattributed_mj.max(0) as f64, w);
            [
                jobs,
                jobs + idle,
                jobs + idle + unattributed,
                kilowatts(w.measured_mj as f64, w),
            ]
        })
        .collect();
    let max = layers
        .iter()
        .flat_map(|l| [l[2], l[3]])
        .fold(0.0, f64::max)
        .max(1e-6);
    let top = kw_grid(&mut svg, max);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let span_ns = (last.end_ns - first.start_ns).max(1) as f64;
    let x = |ns: i64| LEFT + (ns - first.start_ns) as f64 / span_ns * plot_w;
    let y = |kw: f64| TOP + plot_h - kw / top * plot_h;

    // Stacked areas as step functions (each window's power is its average).
    let colours = ["#2f6db5", "#9db9d9", "#e39b3b"];
    for layer in (0..3).rev() {
        let mut path = format!("M{:.1},{:.1}", x(first.start_ns), y(0.0));
        for (window, values) in windows.iter().zip(&layers) {
            let _ = write!(
                path,
                " L{:.1},{:.1} L{:.1},{:.1}",
                x(window.start_ns),
                y(values[layer]),
                x(window.end_ns),
                y(values[layer])
            );
        }
        let _ = write!(path, " L{:.1},{:.1} Z", x(last.end_ns), y(0.0));
        let _ = write!(svg, r#"<path d="{path}" fill="{}"/>"#, colours[layer]);
    }
    // The site meter's measured power as a line over the stack.
    let mut line = String::new();
    for (index, (window, values)) in windows.iter().zip(&layers).enumerate() {
        let _ = write!(
            line,
            "{}{:.1},{:.1} L{:.1},{:.1}",
            if index == 0 { "M" } else { " L" },
            x(window.start_ns),
            y(values[3]),
            x(window.end_ns),
            y(values[3])
        );
    }
    let _ = write!(
        svg,
        r##"<path d="{line}" fill="none" stroke="#202020" stroke-width="1.5"/>"##
    );
    // X axis: hours since the start, labelled every few hours.
    let hours = ((last.end_ns - first.start_ns) / NANOS_PER_HOUR).max(1);
    let every = [1, 2, 3, 6, 12, 24]
        .into_iter()
        .find(|e| hours / e <= 12)
        .unwrap_or(48);
    for hour in (0..=hours).step_by(every as usize) {
        let at = x(first.start_ns + hour * NANOS_PER_HOUR);
        let _ = write!(
            svg,
            r##"<line x1="{at:.1}" x2="{at:.1}" y1="{:.1}" y2="{:.1}" stroke="#808080"/><text x="{at:.1}" y="{:.1}" text-anchor="middle">+{hour} h</text>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 18.0
        );
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#808080"/><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">kW (mean per step)</text>"##,
        LEFT + plot_w,
        TOP + plot_h,
        TOP + plot_h,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // Legend.
    let legend_x = LEFT + plot_w + 16.0;
    for (index, (label, colour)) in [
        ("jobs", colours[0]),
        ("idle devices", colours[1]),
        ("unattributed", colours[2]),
    ]
    .iter()
    .enumerate()
    {
        let row = TOP + 10.0 + index as f64 * 22.0;
        let _ = write!(
            svg,
            r#"<rect x="{legend_x:.1}" y="{:.1}" width="14" height="14" fill="{colour}"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            row - 11.0,
            legend_x + 20.0,
            row
        );
    }
    let row = TOP + 10.0 + 3.0 * 22.0;
    let _ = write!(
        svg,
        r##"<line x1="{legend_x:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#202020" stroke-width="1.5"/><text x="{:.1}" y="{:.1}">site meter</text>"##,
        legend_x + 14.0,
        row - 4.0,
        row - 4.0,
        legend_x + 20.0,
        row
    );
    svg.push_str("</svg>\n");
    svg
}

/// A tick label: whole kW without a fraction, others with one digit.
pub(crate) fn format_kw(kw: f64) -> String {
    if (kw - kw.round()).abs() < 1e-9 {
        format!("{kw:.0}")
    } else {
        format!("{kw:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour(index: i64, jobs_kwh: u64, idle_kwh: u64, unattributed_kwh: i64) -> FacilityWindow {
        let kwh = 3_600_000_000u64;
        FacilityWindow {
            start_ns: index * NANOS_PER_HOUR,
            end_ns: (index + 1) * NANOS_PER_HOUR,
            measured_mj: (jobs_kwh + idle_kwh) * kwh + (unattributed_kwh * kwh as i64) as u64,
            jobs_mj: jobs_kwh * kwh,
            idle_mj: idle_kwh * kwh,
            unattributed_mj: unattributed_kwh * kwh as i64,
            ..Default::default()
        }
    }

    #[test]
    fn chart_has_three_layers_a_measured_line_and_stable_bytes() {
        let windows: Vec<FacilityWindow> =
            (0..24).map(|h| hour(h, 6 + (h as u64 % 5), 1, 2)).collect();
        let svg = facility_power_svg(&windows, "Site power <demo>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<path").count(), 4);
        assert!(svg.contains("Site power &lt;demo&gt;"));
        assert!(svg.contains("+24 h"));
        // The top of the stack is 13 kW at most: ticks every 5 kW, the axis ends at 15.
        assert!(
            svg.contains(">15</text>") && !svg.contains(">20</text>"),
            "{svg}"
        );
        assert_eq!(svg, facility_power_svg(&windows, "Site power <demo>"));
    }

    #[test]
    fn no_data_gives_a_chart_that_says_so() {
        assert!(facility_power_svg(&[], "t").contains("no settled data"));
    }

    #[test]
    fn tick_labels_keep_their_fraction() {
        assert_eq!(format_kw(12.5), "12.5");
        assert_eq!(format_kw(10.0), "10");
        assert_eq!(format_kw(0.0), "0");
    }

    #[test]
    fn tick_steps_are_round() {
        assert_eq!(tick_step(13.0), 5.0);
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(0.9), 0.2);
    }
}
