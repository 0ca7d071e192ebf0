//! The exporter library's client for the collector: the HTTP client (hyper,
//! rustls) for http/protobuf, the tonic channel for gRPC.

use std::collections::HashMap;

use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig, WithTonicConfig};

use super::{OtelError, OtelSettings, OtlpProtocol};

pub(super) fn build_exporter(
    s: &OtelSettings,
) -> Result<opentelemetry_otlp::LogExporter, OtelError> {
    match s.protocol {
        OtlpProtocol::HttpProtobuf => {
            let client = opentelemetry_http::hyper::HyperClient::new(
                https_connector(s)?,
                s.export_timeout,
                None,
            );
            let headers: HashMap<String, String> = s
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), String::clone(v)))
                .collect();
            opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_http_client(client)
                .with_endpoint(s.http_logs_url())
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(s.export_timeout)
                .with_headers(headers)
                .build()
                .map_err(OtelError::Build)
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
            let mut b = opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(s.endpoint.clone())
                .with_protocol(Protocol::Grpc)
                .with_timeout(s.export_timeout)
                .with_metadata(
                    opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(map),
                );
            if s.endpoint.starts_with("https://") {
                b = b.with_tls_config(
                    opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                        .with_native_roots(),
                );
            }
            b.build().map_err(OtelError::Build)
        }
    }
}

fn https_connector(
    s: &OtelSettings,
) -> Result<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    OtelError,
> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 && s.endpoint.starts_with("https://") {
        return Err(OtelError::NoRoots);
    }
    let provider = crate::tls::provider();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| OtelError::BadVariable {
            var: "OTEL_EXPORTER_OTLP_ENDPOINT",
            detail: format!("tls setup: {e}"),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build())
}
