//! Plain-text tables of jobs, for terminals.

use crate::summary::{Figures, JobLine, Summary};

const HEADER: [&str; 11] = [
    "JOB",
    "KIND",
    "MODEL",
    "HOSTS",
    "GPU-h",
    "kWh",
    "SITE",
    "WATER L",
    "kgCO2e LOC",
    "kgCO2e MKT",
    "kgCO2e EMB",
];
/// Columns holding text (left-aligned); the others hold figures (right-aligned).
const JOB_TEXT_COLUMNS: usize = 3;

fn kwh(mj: i128) -> String {
    format!(
        "{:.2}",
        mj as f64 / footprint_core::Millijoules::PER_KWH as f64
    )
}

fn litres(ml: i128) -> String {
    format!("{:.1}", ml as f64 / 1_000.0)
}

fn kilograms(mg: i128) -> String {
    format!("{:.3}", mg as f64 / 1e6)
}

fn percent(part: i128, whole: u64) -> String {
    if whole == 0 {
        return "-".to_owned();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// The figures' cells, with `share` (of the site's energy) already written.
fn figure_cells(figures: Figures, share: String) -> Vec<String> {
    vec![
        kwh(figures[0]),
        share,
        litres(figures[1]),
        kilograms(figures[2]),
        kilograms(figures[3]),
        kilograms(figures[4]),
    ]
}

fn job_row(job: &JobLine, share: String) -> Vec<String> {
    let mut row = vec![
        job.id.clone(),
        job.kind.clone(),
        job.model.clone(),
        job.hosts.len().to_string(),
        format!("{:.1}", job.gpu_hours),
    ];
    row.extend(figure_cells(job.figures(), share));
    row
}

fn total_row(label: &str, gpu_hours: Option<f64>, figures: Figures, site_mj: u64) -> Vec<String> {
    let mut row = vec![
        label.to_owned(),
        String::new(),
        String::new(),
        String::new(),
    ];
    row.push(gpu_hours.map(|h| format!("{h:.1}")).unwrap_or_default());
    row.extend(figure_cells(figures, percent(figures[0], site_mj)));
    row
}

/// Lays out rows in aligned columns, with a rule after each index in `rules_after`.
fn layout(rows: &[Vec<String>], rules_after: &[usize], text_columns: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for (index, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (column, (cell, width)) in row.iter().zip(&widths).enumerate() {
            let width = *width;
            if column < text_columns {
                line.push_str(&format!("{cell:<width$}  "));
            } else {
                line.push_str(&format!("{cell:>width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
        if rules_after.contains(&index) {
            out.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * columns.saturating_sub(1)));
            out.push('\n');
        }
    }
    out
}

fn header() -> Vec<String> {
    HEADER.iter().map(|h| (*h).to_owned()).collect()
}

/// The per-job table of a summary, with idle, unattributed and the site total below it.
pub fn render_summary(summary: &Summary) -> String {
    let site = summary.site.measured_mj;
    let mut rows = vec![header()];
    rows.extend(
        summary
            .jobs
            .iter()
            .map(|job| job_row(job, percent(job.figures()[0], site))),
    );
    let gpu_hours: f64 = summary.jobs.iter().map(|j| j.gpu_hours).sum();
    let books = [
        (
            format!("all {} jobs", summary.jobs.len()),
            Some(gpu_hours),
            summary.jobs_total(),
        ),
        ("idle devices".to_owned(), None, summary.idle()),
        ("unattributed".to_owned(), None, summary.unattributed()),
        ("site (measured)".to_owned(), None, summary.site_figures()),
    ];
    for (label, hours, figures) in books {
        rows.push(total_row(&label, hours, figures, site));
    }
    layout(&rows, &[0, summary.jobs.len()], JOB_TEXT_COLUMNS)
}

/// The site's (or hosts') balances, one row per span.
pub fn render_totals(windows: &[footprint_proto::v1::FacilityWindow]) -> String {
    let mut rows = vec![
        [
            "START",
            "HOST",
            "kWh",
            "JOBS kWh",
            "IDLE kWh",
            "UNATTR kWh",
            "PUE",
            "WATER L",
            "kgCO2e LOC",
            "kgCO2e MKT",
            "kgCO2e EMB",
            "CFE",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for window in windows {
        let balance = |b: Option<footprint_proto::v1::Balance>| b.unwrap_or_default().site;
        rows.push(vec![
            footprint_core::time::format_rfc3339(footprint_core::UnixNanos(window.start_ns)),
            if window.host.is_empty() {
                "site".to_owned()
            } else {
                window.host.clone()
            },
            kwh(i128::from(window.measured_mj)),
            kwh(i128::from(window.jobs_mj)),
            kwh(i128::from(window.idle_mj)),
            kwh(i128::from(window.unattributed_mj)),
            format!("{:.3}", window.pue),
            litres(i128::from(balance(window.water_ml))),
            kilograms(i128::from(balance(window.co2e_location_mg))),
            kilograms(i128::from(balance(window.co2e_market_mg))),
            kilograms(i128::from(balance(window.co2e_embodied_mg))),
            format!("{:.1}%", window.cfe_share * 100.0),
        ]);
    }
    layout(&rows, &[0], 2)
}

/// A table of jobs, each with its share of the site where that is known.
pub fn render_jobs(jobs: &[JobLine]) -> String {
    let share = |job: &JobLine| {
        job.share_of_site
            .map_or_else(|| "-".to_owned(), |share| format!("{:.1}%", share * 100.0))
    };
    let mut rows = vec![header()];
    rows.extend(jobs.iter().map(|job| job_row(job, share(job))));
    layout(&rows, &[0], JOB_TEXT_COLUMNS)
}

/// One job in detail: energy by resource and by how it was obtained.
pub fn render_job(job: &JobLine) -> String {
    let kwh_of = |mj: u64| kwh(i128::from(mj));
    let mut out = String::new();
    out.push_str(&format!(
        "job        {} ({}, {})\n",
        job.id,
        job.kind,
        if job.name.is_empty() { "-" } else { &job.name }
    ));
    out.push_str(&format!(
        "model      {}\n",
        if job.model.is_empty() {
            "-"
        } else {
            &job.model
        }
    ));
    out.push_str(&format!("owner      {} / {}\n", job.user, job.project));
    out.push_str(&format!("hosts      {}\n", job.hosts.join(", ")));
    out.push_str(&format!("GPU-hours  {:.2}\n", job.gpu_hours));
    out.push_str(&format!(
        "energy     {} kWh = GPU {} + CPU {} + DRAM {} + host remainder {} + facility overhead {}\n",
        kwh_of(job.energy_mj),
        kwh_of(job.gpu_energy_mj),
        kwh_of(job.cpu_energy_mj),
        kwh_of(job.dram_energy_mj),
        kwh_of(job.remainder_mj),
        kwh_of(job.overhead_mj)
    ));
    out.push_str(&format!(
        "obtained   IT energy: measured {} kWh, interpolated {} kWh, estimated {} kWh\n",
        kwh_of(job.measured_mj),
        kwh_of(job.interpolated_mj),
        kwh_of(job.estimated_mj)
    ));
    out.push_str(&format!(
        "water      {} L\n",
        litres(i128::from(job.water_ml))
    ));
    out.push_str(&format!(
        "carbon     location-based {} kg, market-based {} kg, embodied {} kg CO2e\n",
        kilograms(i128::from(job.co2e_location_mg)),
        kilograms(i128::from(job.co2e_market_mg)),
        kilograms(i128::from(job.co2e_embodied_mg))
    ));
    if job.functional_units > 0 {
        out.push_str(&format!(
            "per unit   {} {}: SCI {:.3} g CO2e per {} (location-based + embodied, facility overhead included)\n",
            job.functional_units,
            job.functional_unit,
            job.sci_mg_per_unit / 1_000.0,
            job.functional_unit
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::SiteTotals;

    #[test]
    fn summary_table_lists_jobs_then_the_books() {
        let job = JobLine {
            id: "train-001".into(),
            name: String::new(),
            kind: "training".into(),
            model: "llama".into(),
            user: "ana".into(),
            project: "nlp".into(),
            hosts: vec!["a".into(), "b".into()],
            energy_mj: 7_200_000_000,
            gpu_energy_mj: 7_200_000_000,
            cpu_energy_mj: 0,
            dram_energy_mj: 0,
            measured_mj: 7_200_000_000,
            interpolated_mj: 0,
            estimated_mj: 0,
            gpu_hours: 16.0,
            share_of_site: Some(0.5),
            water_ml: 2_500,
            co2e_location_mg: 1_000_000,
            co2e_market_mg: 500_000,
            co2e_embodied_mg: 10_000,
            ..JobLine::default()
        };
        let summary = Summary {
            site: SiteTotals {
                measured_mj: 14_400_000_000,
                measured_method: "m".into(),
                water_ml: 4_000,
                co2e_location_mg: 2_000_000,
                ..SiteTotals::default()
            },
            idle_mj: 3_600_000_000,
            unattributed_mj: 3_600_000_000,
            idle_water_ml: 1_500,
            jobs: vec![job],
            ..Summary::default()
        };
        let text = render_summary(&summary);
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(rows[0][0], "JOB");
        assert_eq!(
            rows[2],
            [
                "train-001",
                "training",
                "llama",
                "2",
                "16.0",
                "2.00",
                "50.0%",
                "2.5",
                "1.000",
                "0.500",
                "0.010"
            ],
            "{text}"
        );
        assert!(
            rows.contains(&vec![
                "site",
                "(measured)",
                "4.00",
                "100.0%",
                "4.0",
                "2.000",
                "0.000",
                "0.000"
            ]),
            "{text}"
        );
        assert!(
            rows.contains(&vec![
                "unattributed",
                "1.00",
                "25.0%",
                "0.0",
                "0.000",
                "0.000",
                "0.000"
            ]),
            "{text}"
        );
    }
}
