//! TLS for every link that crosses a network: rustls with `ring` as its one crypto backend.
//!
//! Servers load their certificate, key and client CA from PEM files and take a fresh copy of them
//! whenever the files change ([`ReloadingServerConfig`]): a rotated certificate applies to new
//! connections while open streams keep theirs. Handshakes run concurrently, each under a time
//! limit, so a slow or hostile client cannot hold the accept loop ([`accept`]). The verified client
//! certificate travels with the connection ([`Peer`]) so a service can check what the client
//! claims against what its certificate names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How long a client has to finish its handshake.
pub const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

/// Handshaken connections waiting for the server to take them.
const ACCEPTED_QUEUE: usize = 64;

/// Handshakes in progress at once: a flood of slow clients costs at most this many tasks.
const MAX_HANDSHAKES: usize = 1_024;

/// What went wrong loading TLS material; each names the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} = {path}: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{0}")]
    Config(String),
}

fn file_error(key: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        key,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// The one crypto backend.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| file_error(key, path, error))
}

fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(key, path, format!("not PEM certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate"));
    }
    Ok(certificates)
}

fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|error| file_error(key, path, format!("no PEM private key: {error}")))
}

fn roots(key: &'static str, path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    for certificate in certificates(key, path)? {
        store
            .add(certificate)
            .map_err(|error| file_error(key, path, format!("not a usable CA: {error}")))?;
    }
    Ok(Arc::new(store))
}

/// A server's TLS files: its certificate chain and key, and the CA its clients' certificates
/// must chain to (absent: clients are not asked for one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    /// With a client CA: whether a client without a certificate may still connect.
    pub client_cert_optional: bool,
    /// Application protocols offered (`h2` for gRPC, `http/1.1` for the HTTP API).
    pub alpn: Vec<Vec<u8>>,
}

impl ServerFiles {
    /// The files' current contents, hashed: a change to any of them means a reload.
    fn fingerprint(&self) -> Result<[u8; 32], TlsError> {
        let mut hash = Sha256::new();
        hash.update(read("cert_file", &self.cert_file)?);
        hash.update(read("key_file", &self.key_file)?);
        if let Some(ca) = &self.client_ca_file {
            hash.update(read("client_ca_file", ca)?);
        }
        Ok(hash.finalize().into())
    }

    /// A server configuration from the files as they are now.
    ///
    /// # Errors
    /// A file cannot be read, holds no certificate or key, or the key does not match.
    pub fn load(&self) -> Result<ServerConfig, TlsError> {
        let chain = certificates("cert_file", &self.cert_file)?;
        let key = private_key("key_file", &self.key_file)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?;
        let builder = match &self.client_ca_file {
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    roots("client_ca_file", path)?,
                    provider(),
                );
                let verifier = if self.client_cert_optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .map_err(|error| file_error("client_ca_file", path, error))?,
                )
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|error| file_error("key_file", &self.key_file, error))?;
        config.alpn_protocols.clone_from(&self.alpn);
        Ok(config)
    }
}

/// A server configuration that follows its files: [`Self::reload_if_changed`] swaps in a new one
/// when their contents change, and keeps the old one when the new files do not load.
#[derive(Debug)]
pub struct ReloadingServerConfig {
    files: ServerFiles,
    current: RwLock<(Arc<ServerConfig>, [u8; 32])>,
}

impl ReloadingServerConfig {
    /// # Errors
    /// The files do not load ([`ServerFiles::load`]).
    pub fn new(files: ServerFiles) -> Result<Self, TlsError> {
        let fingerprint = files.fingerprint()?;
        let config = Arc::new(files.load()?);
        Ok(Self {
            files,
            current: RwLock::new((config, fingerprint)),
        })
    }

    /// The configuration new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        let guard = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(&guard.0)
    }

    /// Loads the files again if their contents changed; `Ok(true)` when a new configuration
    /// is in use.
    ///
    /// # Errors
    /// The changed files do not load; the previous configuration stays in use.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let fingerprint = self.files.fingerprint()?;
        let unchanged = {
            let guard = self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.1 == fingerprint
        };
        if unchanged {
            return Ok(false);
        }
        let config = Arc::new(self.files.load()?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = (config, fingerprint);
        Ok(true)
    }

    /// Checks the files every `every` until `cancel`; `on_reload` hears each attempt that found
    /// a change (`Ok`) or could not load one (`Err`).
    pub async fn watch(
        self: Arc<Self>,
        every: Duration,
        cancel: CancellationToken,
        on_reload: impl Fn(&Result<bool, TlsError>) + Send + 'static,
    ) {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let this = Arc::clone(&self);
            let outcome = tokio::task::spawn_blocking(move || this.reload_if_changed())
                .await
                .unwrap_or_else(|join| Err(TlsError::Config(join.to_string())));
            match &outcome {
                Ok(false) => continue,
                Ok(true) => {
                    info!(cert = %self.files.cert_file.display(), "TLS files changed: new connections use the new certificate.");
                }
                Err(error) => {
                    warn!(%error, "TLS files changed but do not load; the previous certificate stays in use.");
                }
            }
            on_reload(&outcome);
        }
    }
}

