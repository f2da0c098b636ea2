//! `footprint report`, `footprint report verify` and `footprint keygen`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use footprint_aggregator::report::{self, ReportRequest};
use footprint_exporters::report::Format;
use footprint_exporters::report::signing;
use footprint_proto::v1 as pb;

/// The largest report accepted from a server (a year of 10 000 jobs is ~20 MB of JSON).
const MAX_REPORT_BYTES: usize = 1 << 30;

/// `footprint report …`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ReportArgs {
    #[command(subcommand)]
    command: Option<ReportCommand>,
    #[command(flatten)]
    make: MakeArgs,
}

#[derive(Debug, clap::Subcommand)]
enum ReportCommand {
    /// Checks a report (JSON, HTML or the CSV zip): its hashes and signature, then makes it again
    /// from the ledger and compares byte for byte, naming every field that differs. Exits 1 when
    /// anything fails.
    Verify {
        /// The report file.
        file: PathBuf,
        /// The aggregator's data directory the report was made from.
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// The public key (SPKI PEM, from `footprint keygen`) the report must be signed with;
        /// without it, any valid signature is reported with its key id.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
        /// Skip rebuilding the period's hours from the readings (which takes about as long as
        /// building them did): check against the ledger's settled figures only.
        #[arg(long)]
        figures_only: bool,
    },
}

/// Making a report.
#[derive(Debug, clap::Args)]
struct MakeArgs {
    /// The aggregator's data directory (holding footprint.sqlite).
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    data_dir: Option<PathBuf>,
    /// A running aggregator's gRPC endpoint, e.g. http://127.0.0.1:7411; it signs the report
    /// with its own key.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    #[command(flatten)]
    connect: crate::access::ConnectArgs,
    /// Start (RFC 3339, on the hour); with `--to`. Default: the calendar year of the ledger's
    /// latest settled data.
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// End (RFC 3339, on the hour, exclusive).
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// `json`, `csv` (a zip with one CSV per table and the signed JSON) or `html`; default: from
    /// the extension of `--out`, else json.
    #[arg(long, value_parser = ["json", "csv", "html"])]
    format: Option<String>,
    /// Where to write it. Nothing is written unless the whole report is made.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Refuse a period with hours not settled yet instead of marking it provisional.
    #[arg(long)]
    require_settled: bool,
    /// The signing key (PKCS#8 PEM); default: `disclosure.signing_key` of the aggregator config
    /// the ledger stored. Not with `--server` (the aggregator signs with its own).
    #[arg(long, value_name = "FILE", conflicts_with = "server")]
    key: Option<PathBuf>,
    /// Leave the report unsigned even where a key is configured.
    #[arg(long, conflicts_with = "key")]
    unsigned: bool,
}

/// `footprint keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// The private key to write (PKCS#8 PEM, mode 0600); the public key goes beside it with
    /// `.pub` added. An existing key is never overwritten.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

pub fn run_keygen(args: &KeygenArgs) -> anyhow::Result<()> {
    let public = public_path(&args.out);
    let key = signing::generate_key_pair(&args.out, &public)?;
    println!(
        "Ed25519 key {}: private {} (keep it; set disclosure.signing_key to it), public {} (give it to whoever verifies)",
        signing::key_id(&key),
        args.out.display(),
        public.display()
    );
    Ok(())
}

pub fn public_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

fn format_of(args: &MakeArgs, out: &Path) -> anyhow::Result<Format> {
    let by_extension = match out.extension().and_then(|e| e.to_str()) {
        Some("html" | "htm") => "html",
        Some("zip" | "csv") => "csv",
        _ => "json",
    };
    Ok(Format::parse(
        args.format.as_deref().unwrap_or(by_extension),
    )?)
}

fn instant(name: &str, value: Option<&String>) -> anyhow::Result<i64> {
    crate::time_arg(name, value)
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    match args.command {
        Some(ReportCommand::Verify {
            file,
            data_dir,
            public_key,
            figures_only,
        }) => verify(&file, &data_dir, public_key.as_deref(), !figures_only),
        None => make(&args.make).await,
    }
}

