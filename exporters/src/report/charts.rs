//! The report's charts, drawn from its own figures (the trend, the carbon section, the annex and
//! the totals) as inline SVG.

use super::Report;
use super::figures::Field;
use super::svg;

fn f(value: &super::canonical::Decimal) -> f64 {
    value.to_f64()
}

/// Every chart of the report, in a `<div class="charts">`.
pub fn charts(report: &Report) -> String {
    let mut html = String::new();
    let trend = &report.trend;
    let labels: Vec<String> = trend
        .points
        .iter()
        .map(|point| match trend.step.as_str() {
            "month" => point.month.clone(),
            "day" => point.from.get(5..10).unwrap_or_default().to_owned(),
            _ => point.from.get(11..16).unwrap_or_default().to_owned(),
        })
        .collect();
    let column = |pick: fn(&super::carbon::Month) -> f64| -> Vec<f64> {
        trend.points.iter().map(pick).collect()
    };
    html.push_str("<div class=\"charts\">");
    html.push_str(&svg::stacked_bars(
        &format!("Facility energy by use, per {}", trend.step),
        "kWh",
        &labels,
        &[
            ("jobs", column(|p| f(&p.jobs_kwh))),
            ("idle", column(|p| f(&p.idle_kwh))),
            ("unattributed", column(|p| f(&p.unattributed_kwh))),
        ],
    ));
    html.push_str(&svg::stacked_bars(
        &format!("Facility energy by component, per {}", trend.step),
        "kWh",
        &labels,
        &[
            ("IT (hosts)", column(|p| f(&p.it_kwh))),
            ("facility overhead", column(|p| f(&p.overhead_kwh))),
        ],
    ));
    html.push_str(&svg::lines(
        &format!("PUE per {}", trend.step),
        "PUE",
        &labels,
        &[(
            "PUE",
            trend.points.iter().map(|p| p.pue.map(|v| f(&v))).collect(),
        )],
    ));
    html.push_str(&svg::lines(
        &format!("WUE per {}", trend.step),
        "L/kWh",
        &labels,
        &[(
            "WUE",
            trend
                .points
                .iter()
                .map(|p| p.wue_l_per_kwh.map(|v| f(&v)))
                .collect(),
        )],
    ));
    let carbon = &report.carbon;
    let kg = |field: &Field| {
        field
            .value
            .get("$decimal")
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    html.push_str(&svg::horizontal_bars(
        "Carbon by method",
        "kg CO2e",
        &[
            ("location-based".to_owned(), kg(&carbon.location_based)),
            ("market-based".to_owned(), kg(&carbon.market_based)),
            ("embodied".to_owned(), kg(&carbon.embodied)),
        ],
    ));
    let mut components = [0.0f64; 5];
    for job in &report.jobs {
        let energy = &job.energy_kwh;
        for (sum, value) in components.iter_mut().zip([
            &energy.gpu,
            &energy.cpu,
            &energy.dram,
            &energy.host_remainder,
            &energy.facility_overhead,
        ]) {
            *sum += f(value);
        }
    }
    html.push_str(&svg::horizontal_bars(
        "Jobs' energy by component",
        "kWh",
        &[
            "GPU",
            "CPU package",
            "DRAM",
            "host remainder",
            "facility overhead",
        ]
        .iter()
        .zip(components)
        .map(|(name, value)| ((*name).to_owned(), value))
        .collect::<Vec<_>>(),
    ));
    html.push_str(&svg::horizontal_bars(
        "Top jobs by energy",
        "kWh",
        &report
            .jobs
            .iter()
            .take(10)
            .map(|job| (job.id.clone(), f(&job.energy_kwh.total)))
            .collect::<Vec<_>>(),
    ));
    html.push_str(&svg::horizontal_bars(
        "Top models by energy",
        "kWh",
        &report
            .totals
            .by_model
            .iter()
            .take(10)
            .map(|line| {
                let name = if line.key.is_empty() {
                    "(no model)"
                } else {
                    &line.key
                };
                (name.to_owned(), f(&line.energy_kwh))
            })
            .collect::<Vec<_>>(),
    ));
    html.push_str("</div>");
    html
}
