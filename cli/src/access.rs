//! How `footprint` commands reach a running aggregator (`--server` with TLS and a bearer token),
//! and `footprint token new`, which makes the tokens the aggregator's web config lists.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use footprint_proto::tls::ClientFiles;
use footprint_proto::v1::query_client::QueryClient;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// TLS files and token for `--server https://…`.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ConnectArgs {
    /// PEM CA certificate(s) that signed the aggregator's certificate; needed for https://.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (the aggregator's gRPC port asks every client for one).
    #[arg(long, value_name = "FILE", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `--cert-file`.
    #[arg(long, value_name = "FILE", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
    /// A file holding a bearer token with the `read` scope (`footprint token new`); needed when
    /// the aggregator's web config lists tokens.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

/// Adds `authorization: Bearer …` to each call when a token was given.
#[derive(Clone, Debug)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = QueryClient<InterceptedService<Channel, Bearer>>;

/// A Query client for `server`, over TLS when it is `https://`.
///
/// # Errors
/// Files that do not load, a token file that is empty, or no connection.
pub async fn query_client(server: &str, args: &ConnectArgs) -> anyhow::Result<Client> {
    let tls = match (&args.ca_file, server.starts_with("https://")) {
        (Some(ca_file), true) => Some(ClientFiles {
            ca_file: ca_file.clone(),
            cert_file: args.cert_file.clone(),
            key_file: args.key_file.clone(),
            server_name: None,
        }),
        (None, true) => anyhow::bail!("--ca-file is needed for an https:// --server"),
        (_, false) if args.cert_file.is_some() || args.ca_file.is_some() => {
            anyhow::bail!("--ca-file and --cert-file need an https:// --server")
        }
        (_, false) => None,
    };
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--token-file: reading {}", path.display()))?;
            let token = text.trim();
            anyhow::ensure!(
                !token.is_empty(),
                "--token-file: {} is empty",
                path.display()
            );
            Some(
                format!("Bearer {token}")
                    .parse()
                    .context("--token-file: the token is not printable ASCII")?,
            )
        }
        None => None,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(server.to_owned())
        .with_context(|| format!("--server: {server:?} is not a URL"))?
        .connect_timeout(Duration::from_secs(10));
    let channel = footprint_proto::tls::grpc_channel(endpoint, tls.as_ref())
        .await
        .map_err(|error| anyhow::anyhow!(error))
        .with_context(|| format!("connecting to {server}"))?;
    Ok(QueryClient::with_interceptor(channel, Bearer(token)))
}

/// `footprint token new`.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// The token's name, as refusals and logs call it (e.g. the team or the tool).
    #[arg(long)]
    name: String,
    /// What it may do, comma-separated: read, report, control.
    #[arg(long, value_delimiter = ',', required = true, value_parser = ["read", "report", "control"])]
    scope: Vec<String>,
    /// Limit reading to these projects' jobs, comma-separated (omit: the whole site).
    #[arg(long, value_delimiter = ',')]
    project: Vec<String>,
    /// Write the token into FILE (readable by its owner only) instead of printing it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

/// Makes a token and prints the web-config entry that admits it: only its hash is ever stored
/// on the aggregator's side.
///
/// # Errors
/// No randomness, or `--out` cannot be written (an existing file is never replaced).
pub fn new_token(args: &TokenArgs) -> anyhow::Result<()> {
    let token = footprint_aggregator::auth::new_token().context("reading OS randomness")?;
    let mut entry = format!(
        "  - name: {:?}\n    sha256: {}\n    scopes: [{}]\n",
        args.name,
        footprint_aggregator::auth::token_hash(&token),
        args.scope.join(", ")
    );
    if !args.project.is_empty() {
        let projects: Vec<String> = args.project.iter().map(|p| format!("{p:?}")).collect();
        entry.push_str(&format!("    projects: [{}]\n", projects.join(", ")));
    }
    match &args.out {
        Some(path) => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options
                .open(path)
                .with_context(|| format!("--out: creating {}", path.display()))?;
            std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes())?;
            println!("# the token is in {}", path.display());
        }
        None => {
            println!("# the token, shown once (keep it secret; only its hash is kept):\n{token}\n")
        }
    }
    print!("# add under bearer_tokens: in the aggregator's web config\n{entry}");
    Ok(())
}
