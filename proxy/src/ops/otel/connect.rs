//! The exporter library's client for the collector: the HTTP client (hyper,
//! hyper-rustls) for http/protobuf, the tonic channel for gRPC, both with the
//! TLS settings [`super::tls`] loaded (roots, client certificate) and the
//! endpoint's scheme. The library's own reading of the `OTEL_*` variables
//! (endpoint, `INSECURE`) is bypassed by handing it the client and channel
//! ready-made.

use std::collections::HashMap;
use std::error::Error;
use std::sync::{Arc, Mutex};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};

use super::client_auth::Probe;
use super::settings::Compression;
use super::{tls, OtelError, OtelSettings, OtlpProtocol};

/// Why the last HTTP request without a response failed, in words that say
/// what happened (the collector's certificate failed verification, the
/// collector refused ours, the connection was refused). The exporter library
/// returns "network error" for all of them; the worker adds this to its
/// warning.
///
/// With TLS and no client certificate configured, it also holds a
/// [`Probe`] that tells a collector refusing the exporter for want of one.
#[derive(Debug, Default)]
pub(super) struct FailureCause {
    last: Mutex<Option<String>>,
    probe: Option<Probe>,
}

impl FailureCause {
    /// A cause that asks `probe` when export starts failing.
    pub(super) fn probing(probe: Option<Probe>) -> Self {
        FailureCause {
            last: Mutex::default(),
            probe,
        }
    }

    fn set(&self, cause: Option<String>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = cause;
    }

    /// The cause noted since the last call, if the last request failed.
    pub(super) fn take(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Whether the collector refuses the exporter for want of a client
    /// certificate, and what to set then (one handshake, bounded by `timeout`).
    pub(super) async fn diagnose(&self, timeout: std::time::Duration) -> Option<String> {
        self.probe.as_ref()?.run(timeout).await
    }
}

/// The exporter for `s`, and what notes why its requests fail (the reason
/// of each failed HTTP request, the probe of a collector that may require a
/// client certificate).
pub(super) fn build_exporter(
    s: &OtelSettings,
) -> Result<(opentelemetry_otlp::LogExporter, Arc<FailureCause>), OtelError> {
    // gzip is passed explicitly. `none` cannot be (the builder takes only
    // an algorithm): the library then reads the same two variables itself,
    // which `main` trimmed before any thread started
    // (`trim_compression_variables`), so it finds what we found.
    let compression = match s.compression {
        Compression::None => None,
        Compression::Gzip => Some(opentelemetry_otlp::Compression::Gzip),
    };
    // Loaded once whatever the protocol, so a bad file is found and named
    // the same way for both.
    let tls = if s.plaintext() {
        None
    } else {
        Some(tls::load(&s.tls).map_err(OtelError::Tls)?)
    };
    let probe = match &tls {
        Some(t) if s.tls.client_cert.is_none() => Probe::new(&s.endpoint, &t.rustls),
        _ => None,
    };
    let cause = Arc::new(FailureCause::probing(probe));
    let exporter = match s.protocol {
        OtlpProtocol::HttpProtobuf => {
            let client = Noting {
                inner: opentelemetry_http::hyper::HyperClient::new(
                    https_connector(tls.map(|t| t.rustls))?,
                    s.export_timeout,
                    None,
                ),
                cause: cause.clone(),
            };
            let headers: HashMap<String, String> = s
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::clone(v)))
                .collect();
            let mut b = opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(s.http_logs_url())
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(s.export_timeout)
                .with_headers(headers);
            if let Some(c) = compression {
                b = b.with_compression(c);
            }
            b.build().map_err(OtelError::Build)
        }
        OtlpProtocol::Grpc => {
            let mut map = http::HeaderMap::new();
            for (k, v) in &s.headers {
                if let (Ok(k), Ok(v)) = (
                    http::HeaderName::try_from(k.as_str()),
                    http::HeaderValue::try_from(v.as_str()),
                ) {
                    map.insert(k, v);
                }
            }
            // The errors name neither the endpoint (checked to be an
            // http(s) URL already) nor its parts.
            let bad = |e: tonic::transport::Error| OtelError::BadVariable {
                var: s.endpoint_var,
                detail: format!("not usable as a gRPC endpoint: {}", crate::error_chain(&e)),
            };
            let mut endpoint = tonic::transport::Endpoint::from_shared(s.endpoint.clone())
                .map_err(bad)?
                .timeout(s.export_timeout)
                .tcp_nodelay(true);
            if let Some(t) = tls {
                endpoint = endpoint.tls_config(t.tonic).map_err(bad)?;
            }
            let channel = endpoint.connect_lazy();
            let mut b = opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_channel(channel)
                .with_protocol(Protocol::Grpc)
                .with_timeout(s.export_timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map),
                );
            if let Some(c) = compression {
                b = b.with_compression(c);
            }
            b.build().map_err(OtelError::Build)
        }
    }?;
    Ok((exporter, cause))
}

/// TCP, then TLS with `tls` (HTTP/1.1 in ALPN) for an https endpoint; an
/// https endpoint's connector refuses plaintext, a plaintext one's has no
/// TLS to offer.
fn https_connector(
    tls: Option<rustls::ClientConfig>,
) -> Result<HttpsConnector<HttpConnector>, OtelError> {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let b = hyper_rustls::HttpsConnectorBuilder::new();
    let b = match tls {
        Some(config) => b.with_tls_config(config).https_only(),
        None => b
            .with_tls_config(tls::unused_config().map_err(OtelError::Tls)?)
            .https_or_http(),
    };
    Ok(b.enable_http1().wrap_connector(tcp))
}

/// The HTTP client, noting why each request that got no response failed.
#[derive(Debug)]
struct Noting {
    inner: opentelemetry_http::hyper::HyperClient<HttpsConnector<HttpConnector>>,
    cause: Arc<FailureCause>,
}

#[async_trait::async_trait]
impl HttpClient for Noting {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let r = self.inner.send_bytes(request).await;
        // Each attempt replaces the last one's cause: a retry that got an
        // answer leaves none behind.
        self.cause
            .set(r.as_ref().err().map(|e| describe(e.as_ref())));
        r
    }
}

/// `e` in words: a TLS failure says so first (the HTTP client's own text
/// is only "client error (Connect)"); anything else is its chain of causes.
/// Neither holds a header, a body or a file's contents.
pub(super) fn describe(e: &(dyn Error + 'static)) -> String {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(t) = tls_error(x) {
            return match t {
                rustls::Error::InvalidCertificate(_) => format!(
                    "TLS: the collector's certificate failed verification ({t}); \
                     is its CA in OTEL_EXPORTER_OTLP_CERTIFICATE?"
                ),
                rustls::Error::AlertReceived(_) => {
                    format!("TLS: the collector refused the handshake ({t})")
                }
                _ => format!("TLS: {t}"),
            };
        }
        cur = x.source();
    }
    crate::error_chain(e)
}

/// The rustls error in `e`, itself or wrapped in I/O errors (tokio-rustls
/// wraps it in one, hyper-rustls that in another; an I/O error's `source`
/// skips what it wraps, so the layers are taken off here).
fn tls_error<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur = e;
    loop {
        if let Some(t) = cur.downcast_ref::<rustls::Error>() {
            return Some(t);
        }
        cur = cur.downcast_ref::<std::io::Error>()?.get_ref()?;
    }
}
