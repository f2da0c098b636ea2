//! `footprint-ven`: polls a utility's OpenADR 3 VTN and relays its events to a Footprint
//! aggregator (see the crate's documentation and `ven/README.md`).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use footprint_ven::{Aggregator, Bridge};
use openleadr_client::{Client, ClientCredentials, VirtualEndNode};
use url::Url;

/// Polls an OpenADR 3 VTN as a VEN and relays its demand-response events to an aggregator.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The VTN's base URL (its OAuth token endpoint is `<vtn>/auth/token` unless --token-url).
    #[arg(long, env = "FOOTPRINT_VEN_VTN")]
    vtn: Url,
    /// The VTN's OAuth token endpoint, when it is not the VTN's own.
    #[arg(long, env = "FOOTPRINT_VEN_TOKEN_URL")]
    token_url: Option<Url>,
    /// This VEN's OAuth client id.
    #[arg(long, env = "FOOTPRINT_VEN_CLIENT_ID")]
    client_id: String,
    /// A file holding this VEN's OAuth client secret (kept out of the process list).
    #[arg(long, env = "FOOTPRINT_VEN_CLIENT_SECRET_FILE")]
    client_secret_file: std::path::PathBuf,
    /// Only this program's events (its `programName`); all the VEN may read when absent.
    #[arg(long)]
    program: Option<String>,
    /// The aggregator's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:7412/")]
    aggregator: Url,
    /// A file holding the bearer token for the aggregator (`footprint token new --scope
    /// read,control`), when its web config lists tokens.
    #[arg(long, env = "FOOTPRINT_VEN_AGGREGATOR_TOKEN_FILE")]
    aggregator_token_file: Option<std::path::PathBuf>,
    /// PEM CA certificate(s) of an `https://` aggregator's certificate.
    #[arg(long)]
    aggregator_ca_file: Option<std::path::PathBuf>,
    /// The name the aggregator records the events and this bridge's health under.
    #[arg(long, default_value = "vtn")]
    source: String,
    /// Seconds between polls.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    interval_s: u64,
    /// Poll once, print what happened, and exit (1 when the poll failed).
    #[arg(long)]
    once: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let secret = std::fs::read_to_string(&args.client_secret_file)
        .with_context(|| format!("--client-secret-file {}", args.client_secret_file.display()))?;
    let credentials = ClientCredentials::new(args.client_id.clone(), secret.trim().to_owned());
    let token_url = match &args.token_url {
        Some(url) => url.clone(),
        None => args
            .vtn
            .join("auth/token")
            .context("--vtn: cannot hold a path")?,
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .context("building the HTTP client")?;
    let vtn: Client<VirtualEndNode> =
        Client::with_details(args.vtn.clone(), token_url, http, Some(credentials));
    let token = match &args.aggregator_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("--aggregator-token-file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let ca = match &args.aggregator_ca_file {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("--aggregator-ca-file {}", path.display()))?,
        ),
        None => None,
    };
    let aggregator =
        Aggregator::with_credentials(args.aggregator.clone(), token.as_deref(), ca.as_deref())?;
    let interval = Duration::from_secs(args.interval_s);
    let mut bridge = Bridge::new(
        vtn,
        args.vtn.to_string(),
        args.program.clone(),
        aggregator,
        args.source.clone(),
        interval,
    );
    if args.once {
        let outcome = bridge.poll().await;
        println!(
            "listed {} · posted {} · cancelled {} · refused {}{}",
            outcome.listed,
            outcome.posted,
            outcome.cancelled,
            outcome.refused.len(),
            outcome
                .error
                .as_deref()
                .map_or_else(String::new, |e| format!(" · failed: {e}"))
        );
        for refusal in &outcome.refused {
            println!("refused {}: {}", refusal.id, refusal.reason);
        }
        std::process::exit(i32::from(outcome.error.is_some()));
    }
    tracing::info!(vtn = %args.vtn, aggregator = %args.aggregator, source = %args.source,
        interval_s = args.interval_s, "relaying the VTN's events");
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let outcome = bridge.poll().await;
        match &outcome.error {
            Some(error) => {
                tracing::warn!(%error, "poll failed: the last valid events stay in force")
            }
            None => tracing::debug!(
                listed = outcome.listed,
                posted = outcome.posted,
                cancelled = outcome.cancelled,
                refused = outcome.refused.len(),
                "polled"
            ),
        }
    }
}
