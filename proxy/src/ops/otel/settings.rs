//! The `OTEL_*` environment variables, parsed once at startup.

use std::fmt;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use zeroize::Zeroizing;

use super::OtelError;

/// `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf` (the default): POST to `<endpoint>/v1/logs`.
    HttpProtobuf,
    /// `grpc`: the `LogsService/Export` RPC.
    Grpc,
}

impl OtlpProtocol {
    /// The variable's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OtlpProtocol::HttpProtobuf => "http/protobuf",
            OtlpProtocol::Grpc => "grpc",
        }
    }
}

/// Everything OTLP export needs. Header values are secrets: `Debug` shows names only.
#[derive(Clone)]
pub struct OtelSettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector's base URL.
    pub endpoint: String,
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: OtlpProtocol,
    /// `OTEL_EXPORTER_OTLP_HEADERS`, percent-decoded.
    pub headers: Vec<(String, Zeroizing<String>)>,
    /// `OTEL_SERVICE_NAME` (else `service.name` from the attributes, else `iron-proxy`).
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, percent-decoded.
    pub resource_attributes: Vec<(String, String)>,
    /// Records queued before new ones are dropped.
    pub queue_size: usize,
    /// Records per export request.
    pub max_batch: usize,
    /// How long a partial batch waits.
    pub flush_interval: Duration,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds; default 10 s).
    pub export_timeout: Duration,
}

impl fmt::Debug for OtelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtelSettings")
            .field("endpoint", &self.endpoint_for_log())
            .field("protocol", &self.protocol)
            .field("header_names", &names)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .finish_non_exhaustive()
    }
}

impl OtelSettings {
    /// Settings from the process environment; `None` when export is disabled
    /// (`OTEL_EXPORTER_OTLP_ENDPOINT` unset or empty).
    pub fn from_env() -> Result<Option<Self>, OtelError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Settings from any variable lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, OtelError> {
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(endpoint) = get("OTEL_EXPORTER_OTLP_ENDPOINT") else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(OtelError::BadVariable {
                var: "OTEL_EXPORTER_OTLP_ENDPOINT",
                detail: "must be an http:// or https:// URL".into(),
            });
        }
        let protocol = match get("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => return Err(OtelError::UnsupportedProtocol(other.to_string())),
        };
        let headers = get("OTEL_EXPORTER_OTLP_HEADERS")
            .map(|h| parse_pairs(&h, "OTEL_EXPORTER_OTLP_HEADERS"))
            .transpose()?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, Zeroizing::new(v)))
            .collect();
        let resource_attributes = get("OTEL_RESOURCE_ATTRIBUTES")
            .map(|h| parse_pairs(&h, "OTEL_RESOURCE_ATTRIBUTES"))
            .transpose()?
            .unwrap_or_default();
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "iron-proxy".to_string());
        let export_timeout = match get("OTEL_EXPORTER_OTLP_TIMEOUT") {
            None => Duration::from_secs(10),
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| OtelError::BadVariable {
                var: "OTEL_EXPORTER_OTLP_TIMEOUT",
                detail: "must be a number of milliseconds".into(),
            })?),
        };
        Ok(Some(OtelSettings {
            endpoint,
            protocol,
            headers,
            service_name,
            resource_attributes,
            queue_size: 4096,
            max_batch: 512,
            flush_interval: Duration::from_secs(1),
            export_timeout,
        }))
    }

    /// The URL the HTTP exporter posts to.
    pub(super) fn http_logs_url(&self) -> String {
        format!("{}/v1/logs", self.endpoint.trim_end_matches('/'))
    }

    /// The endpoint with any userinfo removed, for logs.
    pub fn endpoint_for_log(&self) -> String {
        match url::Url::parse(&self.endpoint) {
            Ok(mut u) => {
                let _ = u.set_username("");
                let _ = u.set_password(None);
                u.to_string()
            }
            Err(_) => "(unparsable)".to_string(),
        }
    }

    /// The resource: the attributes, then `service.name` (which wins), plus `service.version`.
    pub(super) fn resource(&self) -> Resource {
        let mut attrs: Vec<KeyValue> = self
            .resource_attributes
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        if !self
            .resource_attributes
            .iter()
            .any(|(k, _)| k == "service.version")
        {
            attrs.push(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        }
        Resource::builder_empty()
            .with_attributes(attrs)
            .with_service_name(self.service_name.clone())
            .build()
    }
}

/// `k1=v1,k2=v2`, values percent-decoded (W3C baggage style, as the OTEL spec says).
fn parse_pairs(s: &str, var: &'static str) -> Result<Vec<(String, String)>, OtelError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(OtelError::BadVariable {
                var,
                detail: format!("entry {} has no '='", out.len() + 1),
            });
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(OtelError::BadVariable {
                var,
                detail: format!("entry {} has an empty key", out.len() + 1),
            });
        }
        let v = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| OtelError::BadVariable {
                var,
                detail: format!("value of {k} is not UTF-8 after percent-decoding"),
            })?;
        out.push((k.to_string(), v.into_owned()));
    }
    Ok(out)
}
