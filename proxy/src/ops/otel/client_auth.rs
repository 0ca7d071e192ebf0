//! Whether the collector refuses the exporter for want of a client
//! certificate. A collector that requires one (mutual TLS) and gets none
//! ends the connection once the handshake is done: over TLS 1.3 the client
//! has already sent its first bytes by then, so what the exporter meets is
//! as often "broken pipe" or "connection reset" as the alert that says why,
//! and over gRPC tonic's own TLS gives no way to see the handshake.
//!
//! So when export starts failing and no client certificate is configured,
//! one handshake of our own ([`Probe::run`]) asks the collector: it notes
//! whether the collector sent a certificate request (the client-certificate
//! resolver is consulted exactly then) and reads the alert that follows.
//! The answer is added to the failure warning, naming the variables to set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::ServerName;
use tokio::io::AsyncReadExt;

/// How long the collector has to send its alert after the handshake: it
/// sends it as soon as it reads our (empty) certificate.
const ALERT_WAIT: Duration = Duration::from_secs(2);

/// One TLS handshake with the collector, to learn whether it requires a
/// client certificate.
#[derive(Debug)]
pub(super) struct Probe {
    host: String,
    port: u16,
    config: Arc<rustls::ClientConfig>,
    asked: Arc<AtomicBool>,
}

/// Notes that the collector asked for a client certificate; has none to give.
#[derive(Debug)]
struct Noting(Arc<AtomicBool>);

impl ResolvesClientCert for Noting {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.store(true, Ordering::Release);
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

impl Probe {
    /// A probe of the https `endpoint` with the exporter's TLS settings
    /// (`config`, which has no client certificate); `None` when the
    /// endpoint has no host.
    pub(super) fn new(endpoint: &str, config: &rustls::ClientConfig) -> Option<Probe> {
        let url = url::Url::parse(endpoint).ok()?;
        let host = url.host_str()?.trim_matches(['[', ']']).to_string();
        let port = url.port_or_known_default()?;
        let asked = Arc::new(AtomicBool::new(false));
        let mut config = config.clone();
        config.client_auth_cert_resolver = Arc::new(Noting(asked.clone()));
        Some(Probe {
            host,
            port,
            config: Arc::new(config),
            asked,
        })
    }

    /// Why the collector refuses the exporter, when it is for want of a
    /// client certificate; `None` when it is not (it did not ask for one, or
    /// took the connection without), or when the collector cannot be
    /// reached within `timeout` (the export's own error says so).
    pub(super) async fn run(&self, timeout: Duration) -> Option<String> {
        self.asked.store(false, Ordering::Release);
        let name = ServerName::try_from(self.host.clone()).ok()?;
        let connector = tokio_rustls::TlsConnector::from(self.config.clone());
        let handshake = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port)).await?;
            connector.connect(name, tcp).await
        };
        let asked = || self.asked.load(Ordering::Acquire);
        let refusal = match tokio::time::timeout(timeout, handshake).await {
            Err(_) => return None,
            // TLS 1.2: the collector refuses within the handshake.
            Ok(Err(e)) if asked() => alert(&e),
            Ok(Err(_)) => return None,
            Ok(Ok(_)) if !asked() => return None,
            // TLS 1.3: the handshake ends, then the collector reads our empty
            // certificate and says no.
            Ok(Ok(mut tls)) => {
                let mut byte = [0u8; 1];
                match tokio::time::timeout(ALERT_WAIT, tls.read(&mut byte)).await {
                    Ok(Err(e)) => alert(&e),
                    Ok(Ok(0)) => None,
                    // It answered, or waits for a request: it took the connection.
                    Ok(Ok(_)) | Err(_) => return None,
                }
            }
        };
        let alert = refusal.map_or(String::new(), |a| format!(" ({a})"));
        Some(format!(
            "the collector refused the TLS handshake{alert}: it requires a client certificate \
             and none is configured (set OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE and \
             OTEL_EXPORTER_OTLP_CLIENT_KEY, or their _LOGS_ forms)"
        ))
    }
}

/// The alert the collector sent, when `e` carries one.
fn alert(e: &std::io::Error) -> Option<String> {
    match e.get_ref()?.downcast_ref::<rustls::Error>()? {
        a @ rustls::Error::AlertReceived(_) => Some(a.to_string()),
        _ => None,
    }
}
