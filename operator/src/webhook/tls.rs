//! The webhook's TLS: the serving certificate is read from `<dir>/tls.crt` and `<dir>/tls.key`
//! (a mounted `kubernetes.io/tls` Secret) and re-read periodically, so that a renewed Secret
//! (the kubelet swaps the mounted files) is served without a restart. Each handshake picks the
//! certificate loaded last; a half-written or mismatched pair is logged and the previous one
//! kept.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{ServerConfig, version};
use tokio_rustls::server::TlsStream;

/// The certificate file in the certificate directory.
pub const CERTIFICATE_FILE: &str = "tls.crt";
/// The private key file in the certificate directory.
pub const KEY_FILE: &str = "tls.key";

/// A slow or silent client may not hold up the others' handshakes for longer than this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a certificate pair cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    /// A file could not be read.
    #[error("reading the webhook's TLS file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no PEM certificate or key.
    #[error("{path} holds no PEM {what}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was expected in it.
        what: &'static str,
        /// The parser's message.
        message: String,
    },
    /// The key is not the certificate's.
    #[error("the private key {key} does not fit the certificate {certificate}: {message}")]
    Mismatch {
        /// The certificate file.
        certificate: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's message.
        message: String,
    },
}

/// The PEM bytes of one pair, to tell whether the files changed.
#[derive(Clone, PartialEq, Eq)]
struct Pem {
    certificate: Vec<u8>,
    key: Vec<u8>,
}

/// The serving certificate, swapped in place when the files change.
pub struct Certificates {
    directory: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files as last read: what is served, or a pair found unusable (logged once).
    last_read: RwLock<Pem>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Certificates")
            .field("directory", &self.directory)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads the pair from `directory`; an unreadable or unusable pair fails, naming the file.
    pub fn load(directory: &Path) -> Result<Arc<Self>, CertificateError> {
        let provider = Arc::new(ring::default_provider());
        let pem = read(directory)?;
        let key = certified(directory, &pem, &provider)?;
        Ok(Arc::new(Self {
            directory: directory.to_path_buf(),
            provider,
            current: RwLock::new(Arc::new(key)),
            last_read: RwLock::new(pem),
        }))
    }

    /// Re-reads the files; returns whether a new certificate is now served.
    pub fn reload(&self) -> Result<bool, CertificateError> {
        let pem = read(&self.directory)?;
        if self
            .last_read
            .read()
            .is_ok_and(|last_read| *last_read == pem)
        {
            return Ok(false);
        }
        if let Ok(mut last_read) = self.last_read.write() {
            *last_read = pem.clone();
        }
        let key = certified(&self.directory, &pem, &self.provider)?;
        if let Ok(mut current) = self.current.write() {
            *current = Arc::new(key);
        }
        Ok(true)
    }

    /// The certificate for the next handshake.
    pub(crate) fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|current| Arc::clone(&current))
    }

    /// Re-reads the files every `period`, forever (errors are logged, the old pair kept).
    async fn watch(self: Arc<Self>, period: Duration) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.reload() {
                Ok(true) => tracing::info!(
                    directory = %self.directory.display(),
                    "the webhook's TLS certificate changed; serving the new one"
                ),
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    error = %chain(&error),
                    "the webhook's TLS files changed but cannot be used; still serving the previous certificate"
                ),
            }
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The error and its causes on one line, for the log.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}

fn read(directory: &Path) -> Result<Pem, CertificateError> {
    let read_file = |name: &str| {
        let path = directory.join(name);
        std::fs::read(&path).map_err(|source| CertificateError::Read { path, source })
    };
    Ok(Pem {
        certificate: read_file(CERTIFICATE_FILE)?,
        key: read_file(KEY_FILE)?,
    })
}

fn certified(
    directory: &Path,
    pem: &Pem,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, CertificateError> {
    let certificate_path = directory.join(CERTIFICATE_FILE);
    let key_path = directory.join(KEY_FILE);
    let chain = CertificateDer::pem_slice_iter(&pem.certificate)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| CertificateError::Parse {
            path: certificate_path.clone(),
            what: "certificate",
            message: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertificateError::Parse {
            path: certificate_path,
            what: "certificate",
            message: "no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key).map_err(|error| CertificateError::Parse {
        path: key_path.clone(),
        what: "private key",
        message: error.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|error| CertificateError::Mismatch {
        certificate: certificate_path,
        key: key_path,
        message: error.to_string(),
    })
}

/// A TLS listener for `axum::serve`: TCP connections are accepted and their handshakes run
/// concurrently (with a deadline) in the background; finished handshakes are handed over.
#[derive(Debug)]
pub struct TlsListener {
    address: SocketAddr,
    handshaken: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    /// Binds `address` and starts accepting and reloading `certificates` every `reload_every`.
    pub async fn bind(
        address: SocketAddr,
        certificates: Arc<Certificates>,
        reload_every: Duration,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!("binding the webhook address {address} (is another process using the port?)")
        })?;
        let address = listener
            .local_addr()
            .with_context(|| format!("reading the webhook listener's address ({address})"))?;
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&certificates.provider))
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .context("configuring TLS for the webhook")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (sender, handshaken) = mpsc::channel(64);
        tokio::spawn(accept(listener, acceptor, sender));
        tokio::spawn(certificates.watch(reload_every));
        Ok(Self {
            address,
            handshaken,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it does not, short of a panic): serve nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.address)
    }
}

/// Accepts connections until the listener's consumer is gone; each handshake in its own task.
async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshaken: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accepting a webhook connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if handshaken.is_closed() {
            return;
        }
        let acceptor = acceptor.clone();
        let handshaken = handshaken.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let _ = handshaken.send((stream, peer)).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "webhook TLS handshake failed");
                }
                Err(_) => tracing::debug!(%peer, "webhook TLS handshake timed out"),
            }
        });
    }
}