async fn make(args: &MakeArgs) -> anyhow::Result<()> {
    let out = args
        .out
        .as_deref()
        .context("--out: where to write the report is required")?;
    let format = format_of(args, out)?;
    let from_ns = instant("from", args.from.as_ref())?;
    let to_ns = instant("to", args.to.as_ref())?;
    let (bytes, status, notice) = if let Some(server) = &args.server {
        let client = crate::access::query_client(server, &args.connect).await?;
        let file = client
            .max_decoding_message_size(MAX_REPORT_BYTES)
            .report(pb::ReportRequest {
                from_ns,
                to_ns,
                format: format.name().to_owned(),
                require_settled: args.require_settled,
            })
            .await
            .map_err(|status| anyhow::anyhow!("{}", status.message()))?
            .into_inner();
        (file.data, file.status, file.notice)
    } else {
        let data_dir = args
            .data_dir
            .as_deref()
            .context("--data-dir or --server is needed")?;
        let path = data_dir.join(footprint_aggregator::tables::LEDGER_FILE);
        anyhow::ensure!(
            path.exists(),
            "--data-dir: no ledger in {}",
            data_dir.display()
        );
        let request = ReportRequest {
            from_ns,
            to_ns,
            require_settled: args.require_settled,
            signing_key: args.key.clone(),
            unsigned: args.unsigned,
        };
        let signed = report::make_report(&path, &request)?;
        if signed.signature.is_none() && !args.unsigned {
            eprintln!(
                "warning: the report is not signed: no --key and no disclosure.signing_key (footprint keygen makes one)"
            );
        }
        let bytes = report::render(&signed, format)?;
        let period = &signed.report.period;
        println!("{}", headline(&signed.report));
        (bytes, period.status.to_owned(), period.notice.clone())
    };
    write_whole(out, &bytes)?;
    println!(
        "{} report ({status}) written to {} ({} bytes, sha256 {})",
        format.name(),
        out.display(),
        bytes.len(),
        signing::sha256_hex(&bytes)
    );
    if !notice.is_empty() {
        eprintln!("note: {notice}");
    }
    Ok(())
}

/// The report's main figures on one line, each as the report states it.
fn headline(report: &footprint_exporters::report::Report) -> String {
    use footprint_exporters::report::figures::value_text;
    let shown = |field: Option<&footprint_exporters::report::figures::Field>| {
        field.map_or_else(
            || "—".to_owned(),
            |field| {
                if field.is_filled() {
                    format!("{} {}", value_text(&field.value), field.unit)
                        .trim_end()
                        .to_owned()
                } else {
                    "— (see the report)".to_owned()
                }
            },
        )
    };
    let (kpis, indicators) = (&report.facility.kpis, &report.facility.indicators);
    format!(
        "{} to {}: EDC {}, EIT {}, PUE {}, WUE {}, CO2e {} location-based / {} market-based; {} jobs",
        report.period.from,
        report.period.to,
        shown(kpis.get("edc")),
        shown(kpis.get("eit")),
        shown(indicators.get("pue")),
        shown(indicators.get("wue")),
        shown(Some(&report.carbon.location_based)),
        shown(Some(&report.carbon.market_based)),
        report.jobs.len()
    )
}

/// Writes `bytes` to `path` through a temporary file beside it, so that a failure leaves
/// nothing half-written.
fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("--out: cannot write in {}", dir.display()))?;
    std::io::Write::write_all(&mut file, bytes)?;
    file.persist(path)
        .with_context(|| format!("--out: {}", path.display()))?;
    Ok(())
}

fn verify(
    file: &Path,
    data_dir: &Path,
    public_key: Option<&Path>,
    readings: bool,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
    let expected = public_key
        .map(signing::load_public_key)
        .transpose()
        .context("--public-key")?;
    let path = data_dir.join(footprint_aggregator::tables::LEDGER_FILE);
    anyhow::ensure!(
        path.exists(),
        "--data-dir: no ledger in {}",
        data_dir.display()
    );
    let options = report::VerifyOptions {
        expected_key: expected,
        readings,
    };
    let mut reported = 0;
    let progress = |done: u64, total: u64| {
        let decile = done * 10 / total.max(1);
        if total >= 100 && decile > reported {
            reported = decile;
            eprintln!("  rebuilt {done} of {total} hours from the readings");
        }
    };
    let verification = report::verify(&path, &bytes, &options, progress)
        .with_context(|| file.display().to_string())?;
    println!(
        "{} ({}, {})",
        file.display(),
        verification.format,
        verification.period
    );
    if let Some(key) = &verification.signed_by {
        println!("signature: Ed25519 by key {key}, holds");
    }
    for note in &verification.notes {
        println!("note: {note}");
    }
    if verification.holds() {
        println!(
            "made again from {}: identical, byte for byte",
            data_dir.display()
        );
        return Ok(());
    }
    for problem in &verification.problems {
        if problem.starts_with(' ') {
            println!("{problem}");
        } else {
            println!("FAILED {problem}");
        }
    }
    bail!(
        "{} does not verify against {}",
        file.display(),
        data_dir.display()
    )
}
