//! `footprint grid signal` and `footprint grid wait`: the aggregator's grid signal for people and
//! for batch scripts, which block until the grid allows a job to start.

use std::time::Duration;

use anyhow::{Context, bail};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

/// `footprint grid …`.
#[derive(Debug, clap::Subcommand)]
pub enum GridCommand {
    /// Prints the grid signal: intensity now and over the next 48 h, events, the power budget,
    /// and the level (normal, reduce, curtail) with its reason, as JSON.
    Signal {
        #[command(flatten)]
        source: SignalSource,
        /// The instant to evaluate (RFC 3339); default now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Lists the demand-response events the aggregator holds (OpenADR 3, posted to
    /// `/api/v1/grid/events`), each with its intervals, as JSON.
    Events {
        #[command(flatten)]
        source: SignalSource,
        /// Only the events, and intervals, in force at this instant (RFC 3339).
        #[arg(long)]
        active_at: Option<String>,
    },
    /// Lists the GPU power caps the aggregator has recorded (applied, dry runs, refusals,
    /// restores), or with `--job` what caps did to one job, as JSON.
    Caps {
        #[command(flatten)]
        source: SignalSource,
        /// One job: the time its GPUs were capped and its energy and carbon then.
        #[arg(long)]
        job: Option<String>,
    },
    /// Blocks until the signal allows, then exits 0; exits 2 when the deadline passes first
    /// (and 1 on a usage error). For an sbatch script or a Kubernetes init container:
    /// `footprint grid wait --url http://aggregator:7412 --level normal --deadline 2h`.
    Wait(WaitArgs),
}

/// Where the signal comes from.
#[derive(Debug, clap::Args)]
pub struct SignalSource {
    /// The aggregator's HTTP address (`http_listen`).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7412")]
    url: String,
    /// The grid zone; default: the site's (`carbon.zone`).
    #[arg(long)]
    location: Option<String>,
}

/// `footprint grid wait`.
#[derive(Debug, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    source: SignalSource,
    /// Go once the intensity of the current hour is below this, g/kWh.
    #[arg(
        long,
        value_name = "G_PER_KWH",
        conflicts_with = "level",
        required_unless_present = "level"
    )]
    below: Option<f64>,
    /// Go once the signal's level is this or calmer: `normal` or `reduce`.
    #[arg(long, value_parser = ["normal", "reduce"])]
    level: Option<String>,
    /// Give up at this instant (RFC 3339) or after this long (`90m`, `2h`, `1d`); default: wait
    /// as long as it takes.
    #[arg(long)]
    deadline: Option<String>,
    /// Seconds between looks at the signal.
    #[arg(long, default_value_t = 60)]
    every_s: u64,
}

/// Exit code when the deadline passes before the signal allows.
pub const DEADLINE_PASSED: i32 = 2;

/// Runs `footprint grid …`; `Ok(code)` is the process's exit code.
///
/// # Errors
/// Bad arguments, or (for `signal`) an aggregator that cannot be asked.
pub async fn run(command: GridCommand) -> anyhow::Result<i32> {
    match command {
        GridCommand::Signal { source, at } => {
            let signal = fetch(&source, &signal_path(&source, at.as_deref())).await?;
            println!("{}", serde_json::to_string_pretty(&signal)?);
            Ok(0)
        }
        GridCommand::Events { source, active_at } => {
            let path = match active_at {
                Some(at) => format!("/api/v1/grid/events?active_at={}", encode(&at)),
                None => "/api/v1/grid/events".to_owned(),
            };
            let events = fetch(&source, &path).await?;
            println!("{}", serde_json::to_string_pretty(&events)?);
            Ok(0)
        }
        GridCommand::Caps { source, job } => {
            let path = match job {
                Some(job) => format!("/api/v1/jobs/{}/caps", encode(&job)),
                None => "/api/v1/grid/caps".to_owned(),
            };
            let caps = fetch(&source, &path).await?;
            println!("{}", serde_json::to_string_pretty(&caps)?);
            Ok(0)
        }
        GridCommand::Wait(args) => wait(&args).await,
    }
}

