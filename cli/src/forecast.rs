//! `footprint forecast` (the facility's next 48 hours from a ledger) and `footprint forecast
//! backtest` (the model against the baselines on any CSV series).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use footprint_aggregator::forecast::{self, ForecastRequest};
use footprint_exporters::forecast::output::{self, Format, OpenAdrIds};
use footprint_exporters::forecast::{AnalogModel, Origins, Series, backtest, csv_input};
use footprint_proto::v1 as pb;

/// `footprint forecast …`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ForecastArgs {
    #[command(subcommand)]
    command: Option<ForecastCommand>,
    #[command(flatten)]
    make: MakeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ForecastCommand {
    /// Backtests the model against seasonal-naive and persistence on a CSV series: origins at
    /// 00:00 every 7 days over the last 52 weeks, 48 hours ahead, each forecast from the data
    /// before its origin only. Prints the scores as JSON; progress on stderr.
    Backtest(BacktestArgs),
}

/// Forecasting from a ledger.
#[derive(Debug, clap::Args)]
struct MakeArgs {
    /// The aggregator's data directory (holding footprint.sqlite).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    data_dir: Option<PathBuf>,
    /// A running aggregator's gRPC endpoint, e.g. http://127.0.0.1:7411.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    connect: crate::access::ConnectArgs,
    /// Forecast from this instant (RFC 3339; rounded down to a quarter hour) with the history
    /// before it only. Default: the end of the ledger's last complete quarter hour.
    #[arg(long)]
    from: Option<String>,
    /// `json` (everything: points, model, training span, inputs, backtest scores), `csv`
    /// (`timestamp,p10_kw,p50_kw,p90_kw`), `openadr` (an OpenADR 3 USAGE_FORECAST report) or
    /// `svg` (the chart: the last 48 h measured, the next 48 h as the P10–P90 band and P50).
    #[arg(long, value_parser = ["json", "csv", "openadr", "svg"], default_value = "json")]
    format: String,
    /// Where to write it; default: standard output.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// For `openadr`: the program the report answers.
    #[arg(long)]
    program_id: Option<String>,
    /// For `openadr`: the event the report answers.
    #[arg(long)]
    event_id: Option<String>,
    /// For `openadr`: the VEN's client name (default: the site's name).
    #[arg(long)]
    client_name: Option<String>,
}

/// A backtest on a CSV file.
#[derive(Debug, clap::Args)]
struct BacktestArgs {
    /// The CSV file, with a header row.
    #[arg(long, value_name = "CSV")]
    input: PathBuf,
    /// The column of times: RFC 3339 with an offset (instants) or without (local wall clock:
    /// a daylight-saving repeat is averaged into one step, a skipped hour is a gap).
    #[arg(long, value_name = "COLUMN")]
    time_column: String,
    /// The column of values (any unit; the scores are in it).
    #[arg(long, value_name = "COLUMN")]
    value_column: String,
    /// Only the rows where COLUMN holds VALUE, e.g. `host=cbsugpu08` for one host of a file
    /// holding several.
    #[arg(long, value_name = "COLUMN=VALUE")]
    only: Option<String>,
    /// The series' step: `1h` or `15m` (values within a step are averaged).
    #[arg(long, value_parser = ["1h", "15m"], default_value = "1h")]
    step: String,
    /// Write every scored point as CSV `origin,timestamp,p10,p50,p90,actual`.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `footprint forecast …`.
///
/// # Errors
/// Bad arguments, an unreadable ledger or file, a history too short to fit.
pub async fn run(args: ForecastArgs) -> anyhow::Result<()> {
    match args.command {
        Some(ForecastCommand::Backtest(args)) => run_backtest(&args),
        None => make(args.make).await,
    }
}

async fn make(args: MakeArgs) -> anyhow::Result<()> {
    let from_ns = args
        .from
        .as_deref()
        .map(|text| {
            footprint_core::time::parse_rfc3339(text)
                .map(|at| at.0)
                .map_err(|error| anyhow::anyhow!("--from: {error}"))
        })
        .transpose()?;
    let format = Format::parse(&args.format)?;
    let ids = OpenAdrIds {
        program_id: args.program_id.unwrap_or_default(),
        event_id: args.event_id.unwrap_or_default(),
        client_name: args.client_name.unwrap_or_default(),
    };
    let bytes = match (&args.server, &args.data_dir) {
        (Some(server), _) => {
            let mut client = crate::access::query_client(server, &args.connect).await?;
            client
                .forecast(pb::ForecastRequest {
                    from_ns,
                    format: args.format.clone(),
                    program_id: ids.program_id,
                    event_id: ids.event_id,
                    client_name: ids.client_name,
                })
                .await?
                .into_inner()
                .data
        }
        (None, Some(data_dir)) => {
            let path = ledger_path(data_dir)?;
            let forecast = tokio::task::spawn_blocking(move || {
                forecast::make_forecast(&path, &ForecastRequest { from_ns })
            })
            .await??;
            output::render(&forecast, format, &ids)
        }
        (None, None) => bail!("--data-dir or --server is needed"),
    };
    match &args.out {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| path.display().to_string())?;
            eprintln!("wrote {}", path.display());
        }
        None => match std::io::stdout().write_all(&bytes) {
            // A reader that stopped early (`| head`) is not a failure.
            Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        },
    }
    Ok(())
}