/// Who is on the other end of a server connection.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client's verified end-entity certificate, when it presented one.
    pub certificate: Option<CertificateDer<'static>>,
}

impl Peer {
    /// Whether the peer's certificate names `host` (a DNS name or an IP address in its subject
    /// alternative names). False without a certificate.
    pub fn certified_for(&self, host: &str) -> bool {
        let Some(der) = &self.certificate else {
            return false;
        };
        let Ok(name) = ServerName::try_from(host.to_owned()) else {
            return false;
        };
        webpki::EndEntityCert::try_from(der)
            .is_ok_and(|certificate| certificate.verify_is_valid_for_subject_name(&name).is_ok())
    }
}

/// A server connection after a successful handshake.
#[derive(Debug)]
pub struct TlsConnection {
    stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: Peer,
}

impl TlsConnection {
    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

/// Why a handshake failed, as a metric label.
pub fn failure_reason(error: &std::io::Error) -> &'static str {
    use rustls::CertificateError as C;
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "expired_certificate"
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "certificate_not_yet_valid"
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => "unknown_issuer",
        rustls::Error::InvalidCertificate(C::Revoked) => "revoked_certificate",
        // Signed by a key other than the trusted CA's of that name: another CA, or a forgery.
        rustls::Error::InvalidCertificate(C::BadSignature) => "bad_signature",
        rustls::Error::InvalidCertificate(_) => "invalid_certificate",
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::AlertReceived(_) => "alert_from_client",
        rustls::Error::NoApplicationProtocol => "no_common_protocol",
        _ => "handshake",
    }
}

/// Accepts connections on `listener` and handshakes each on its own task, under
/// [`HANDSHAKE_LIMIT`] and at most `MAX_HANDSHAKES` (1024) at once; the ones that succeed come
/// out of the returned channel. `on_failure` hears the reason of each that does not. Stops at
/// `cancel`.
pub fn accept(
    listener: TcpListener,
    config: Arc<ReloadingServerConfig>,
    on_failure: impl Fn(&'static str) + Clone + Send + Sync + 'static,
    cancel: CancellationToken,
) -> mpsc::Receiver<TlsConnection> {
    let (sender, receiver) = mpsc::channel(ACCEPTED_QUEUE);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            // Past the bound, connections wait in the kernel's backlog instead of costing a task.
            let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
                return;
            };
            let (tcp, addr) = tokio::select! {
                () = cancel.cancelled() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of descriptors and the like: pause rather than spin.
                        warn!(%error, "Accepting a connection failed.");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
            let sender = sender.clone();
            let on_failure = on_failure.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_LIMIT, acceptor.accept(tcp)).await;
                drop(permit);
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        let reason = failure_reason(&error);
                        warn!(%addr, reason, %error, "TLS handshake refused.");
                        on_failure(reason);
                        return;
                    }
                    Err(_) => {
                        warn!(%addr, "TLS handshake timed out.");
                        on_failure("timeout");
                        return;
                    }
                };
                let certificate = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|der| der.clone().into_owned());
                let peer = Peer { addr, certificate };
                let _ = sender.send(TlsConnection { stream, peer }).await;
            });
        }
    });
    receiver
}

/// A client's TLS files: the CA that signed the server's certificate, and the client's own
/// certificate and key when the server asks for one (mutual TLS).
#[derive(
    Clone, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct ClientFiles {
    /// PEM file with the CA certificate(s) the server's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate chain presented to the server (mutual TLS).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry; default: the endpoint's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl ClientFiles {
    /// A client configuration from the files as they are now.
    ///
    /// # Errors
    /// A file cannot be read or holds no certificate or key; a certificate without its key.
    pub fn load(&self, alpn: &[u8]) -> Result<ClientConfig, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsError::Config(error.to_string()))?
            .with_root_certificates(roots("ca_file", &self.ca_file)?);
        let mut config = match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => builder
                .with_client_auth_cert(
                    certificates("cert_file", cert)?,
                    private_key("key_file", key)?,
                )
                .map_err(|error| file_error("key_file", key, error))?,
            (None, None) => builder.with_no_client_auth(),
            _ => {
                return Err(TlsError::Config(
                    "cert_file and key_file: give both or neither".into(),
                ));
            }
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

