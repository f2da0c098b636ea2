//! `footprint export parquet`: the ledger's history as Parquet for Spark, Trino, DuckDB and
//! pyarrow (`docs/PARQUET.md`).

use std::path::PathBuf;

use anyhow::Context;
use footprint_aggregator::parquet_history;
use footprint_aggregator::query::LedgerReader;

/// Exports of the ledger.
#[derive(Debug, clap::Subcommand)]
pub enum ExportCommand {
    /// Every reading, the site's settled hours and each job's hours, one UTC day per partition
    /// (`OUT/TABLE/site=S/date=YYYY-MM-DD/part-0.parquet`); days already there are replaced.
    Parquet {
        /// The aggregator's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Where the tables go.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// First instant (RFC 3339; its whole UTC day is written). Default: the first settled hour.
        #[arg(long)]
        from: Option<String>,
        /// End (RFC 3339, exclusive; rounded up to a whole day). Default: the end of the settled hours.
        #[arg(long)]
        to: Option<String>,
        /// The `site=` partition.
        #[arg(long, default_value = "site")]
        site: String,
    },
}

pub async fn run(command: ExportCommand) -> anyhow::Result<()> {
    let ExportCommand::Parquet {
        data_dir,
        out,
        from,
        to,
        site,
    } = command;
    let reader = LedgerReader::for_data_dir(&data_dir)?;
    let parse = |text: Option<String>, name: &str| -> anyhow::Result<Option<i64>> {
        text.map(|t| {
            footprint_core::time::parse_rfc3339(&t)
                .map(|at| at.0)
                .map_err(|e| anyhow::anyhow!("--{name}: {e}"))
        })
        .transpose()
    };
    let (from, to) = (parse(from, "from")?, parse(to, "to")?);
    let span = reader
        .with(move |connection| {
            let first: Option<i64> =
                connection.query_row("SELECT MIN(hour_ns) FROM rollup_site", [], |r| r.get(0))?;
            let settled = footprint_aggregator::ledger::site::settled_until(connection)?;
            Ok((from.or(first), to.or(settled.map(|at| at.0))))
        })
        .await?;
    let (Some(from), Some(to)) = span else {
        anyhow::bail!("nothing to export: the ledger has no settled hour (give --from and --to)");
    };
    anyhow::ensure!(from < to, "--from must come before --to");
    let days: Vec<i64> = parquet_history::days(from, to).collect();
    let mut total = parquet_history::DayExport::default();
    for (index, day) in days.iter().copied().enumerate() {
        let (out, site) = (out.clone(), site.clone());
        let export = reader
            .with(move |connection| parquet_history::export_day(connection, &out, &site, day))
            .await
            .with_context(|| format!("exporting the day from {day} ns"))?;
        eprintln!(
            "[{}/{}] {}: {} readings, {} site hours, {} job hours, {} bytes",
            index + 1,
            days.len(),
            export.date,
            export.readings,
            export.site_hours,
            export.job_hours,
            export.bytes
        );
        total.readings += export.readings;
        total.site_hours += export.site_hours;
        total.job_hours += export.job_hours;
        total.bytes += export.bytes;
    }
    println!(
        "{} days to {}: {} readings, {} site hours, {} job hours, {} bytes ({:.3} bytes per reading, all tables)",
        days.len(),
        out.display(),
        total.readings,
        total.site_hours,
        total.job_hours,
        total.bytes,
        total.bytes as f64 / total.readings.max(1) as f64
    );
    Ok(())
}