fn ledger_path(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join(footprint_aggregator::tables::LEDGER_FILE);
    anyhow::ensure!(path.exists(), "no ledger in {}", data_dir.display());
    Ok(path)
}

fn run_backtest(args: &BacktestArgs) -> anyhow::Result<()> {
    let only = args
        .only
        .as_deref()
        .map(|text| {
            text.split_once('=')
                .map(|(column, value)| (column.trim().to_owned(), value.trim().to_owned()))
                .with_context(|| format!("--only: {text:?} is not COLUMN=VALUE"))
        })
        .transpose()?;
    let file = std::fs::File::open(&args.input)
        .with_context(|| format!("--input {}", args.input.display()))?;
    let columns = csv_input::CsvColumns {
        time: args.time_column.clone(),
        value: args.value_column.clone(),
        only,
    };
    let read = csv_input::read(std::io::BufReader::new(file), &columns)
        .with_context(|| args.input.display().to_string())?;
    let step_ns = if args.step == "15m" { 900 } else { 3_600 } * 1_000_000_000;
    let (series, notes) = Series::from_points(&read.points, step_ns, read.clock)?;
    let origins = Origins::weekly(&series);
    let started = std::time::Instant::now();
    let interactive = std::io::stderr().is_terminal();
    let (summary, points) =
        backtest::run(&series, &AnalogModel::default(), &origins, |done, total| {
            if interactive {
                eprint!("\rbacktest: origin {done}/{total}");
            } else if done == total || done % 10 == 0 {
                eprintln!("backtest: origin {done}/{total}");
            }
        })?;
    if interactive {
        eprintln!();
    }
    if let Some(path) = &args.output {
        let mut text = String::from("origin,timestamp,p10,p50,p90,actual\n");
        for point in &points {
            let origin = series.format_time(series.time_of(point.origin));
            let at = series.format_time(series.time_of(point.origin + point.step));
            let q = point.quantiles;
            text.push_str(&format!(
                "{origin},{at},{},{},{},{}\n",
                q.p10, q.p50, q.p90, point.actual
            ));
        }
        std::fs::write(path, text).with_context(|| path.display().to_string())?;
        eprintln!("wrote {} points to {}", points.len(), path.display());
    }
    let mut answer = serde_json::to_value(&summary)?;
    answer["backtest_seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
    answer["series"] = serde_json::json!({
        "file": args.input.display().to_string(),
        "value_column": args.value_column,
        "only": args.only,
        "step": output::iso_duration(step_ns),
        "clock": series.clock,
        "from": series.format_time(series.start_ns),
        "to": series.format_time(series.end_ns()),
        "empty_values": read.empty_values,
        "handling": "points averaged within each step (a wall clock's repeated hour is one \
                     step); steps without a point are gaps: the model and baselines hold the \
                     last value before a gap as the state, gaps are never scored, and an \
                     origin without a value in the day before it is skipped",
        "notes": notes,
    });
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}