/// A TLS client for one server: its connector and the name its certificate must carry.
#[derive(Clone)]
pub struct TlsClient {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient")
            .field("name", &self.name)
            .finish()
    }
}

impl TlsClient {
    /// A client of `host` (a DNS name or an IP address; `server_name` overrides it) with `alpn`.
    ///
    /// # Errors
    /// The files do not load, or the name is neither a DNS name nor an IP address.
    pub fn new(files: &ClientFiles, host: &str, alpn: &[u8]) -> Result<Self, TlsError> {
        let name = files.server_name.clone().unwrap_or_else(|| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        });
        let name = ServerName::try_from(name.clone()).map_err(|_| {
            TlsError::Config(format!(
                "server_name: {name:?} is not a DNS name or IP address"
            ))
        })?;
        Ok(Self {
            connector: tokio_rustls::TlsConnector::from(Arc::new(files.load(alpn)?)),
            name,
        })
    }

    /// The handshake over `tcp`.
    ///
    /// # Errors
    /// The handshake fails (the server's certificate is not trusted or not for the name …).
    pub async fn connect(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        self.connector.connect(self.name.clone(), tcp).await
    }
}

/// A gRPC channel to `endpoint` (`http://` or `https://host:port`), over TLS with `tls` when given.
/// The files are read at each call, so a reconnect picks up a rotated certificate.
///
/// # Errors
/// The files do not load, the name is not valid, or the connection or handshake fails.
pub async fn grpc_channel(
    endpoint: tonic::transport::Endpoint,
    tls: Option<&ClientFiles>,
) -> Result<tonic::transport::Channel, Box<dyn std::error::Error + Send + Sync>> {
    let Some(files) = tls else {
        return Ok(endpoint.connect().await?);
    };
    let client = TlsClient::new(files, endpoint.uri().host().unwrap_or_default(), b"h2")?;
    let connect = tower::service_fn(move |uri: tonic::codegen::http::Uri| {
        let client = client.clone();
        async move {
            let host = uri.host().unwrap_or_default();
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            let stream = client.connect(tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector(connect).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `names` and its key, as PEM files in `dir`.
    fn certificate(dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}-key.pem"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn files(cert: PathBuf, key: PathBuf) -> ServerFiles {
        ServerFiles {
            cert_file: cert,
            key_file: key,
            client_ca_file: None,
            client_cert_optional: false,
            alpn: vec![b"h2".to_vec()],
        }
    }

    #[test]
    fn a_changed_set_is_swapped_in_and_a_broken_one_leaves_the_last_good_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certificate(dir.path(), "a", &["localhost"]);
        let reloading = ReloadingServerConfig::new(files(cert.clone(), key.clone())).unwrap();
        let first = reloading.current();
        assert!(!reloading.reload_if_changed().unwrap(), "nothing changed");
        assert!(Arc::ptr_eq(&first, &reloading.current()));

        let (next_cert, next_key) = certificate(dir.path(), "b", &["localhost"]);
        std::fs::copy(&next_cert, &cert).unwrap();
        std::fs::copy(&next_key, &key).unwrap();
        assert!(reloading.reload_if_changed().unwrap());
        let second = reloading.current();
        assert!(!Arc::ptr_eq(&first, &second));

        // Half a rotation: a new certificate beside the old key does not load.
        let (other_cert, _) = certificate(dir.path(), "c", &["localhost"]);
        std::fs::copy(&other_cert, &cert).unwrap();
        let error = reloading.reload_if_changed().unwrap_err();
        assert!(error.to_string().contains("key_file"), "{error}");
        assert!(Arc::ptr_eq(&second, &reloading.current()));
    }

    #[test]
    fn a_peer_is_certified_only_for_the_names_its_certificate_holds() {
        let certified =
            rcgen::generate_simple_self_signed(vec!["node-a".into(), "10.0.0.7".into()]).unwrap();
        let peer = Peer {
            addr: "127.0.0.1:1".parse().unwrap(),
            certificate: Some(certified.cert.der().clone()),
        };
        assert!(peer.certified_for("node-a"));
        assert!(peer.certified_for("10.0.0.7"));
        for other in ["node-b", "node-a.example", "NODE-B", "", "10.0.0.8", "*"] {
            assert!(!peer.certified_for(other), "{other:?}");
        }
        let anonymous = Peer {
            certificate: None,
            ..peer
        };
        assert!(!anonymous.certified_for("node-a"));
    }
}
