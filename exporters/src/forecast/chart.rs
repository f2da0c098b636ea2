//! A forecast as a picture: the last 48 hours measured, then the next 48 hours as the P10–P90
//! band with the P50 line through it, split at the origin. Hand-written SVG, as the other
//! charts: no fonts or scripts needed, the same forecast gives the same bytes.

use std::fmt::Write as _;

use super::Forecast;
use crate::chart::{BOTTOM, HEIGHT, LEFT, RIGHT, TOP, WIDTH, kw_grid};
use crate::report::svg::escape;
const HOUR_NS: i64 = 3_600_000_000_000;

/// The chart of `forecast` with its recent history.
pub fn forecast_svg(forecast: &Forecast) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="#ffffff"/><text x="{LEFT}" y="22" font-size="15" font-weight="bold">{}</text>"##,
        escape(&format!(
            "{}: facility draw, next 48 h from {} (P10–P90, P50)",
            forecast.site, forecast.origin
        ))
    );
    let step = forecast.step_ns.max(1);
    let origin = forecast.origin_ns;
    let start = forecast.recent.first().map_or(origin, |(at, _)| *at);
    let end = origin + forecast.points.len() as i64 * step;
    let max = forecast
        .recent
        .iter()
        .map(|(_, kw)| *kw)
        .chain(forecast.points.iter().map(|p| p.p90_kw))
        .fold(0.0, f64::max)
        .max(1e-6);
    let top = kw_grid(&mut svg, max);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |ns: i64| LEFT + (ns - start) as f64 / (end - start).max(1) as f64 * plot_w;
    let y = |kw: f64| TOP + plot_h - kw / top * plot_h;
    // The band: P90 forward, P10 back, each step's value across its quarter hour.
    let middle = |i: usize| origin + i as i64 * step + step / 2;
    let mut band = String::new();
    for (i, point) in forecast.points.iter().enumerate() {
        let _ = write!(
            band,
            "{}{:.1},{:.1}",
            if i == 0 { "M" } else { " L" },
            x(middle(i)),
            y(point.p90_kw)
        );
    }
    for (i, point) in forecast.points.iter().enumerate().rev() {
        let _ = write!(band, " L{:.1},{:.1}", x(middle(i)), y(point.p10_kw));
    }
    if !forecast.points.is_empty() {
        let _ = write!(
            svg,
            r##"<path d="{band} Z" fill="#9db9d9" fill-opacity="0.7"/>"##
        );
    }
    let median: Vec<(i64, f64)> = forecast
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| (middle(i), p.p50_kw))
        .collect();
    let recent: Vec<(i64, f64)> = forecast
        .recent
        .iter()
        .map(|(at, kw)| (at + step / 2, *kw))
        .collect();
    for (line, colour) in [(&recent, "#202020"), (&median, "#2f6db5")] {
        let mut path = String::new();
        let mut previous = None;
        for &(at, kw) in line {
            // A gap in the history breaks the line.
            let join = previous.is_some_and(|p: i64| at - p <= step);
            let _ = write!(
                path,
                "{}{:.1},{:.1}",
                if join { " L" } else { " M" },
                x(at),
                y(kw)
            );
            previous = Some(at);
        }
        let _ = write!(
            svg,
            r##"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.6"/>"##,
            path.trim_start()
        );
    }
    // The origin, and hours relative to it.
    let _ = write!(
        svg,
        r##"<line x1="{0:.1}" x2="{0:.1}" y1="{TOP}" y2="{1:.1}" stroke="#808080" stroke-dasharray="4 3"/><text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#505050">now</text>"##,
        x(origin),
        TOP + plot_h,
        TOP - 4.0
    );
    let first_hour = (start - origin).div_euclid(HOUR_NS * 12) * 12;
    let last_hour = (end - origin) / HOUR_NS;
    let mut hour = first_hour;
    while hour <= last_hour {
        let at = origin + hour * HOUR_NS;
        if at >= start {
            let _ = write!(
                svg,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#808080"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle">{4:+} h</text>"##,
                x(at),
                TOP + plot_h,
                TOP + plot_h + 5.0,
                TOP + plot_h + 18.0,
                hour
            );
        }
        hour += 12;
    }
    let _ = write!(
        svg,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#808080"/><text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">kW (mean per {} min)</text>"##,
        LEFT + plot_w,
        TOP + plot_h,
        TOP + plot_h,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0,
        step / 60_000_000_000
    );
    let legend_x = LEFT + plot_w + 16.0;
    let _ = write!(
        svg,
        r##"<line x1="{0:.1}" x2="{1:.1}" y1="46" y2="46" stroke="#202020" stroke-width="1.6"/><text x="{2:.1}" y="50">measured</text><line x1="{0:.1}" x2="{1:.1}" y1="68" y2="68" stroke="#2f6db5" stroke-width="1.6"/><text x="{2:.1}" y="72">P50</text><rect x="{0:.1}" y="83" width="14" height="14" fill="#9db9d9"/><text x="{2:.1}" y="94">P10–P90</text>"##,
        legend_x,
        legend_x + 14.0,
        legend_x + 20.0
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::super::{ForecastContext, Series, SeriesNotes, series::Clock};
    use super::*;

    fn forecast() -> Forecast {
        let values = (0..24 * 4 * 12)
            .map(|q| {
                Some(if (32..80).contains(&(q % 96)) {
                    9.0
                } else {
                    4.0
                })
            })
            .collect::<Vec<_>>();
        let origin = values.len();
        let series = Series {
            start_ns: 0,
            step_ns: 900_000_000_000,
            values,
            clock: Clock::Utc,
        };
        let context = ForecastContext {
            site: "Hall <A>".into(),
            target: String::new(),
            history: String::new(),
            inputs_used: Vec::new(),
            inputs_not_used: Vec::new(),
        };
        super::super::forecast(&series, SeriesNotes::default(), origin, 192, context).unwrap()
    }

    #[test]
    fn the_chart_shows_history_band_and_median_split_at_the_origin() {
        let forecast = forecast();
        assert_eq!(forecast.recent.len(), 192);
        let svg = forecast_svg(&forecast);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Hall &lt;A&gt;: facility draw"));
        // The band, the measured line and the P50 line.
        assert_eq!(svg.matches("<path").count(), 3);
        assert!(
            svg.contains(">now</text>")
                && svg.contains(">-48 h</text>")
                && svg.contains(">+48 h</text>")
        );
        // Peak 9 kW: ticks every 2 kW up to 10.
        assert!(
            svg.contains(">10</text>") && !svg.contains(">12</text>"),
            "{svg}"
        );
        assert_eq!(svg, forecast_svg(&forecast));
    }
}
