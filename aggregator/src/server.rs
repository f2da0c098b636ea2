//! Starting and stopping the aggregator: store, gRPC (`Ingest`, `Query`) and HTTP servers.

use std::net::SocketAddr;
use std::sync::Arc;

use footprint_proto::v1::ingest_server::IngestServer;
use footprint_proto::v1::query_server::QueryServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::budget::IngestBudget;
use crate::config::AggregatorConfig;
use crate::ingest::IngestService;
use crate::metrics::AggregatorMetrics;
use crate::query::{LedgerReader, QueryService};
use crate::store::StoreHandle;
use crate::{Error, Result};

/// How long stopping waits for the ledger writer to finish its last commit and lay-out.
const WRITER_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);

/// Largest message accepted on a stream.
const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// An aggregator serving on its bound addresses until [`RunningAggregator::stop`].
#[derive(Debug)]
pub struct RunningAggregator {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub store: StoreHandle,
    pub reader: LedgerReader,
    pub metrics: Arc<AggregatorMetrics>,
    /// Sends directives (GPU power caps) down the open collector streams.
    pub directives: crate::ingest::Directives,
    shutdown: CancellationToken,
    failed: CancellationToken,
    tasks: Vec<JoinHandle<Result<()>>>,
}

/// Opens the ledger and starts serving. Port 0 in the config picks a free port; the bound
/// addresses are in the result.
///
/// # Errors
/// The ledger cannot be opened or an address cannot be bound.
pub async fn start(config: &AggregatorConfig) -> Result<RunningAggregator> {
    let web = match &config.web_config_file {
        Some(path) => crate::auth::WebConfig::load(path)
            .map_err(|error| Error::Server(format!("web_config_file: {error}")))?,
        None => crate::auth::WebConfig::default(),
    };
    let tls_error =
        |key: &str, error: footprint_proto::tls::TlsError| Error::Server(format!("{key}: {error}"));
    let grpc_tls = match &config.tls {
        Some(tls) => Some(Arc::new(
            footprint_proto::tls::ReloadingServerConfig::new(tls.server_files())
                .map_err(|error| tls_error("tls", error))?,
        )),
        None => None,
    };
    let http_tls = match web.server_files() {
        Some(files) => Some(Arc::new(
            footprint_proto::tls::ReloadingServerConfig::new(files)
                .map_err(|error| tls_error("web_config_file", error))?,
        )),
        None => None,
    };
    let tokens = crate::auth::Tokens::new(&web);
    let metrics = Arc::new(AggregatorMetrics::default());
    let store = StoreHandle::open(config, Arc::clone(&metrics))?;
    let reader = LedgerReader::new(store.path().to_path_buf());
    let shutdown = CancellationToken::new();
    let failed = CancellationToken::new();

    let grpc_listener = TcpListener::bind(config.grpc_listen).await?;
    let http_listener = TcpListener::bind(config.http_listen).await?;
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;

    let ingest_service = IngestService::new(
        store.clone(),
        Arc::clone(&metrics),
        Arc::new(IngestBudget::new(
            config.ingest_budget_bytes,
            std::time::Duration::from_millis(config.overload_wait_ms),
        )),
        config.input_limits.clone(),
    );
    let directives = ingest_service.directives();
    let ingest = IngestServer::new(ingest_service)
        .max_decoding_message_size(config.input_limits.max_message_bytes)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let query_tokens = tokens.clone();
    let query_metrics = Arc::clone(&metrics);
    let query = QueryServer::with_interceptor(
        QueryService::new(reader.clone()),
        move |request: tonic::Request<()>| match &query_tokens {
            Some(tokens) => {
                crate::auth::check_grpc(tokens, &query_metrics, &request).map(|()| request)
            }
            None => Ok(request),
        },
    );
    let grpc_shutdown = shutdown.clone();
    let grpc_failed = failed.clone();
    let grpc_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .layer(tower::util::MapRequestLayer::new(
            crate::auth::tag_grpc_path::<tonic::body::Body>,
        ))
        .add_service(ingest)
        .add_service(query);
    let grpc_incoming = match &grpc_tls {
        Some(tls) => {
            watch_tls(
                tls,
                config.tls.as_ref().map_or(30, |t| t.reload_interval_s),
                &metrics,
                &shutdown,
            );
            Incoming::Tls(tls_connections(grpc_listener, tls, &metrics, &shutdown))
        }
        None => Incoming::Plain(grpc_listener),
    };
    let grpc = tokio::spawn(async move {
        let served = match grpc_incoming {
            Incoming::Tls(connections) => {
                grpc_server
                    .serve_with_incoming_shutdown(
                        tokio_stream::StreamExt::map(
                            tokio_stream::wrappers::ReceiverStream::new(connections.receiver),
                            Ok::<_, std::io::Error>,
                        ),
                        grpc_shutdown.cancelled_owned(),
                    )
                    .await
            }
            Incoming::Plain(listener) => {
                grpc_server
                    .serve_with_incoming_shutdown(
                        TcpListenerStream::new(listener),
                        grpc_shutdown.cancelled_owned(),
                    )
                    .await
            }
        }
        .map_err(|error| Error::Server(format!("gRPC: {error}")));
        if served.is_err() {
            grpc_failed.cancel();
        }
        served
    });
    // GPU caps from demand-response budgets, when the site has turned them on.
    let planner = config.grid.cap_gpus.then(|| {
        background(crate::grid::planner::run(
            reader.clone(),
            directives.clone(),
            config.clone(),
            shutdown.clone(),
        ))
    });
    // Parquet history as days settle, when a directory is configured.
    let parquet = config.parquet.dir.is_some().then(|| {
        background(crate::parquet_history::run(
            reader.clone(),
            store.clone(),
            config.parquet.clone(),
            Arc::clone(&metrics),
            shutdown.clone(),
        ))
    });
    // Settled hours to InfluxDB 2, when a URL is configured.
    let influx = config.influxdb.url.is_some().then(|| {
        background(crate::influx::run(
            reader.clone(),
            store.clone(),
            config.influxdb.clone(),
            Arc::clone(&metrics),
            shutdown.clone(),
        ))
    });
    let http_shutdown = shutdown.clone();
    let router = crate::http::router(
        reader.clone(),
        Arc::clone(&metrics),
        Some(crate::http::Control {
            store: store.clone(),
            directives: directives.clone(),
        }),
        tokens,
    );
    let http_failed = failed.clone();
    let http_incoming = match &http_tls {
        Some(tls) => {
            // The web-config file's certificates are watched like the gRPC ones.
            watch_tls(tls, 30, &metrics, &shutdown);
            Incoming::Tls(tls_connections(http_listener, tls, &metrics, &shutdown))
        }
        None => Incoming::Plain(http_listener),
    };
    let http = tokio::spawn(async move {
        let served = match http_incoming {
            Incoming::Tls(connections) => {
                axum::serve(connections, router)
                    .with_graceful_shutdown(http_shutdown.cancelled_owned())
                    .await
            }
            Incoming::Plain(listener) => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(http_shutdown.cancelled_owned())
                    .await
            }
        }
        .map_err(|error| Error::Server(format!("HTTP: {error}")));
        if served.is_err() {
            http_failed.cancel();
        }
        served
    });
    info!(%grpc_addr, %http_addr, ledger = %store.path().display(), "Aggregator listening.");
    for (addr, encrypted) in [
        (grpc_addr, grpc_tls.is_some()),
        (http_addr, http_tls.is_some()),
    ] {
        if !encrypted && !addr.ip().is_loopback() {
            warn!(%addr, "Listening in plaintext beyond loopback (insecure = true): anyone who can reach this address can send readings and read the ledger.");
        }
    }
    Ok(RunningAggregator {
        grpc_addr,
        http_addr,
        store,
        reader,
        metrics,
        directives,
        shutdown,
        failed,
        tasks: [grpc, http]
            .into_iter()
            .chain(planner)
            .chain(parquet)
            .chain(influx)
            .collect(),
    })
}

