//! `footprint explain` and `footprint ledger stats`: looking into the books themselves — one job's
//! hour rebuilt from the readings beside its roll-up, and what the ledger holds on disk.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use footprint_aggregator::ledger::explain::{self, Explanation};
use footprint_aggregator::ledger::stats::{self, LedgerStats};
use footprint_aggregator::tables::{LEDGER_FILE, schema, series, staged};
use footprint_core::UnixNanos;
use footprint_core::time::{format_rfc3339, parse_rfc3339};

/// `footprint ledger …`.
#[derive(Debug, clap::Subcommand)]
pub enum LedgerCommand {
    /// What the ledger holds: bytes by part (readings packed and unpacked, window detail,
    /// roll-ups, the rest), readings, hosts, GPU-days covered, the settled hours.
    Stats {
        /// The aggregator's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Packs now every hour of readings before each meter's last hour (the aggregator packs an
    /// hour only once it ended `compact_after_s` before what still reads it), e.g. before
    /// archiving a ledger or measuring it. Stop the aggregator first: it keeps in memory which
    /// hours it has packed.
    Compact {
        /// The aggregator's data directory.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// Then rebuild the file without its free pages (SQLite `VACUUM`: needs as much free
        /// disk again as the ledger takes).
        #[arg(long)]
        vacuum: bool,
    },
}

fn ledger_path(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(LEDGER_FILE);
    anyhow::ensure!(
        path.exists(),
        "--data-dir: {} holds no ledger ({LEDGER_FILE})",
        data_dir.display()
    );
    Ok(path)
}

/// Runs `footprint ledger …`.
pub fn run_ledger(command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Stats { data_dir, json } => {
            let connection = schema::open_reader(&ledger_path(&data_dir)?)?;
            let stats = stats::ledger_stats(&connection)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                print!("{}", render_stats(&stats));
            }
        }
        LedgerCommand::Compact { data_dir, vacuum } => {
            let mut connection = schema::open(&ledger_path(&data_dir)?)?;
            let transaction = connection.transaction()?;
            let laid_out = staged::settle(&transaction, None)?;
            let meters: Vec<i64> = transaction
                .prepare("SELECT id FROM meters")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            let mut packed = 0;
            for meter in meters {
                let Some(last) = series::last_ts(&transaction, meter)? else {
                    continue;
                };
                let before = series::hour_of(last);
                while let Some(hour) =
                    series::oldest_unpacked_hour(&transaction, meter)?.filter(|hour| *hour < before)
                {
                    packed += series::compact_hour(&transaction, meter, hour)?;
                }
            }
            transaction.commit()?;
            println!("{laid_out} staged readings laid out, {packed} readings packed");
            if vacuum {
                connection.execute_batch("VACUUM")?;
                println!("free pages reclaimed");
            }
        }
    }
    Ok(())
}

/// Runs `footprint explain`.
pub fn run_explain(data_dir: &Path, job: &str, hour: &str, json: bool) -> anyhow::Result<()> {
    let hour_ns = parse_rfc3339(hour)
        .map_err(|e| anyhow::anyhow!("--hour: {e}"))?
        .0;
    let explanation = explain::explain(&ledger_path(data_dir)?, job, hour_ns)
        .with_context(|| format!("explaining job {job:?} in the hour {hour}"))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", render_explanation(&explanation));
    }
    anyhow::ensure!(
        explanation.matches,
        "the rebuilt windows do not sum to the roll-up the ledger holds"
    );
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.2} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn render_stats(stats: &LedgerStats) -> String {
    let mut out = String::new();
    let time = |at: Option<i64>| at.map_or("none".to_owned(), |at| format_rfc3339(UnixNanos(at)));
    let _ = writeln!(out, "ledger file: {}", mib(stats.file_bytes));
    for part in &stats.parts {
        let share = if stats.file_bytes == 0 {
            0.0
        } else {
            100.0 * part.bytes as f64 / stats.file_bytes as f64
        };
        let _ = writeln!(
            out,
            "  {:<18} {:>12} {:>6.1}%  {}",
            part.name,
            mib(part.bytes),
            share,
            part.holds
        );
    }
    let _ = writeln!(
        out,
        "readings: {} ({} packed); hosts: {}; GPUs: {}; GPU-days: {:.2}; {:.1} KB per GPU-day",
        stats.readings,
        stats.readings_packed,
        stats.hosts,
        stats.gpus,
        stats.gpu_days,
        stats.bytes_per_gpu_day / 1_000.0
    );
    let _ = writeln!(
        out,
        "settled hours: {} to {}; window detail kept from: {}",
        time(stats.first_settled_hour_ns),
        time(stats.last_settled_hour_ns),
        time(stats.window_detail_from_ns)
            .replace("none", "the first settled hour (nothing aged yet)")
    );
    let _ = writeln!(out, "method: {}", stats.method);
    out
}

fn render_explanation(explanation: &Explanation) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {} in the hour {} — window detail {}; rebuilt from the readings:",
        explanation.job,
        format_rfc3339(UnixNanos(explanation.hour_ns)),
        if explanation.detail_kept {
            "still kept"
        } else {
            "aged out (roll-up only)"
        }
    );
    let _ = writeln!(
        out,
        "{:<22} {:<16} {:>12} {:>12} {:>12} {:>12} {:>10} {:>12} {:>12}",
        "window",
        "host",
        "IT mJ",
        "overhead mJ",
        "GPU s",
        "water mL",
        "loc. mg",
        "market mg",
        "embodied mg"
    );
    let row = |out: &mut String,
               label: &str,
               host: &str,
               f: &footprint_aggregator::ledger::JobFigures| {
        let _ = writeln!(
            out,
            "{:<22} {:<16} {:>12} {:>12} {:>12.1} {:>12} {:>10} {:>12} {:>12}",
            label,
            host,
            f.it_mj(),
            f.overhead_mj,
            f.gpu_ns as f64 / 1e9,
            f.water_ml,
            f.co2e_location_mg,
            f.co2e_market_mg,
            f.embodied_mg
        );
    };
    for window in &explanation.windows {
        row(
            &mut out,
            &format_rfc3339(UnixNanos(window.start_ns)),
            &window.host,
            &window.figures,
        );
    }
    row(&mut out, "windows summed", "", &explanation.windows_sum);
    row(&mut out, "ledger's roll-up", "", &explanation.rolled_up);
    let _ = writeln!(
        out,
        "{}",
        if explanation.matches {
            "the windows sum to the roll-up exactly, figure by figure (energy by component and quality too)"
        } else {
            "MISMATCH: the windows do not sum to the roll-up"
        }
    );
    if explanation.hour_revisions > 0 {
        let _ = writeln!(
            out,
            "the hour was settled again {} time(s) after late data: {}",
            explanation.hour_revisions, explanation.hour_revision_reason
        );
    }
    let _ = writeln!(out, "method: {}", explanation.method);
    out
}