async fn wait(args: &WaitArgs) -> anyhow::Result<i32> {
    let now = || footprint_collector::time::wall_clock_now().0;
    let deadline = args
        .deadline
        .as_deref()
        .map(|text| deadline_of(text, now()))
        .transpose()?;
    let every = Duration::from_secs(args.every_s.max(1));
    loop {
        match fetch(&args.source, &signal_path(&args.source, None)).await {
            Ok(signal) => {
                let (go, said) = allows(args, &signal);
                eprintln!("grid wait: {said}");
                if go {
                    return Ok(0);
                }
            }
            Err(error) => eprintln!("grid wait: no signal ({error:#}); asking again"),
        }
        let left = deadline.map(|at| at - now());
        if left.is_some_and(|ns| ns <= 0) {
            eprintln!("grid wait: the deadline passed before the grid allowed");
            return Ok(DEADLINE_PASSED);
        }
        let pause = left.map_or(every, |ns| {
            every.min(Duration::from_nanos(ns.max(0) as u64))
        });
        tokio::time::sleep(pause).await;
    }
}

/// Whether `signal` lets the job go, and a line saying why.
fn allows(args: &WaitArgs, signal: &serde_json::Value) -> (bool, String) {
    let level = signal["level"].as_str().unwrap_or("unknown");
    let now = signal["intensity_now"]["g_per_kwh"].as_f64();
    match (args.below, args.level.as_deref()) {
        (Some(limit), _) => match now {
            Some(g) => (g < limit, format!("{g} g/kWh now, go below {limit}")),
            None => (false, "no intensity known for this hour".to_owned()),
        },
        (None, wanted) => {
            let rank = |l: &str| ["normal", "reduce", "curtail"].iter().position(|x| *x == l);
            let go = matches!((rank(level), wanted.and_then(rank)), (Some(a), Some(b)) if a <= b);
            let reason = signal["reason"].as_str().unwrap_or("");
            (
                go,
                format!(
                    "level {level} ({reason}), go at {}",
                    wanted.unwrap_or("normal")
                ),
            )
        }
    }
}

/// `--deadline`: an instant, or a duration from `now_ns`.
fn deadline_of(text: &str, now_ns: i64) -> anyhow::Result<i64> {
    let units = [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)];
    for (suffix, seconds) in units {
        if let Some(count) = text
            .strip_suffix(suffix)
            .and_then(|n| n.parse::<i64>().ok())
        {
            return Ok(now_ns + count * seconds * 1_000_000_000);
        }
    }
    footprint_core::time::parse_rfc3339(text)
        .map(|at| at.0)
        .map_err(|error| anyhow::anyhow!("--deadline: {error}, nor a duration like 90m or 2h"))
}

/// The signal's path and query.
fn signal_path(source: &SignalSource, at: Option<&str>) -> String {
    let mut query = Vec::new();
    if let Some(location) = &source.location {
        query.push(format!("location={}", encode(location)));
    }
    if let Some(at) = at {
        query.push(format!("at={}", encode(at)));
    }
    format!("/api/v1/grid/signal?{}", query.join("&"))
}

/// GETs `path` from the aggregator's HTTP API as JSON.
async fn fetch(source: &SignalSource, path: &str) -> anyhow::Result<serde_json::Value> {
    let Some(authority) = source
        .url
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
    else {
        bail!(
            "--url: {:?} is not http://HOST:PORT (TLS comes with the security work)",
            source.url
        );
    };
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(authority),
    )
    .await
    .context("connecting: timed out")?
    .with_context(|| format!("connecting to {authority}"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    let response = tokio::time::timeout(Duration::from_secs(30), sender.send_request(request))
        .await
        .context("waiting for the signal: timed out")??;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_instants_or_durations() {
        assert_eq!(deadline_of("90m", 0).unwrap(), 5_400_000_000_000);
        assert_eq!(deadline_of("2h", 10).unwrap(), 7_200_000_000_010);
        assert_eq!(
            deadline_of("1970-01-01T00:00:01Z", 0).unwrap(),
            1_000_000_000
        );
        assert!(
            deadline_of("soon", 0)
                .unwrap_err()
                .to_string()
                .contains("--deadline")
        );
        assert_eq!(
            encode("2023-11-16T10:30:00+01:00"),
            "2023-11-16T10%3A30%3A00%2B01%3A00"
        );
    }
}