/// Where a server's connections come from.
enum Incoming {
    Plain(TcpListener),
    Tls(TlsConnections),
}

/// Connections that finished their TLS handshake, for `axum::serve` and tonic alike.
struct TlsConnections {
    receiver: tokio::sync::mpsc::Receiver<footprint_proto::tls::TlsConnection>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsConnections {
    type Io = footprint_proto::tls::TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(connection) => {
                let addr = connection.peer().addr;
                (connection, addr)
            }
            // The accept loop ends only at shutdown, which stops the server first.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

fn tls_connections(
    listener: TcpListener,
    tls: &Arc<footprint_proto::tls::ReloadingServerConfig>,
    metrics: &Arc<AggregatorMetrics>,
    shutdown: &CancellationToken,
) -> TlsConnections {
    let local = listener
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let metrics = Arc::clone(metrics);
    let receiver = footprint_proto::tls::accept(
        listener,
        Arc::clone(tls),
        move |reason| metrics.handshake_failed(reason),
        shutdown.clone(),
    );
    TlsConnections { receiver, local }
}

/// Reloads changed TLS files every `every_s` seconds until shutdown.
fn watch_tls(
    tls: &Arc<footprint_proto::tls::ReloadingServerConfig>,
    every_s: u64,
    metrics: &Arc<AggregatorMetrics>,
    shutdown: &CancellationToken,
) {
    let metrics = Arc::clone(metrics);
    tokio::spawn(Arc::clone(tls).watch(
        std::time::Duration::from_secs(every_s.max(1)),
        shutdown.clone(),
        move |outcome| metrics.tls_reload(outcome.is_ok()),
    ));
}

/// A task that runs until shutdown and has no error of its own to report, among the servers'.
fn background(
    run: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        run.await;
        Ok(())
    })
}

impl RunningAggregator {
    /// Stops accepting, lets open streams finish, and returns once the servers have stopped.
    ///
    /// # Errors
    /// The first error a server reported.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        let mut first_error = None;
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(join) => {
                    first_error.get_or_insert(Error::Server(join.to_string()));
                }
            }
        }
        // The servers held the other handles; the ledger is closed once the writer is done.
        if !self.store.close(WRITER_PATIENCE).await {
            warn!(
                patience_s = WRITER_PATIENCE.as_secs(),
                "The ledger writer is still running (a store handle is held elsewhere)."
            );
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Resolves when a server stopped on its own, which only an error makes it do.
    pub async fn failed(&self) {
        self.failed.cancelled().await;
    }
}
