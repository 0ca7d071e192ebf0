//! The `OTEL_*` environment variables, parsed once at startup.

use std::fmt;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::Resource;
use zeroize::Zeroizing;

use super::OtelError;

mod headers;
#[cfg(test)]
mod tests;
mod transport;

pub use headers::take_header_variables;
use headers::HEADERS;
pub use transport::{trim_compression_variables, Compression, FileVar, TlsFiles};

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

/// The generic endpoint: a base URL, `/v1/logs` appended for http/protobuf.
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The logs endpoint: used as-is (no path appended), and preferred over [`ENDPOINT`].
pub const LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
const PROTOCOL: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
];
const TIMEOUT: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
];
/// The spec's default export timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Encoded bytes per export request, at most. A collector refuses a whole
/// request over its message limit, and the usual one is 4 MiB (the
/// Collector's gRPC receiver, grpc-go and grpcio servers; OTLP/HTTP
/// receivers default to 20 MiB). 3.5 MiB of records leaves room under it
/// for the resource and scope, whose attributes come from environment
/// variables (at most 128 KiB each on Linux).
pub const MAX_REQUEST_BYTES: usize = 3584 << 10;
/// Bytes of records queued for export, at most (estimated). The count bound
/// alone let 4096 records with large captured bodies or 64 KB paths hold
/// gigabytes while a collector hangs; stderr's queue is bounded in bytes too.
pub const MAX_QUEUE_BYTES: usize = 64 << 20;

/// Everything OTLP export needs. Header values are secrets: `Debug` shows names only.
#[derive(Clone)]
pub struct OtelSettings {
    /// The collector URL, from [`LOGS_ENDPOINT`] or else [`ENDPOINT`].
    pub endpoint: String,
    /// Which of the two `endpoint` came from: only the generic one gets `/v1/logs`.
    pub endpoint_var: &'static str,
    /// `OTEL_EXPORTER_OTLP_LOGS_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub protocol: OtlpProtocol,
    /// `OTEL_EXPORTER_OTLP_LOGS_HEADERS`, else `OTEL_EXPORTER_OTLP_HEADERS`, percent-decoded.
    pub headers: Vec<(String, Zeroizing<String>)>,
    /// `OTEL_SERVICE_NAME` (else `service.name` from the attributes, else `iron-proxy`).
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, percent-decoded.
    pub resource_attributes: Vec<(String, String)>,
    /// Records queued before new ones are dropped.
    pub queue_size: usize,
    /// Bytes of records queued before new ones are dropped ([`MAX_QUEUE_BYTES`]).
    pub max_queue_bytes: usize,
    /// Records per export request.
    pub max_batch: usize,
    /// Encoded bytes of records per export request (estimated from above;
    /// [`MAX_REQUEST_BYTES`]). A record larger on its own is cut to fit.
    pub max_batch_bytes: usize,
    /// How long a partial batch waits.
    pub flush_interval: Duration,
    /// `OTEL_EXPORTER_OTLP_LOGS_TIMEOUT`, else `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// (milliseconds; default 10 s): the deadline of one export request.
    pub export_timeout: Duration,
    /// `OTEL_EXPORTER_OTLP_LOGS_COMPRESSION`, else `OTEL_EXPORTER_OTLP_COMPRESSION`.
    pub compression: Compression,
    /// The `CERTIFICATE`, `CLIENT_CERTIFICATE` and `CLIENT_KEY` files (each
    /// `_LOGS_` form first); all unset for a plaintext endpoint.
    pub tls: TlsFiles,
}

impl fmt::Debug for OtelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtelSettings")
            .field("endpoint", &self.endpoint_for_log())
            .field("endpoint_var", &self.endpoint_var)
            .field("protocol", &self.protocol)
            .field("header_names", &names)
            .field("service_name", &self.service_name)
            .field("resource_attributes", &self.resource_attributes)
            .field("export_timeout", &self.export_timeout)
            .field("compression", &self.compression)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// What the `OTEL_*` variables ask for, and the values that were ignored.
#[derive(Debug)]
pub struct OtelEnv {
    /// Whether to export, and where.
    pub export: OtelExport,
    /// Invalid values that were ignored (treated as unset, as the OTel
    /// specification says). Their text never holds a header value.
    pub warnings: Vec<OtelError>,
}

/// Whether the variables enable export.
#[derive(Debug)]
pub enum OtelExport {
    /// Export with these settings.
    Enabled(OtelSettings),
    /// Neither endpoint variable is set: export is off (the default).
    Unset,
    /// `OTEL_SDK_DISABLED=true`: export is off whatever else is set.
    SdkDisabled,
    /// `OTEL_LOGS_EXPORTER=none`: export is off whatever else is set.
    ExporterNone,
    /// The endpoint in effect is not an http(s) URL. Export is off rather
    /// than falling back to another endpoint: audit records must never go
    /// somewhere the operator did not name.
    InvalidEndpoint(OtelError),
}

impl OtelSettings {
    /// Reads the process environment (see [`OtelSettings::from_lookup`]);
    /// the header variables as [`take_header_variables`] kept them, once it
    /// has taken them out.
    pub fn from_env() -> OtelEnv {
        Self::from_lookup(headers::variable)
    }

    /// Reads the variables through `get` (tests pass a map). Never fails: an
    /// invalid value is reported in [`OtelEnv::warnings`] and treated as
    /// unset, except an invalid endpoint, which turns export off.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> OtelEnv {
        // The spec: an empty value is the same as an unset one.
        let get = |k: &str| {
            get(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let mut warnings = Vec::new();
        let done = |export, warnings| OtelEnv { export, warnings };
        match get("OTEL_SDK_DISABLED") {
            Some(v) if v.eq_ignore_ascii_case("true") => {
                return done(OtelExport::SdkDisabled, warnings)
            }
            Some(v) if !v.eq_ignore_ascii_case("false") => warnings.push(OtelError::BadVariable {
                var: "OTEL_SDK_DISABLED",
                detail: format!("{v:?} is neither true nor false; using false"),
            }),
            _ => {}
        }
        match get("OTEL_LOGS_EXPORTER") {
            Some(v) if v.eq_ignore_ascii_case("none") => {
                return done(OtelExport::ExporterNone, warnings)
            }
            Some(v) if !v.eq_ignore_ascii_case("otlp") => warnings.push(OtelError::BadVariable {
                var: "OTEL_LOGS_EXPORTER",
                detail: format!("{v:?} is not supported (use otlp or none); using otlp"),
            }),
            _ => {}
        }
        let (endpoint_var, endpoint) = match (get(LOGS_ENDPOINT), get(ENDPOINT)) {
            (Some(e), _) => (LOGS_ENDPOINT, e),
            (None, Some(e)) => (ENDPOINT, e),
            (None, None) => return done(OtelExport::Unset, warnings),
        };
        let protocol = first_valid(get, PROTOCOL, &mut warnings, |v| {
            match v.to_ascii_lowercase().as_str() {
                "http/protobuf" => Ok(OtlpProtocol::HttpProtobuf),
                "grpc" => Ok(OtlpProtocol::Grpc),
                _ => Err(format!(
                    "unsupported protocol {v:?} (use http/protobuf or grpc); ignored"
                )),
            }
        })
        .map_or(OtlpProtocol::HttpProtobuf, |(_, p)| p);
        // A gRPC endpoint may come without a scheme: INSECURE picks it.
        let endpoint = transport::with_scheme(endpoint, protocol, get, &mut warnings);
        if let Err(detail) = check_endpoint(&endpoint, protocol) {
            let e = OtelError::BadVariable {
                var: endpoint_var,
                detail: detail.into(),
            };
            return done(OtelExport::InvalidEndpoint(e), warnings);
        }
        // URL credentials are not sent by OTLP exporters; kept in the URL
        // they would reach the HTTP client's debug logs. Taken out, with a
        // warning that names the variable, not the value.
        let endpoint = match crate::redact_url::without_userinfo(&endpoint) {
            Some(bare) => {
                warnings.push(OtelError::BadVariable {
                    var: endpoint_var,
                    detail:
                        "the user and password in the URL are not sent (OTLP exporters send no \
                             URL credentials) and are left out; set \
                             OTEL_EXPORTER_OTLP_HEADERS=Authorization=Basic%20<base64> instead"
                            .into(),
                });
                bare
            }
            None => endpoint,
        };
        let tls = transport::tls_files(get, is_plaintext(&endpoint), &mut warnings);
        let compression = transport::compression(get, &mut warnings);
        let export_timeout = first_valid(get, TIMEOUT, &mut warnings, |v| match v.parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Duration::from_millis(ms)),
            _ => Err("must be a positive number of milliseconds; ignored".to_string()),
        })
        .map_or(DEFAULT_TIMEOUT, |(_, t)| t);
        // The logs variable replaces the generic one; the two are not merged.
        let headers = HEADERS
            .iter()
            .find_map(|var| get(var).map(|v| (*var, v)))
            .map(|(var, v)| parse_headers(&v, var, &mut warnings))
            .unwrap_or_default();
        let resource_attributes = match get("OTEL_RESOURCE_ATTRIBUTES") {
            None => Vec::new(),
            // The resource spec: on any error the whole value is discarded.
            Some(v) => match parse_pairs(&v, "OTEL_RESOURCE_ATTRIBUTES") {
                Ok(pairs) => pairs,
                Err(e) => {
                    warnings.push(e);
                    Vec::new()
                }
            },
        };
        let service_name = get("OTEL_SERVICE_NAME")
            .or_else(|| {
                resource_attributes
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| "iron-proxy".to_string());
        let settings = OtelSettings {
            endpoint,
            endpoint_var,
            protocol,
            headers,
            service_name,
            resource_attributes,
            queue_size: 4096,
            max_queue_bytes: MAX_QUEUE_BYTES,
            max_batch: 512,
            max_batch_bytes: MAX_REQUEST_BYTES,
            flush_interval: Duration::from_secs(1),
            export_timeout,
            compression,
            tls,
        };
        done(OtelExport::Enabled(settings), warnings)
    }

    /// The URL the HTTP exporter posts to: the logs endpoint as-is, or the
    /// generic endpoint plus `/v1/logs` (the OTLP exporter specification).
    pub(super) fn http_logs_url(&self) -> String {
        if self.endpoint_var == LOGS_ENDPOINT {
            return self.endpoint.clone();
        }
        // The path gets `/v1/logs`, not the whole text: a query string
        // (`?tenant=a`) stays a query.
        match url::Url::parse(&self.endpoint) {
            Ok(mut u) if u.query().is_some() || u.fragment().is_some() => {
                let path = format!("{}/v1/logs", u.path().trim_end_matches('/'));
                u.set_path(&path);
                u.to_string()
            }
            _ => format!("{}/v1/logs", self.endpoint.trim_end_matches('/')),
        }
    }

    /// Whether the endpoint is `http://`: no TLS.
    pub fn plaintext(&self) -> bool {
        is_plaintext(&self.endpoint)
    }

    /// The endpoint for logs: without userinfo (taken out when read, so
    /// this is a second guard), query or fragment, which may carry a key
    /// (`?token=...`); spelled as configured otherwise (no `/` added after a
    /// bare host and port).
    pub fn endpoint_for_log(&self) -> String {
        crate::redact_url::for_log(&self.endpoint)
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

/// Whether `endpoint` (checked to be an http(s) URL) is `http://`.
fn is_plaintext(endpoint: &str) -> bool {
    endpoint
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
}

/// Whether `endpoint` is an http(s) URL with a host. The error never
/// repeats the value: it may carry credentials in its userinfo.
fn check_endpoint(endpoint: &str, protocol: OtlpProtocol) -> Result<(), &'static str> {
    if protocol == OtlpProtocol::HttpProtobuf && !transport::has_scheme(endpoint) {
        return Err(
            "has no scheme: http/protobuf needs an http:// or https:// URL with a host \
                    (a scheme-less host:port is read only for grpc, where \
                    OTEL_EXPORTER_OTLP_INSECURE picks the scheme)",
        );
    }
    match url::Url::parse(endpoint) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        Ok(_) => Err("must be an http:// or https:// URL with a host"),
        Err(_) => Err("not a URL (an http:// or https:// URL with a host is needed)"),
    }
}

/// The first of `vars` (most specific first) that is set and parses, with
/// its name; an invalid one is reported and treated as unset, so the next
/// one applies.
fn first_valid<T>(
    get: impl Fn(&str) -> Option<String>,
    vars: [&'static str; 2],
    warnings: &mut Vec<OtelError>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Option<(&'static str, T)> {
    for var in vars {
        let Some(v) = get(var) else { continue };
        match parse(&v) {
            Ok(t) => return Some((var, t)),
            Err(detail) => warnings.push(OtelError::BadVariable { var, detail }),
        }
    }
    None
}

/// The headers of `s`. An entry that does not parse, or is not a valid HTTP
/// header, is skipped and reported by its position (never its value).
fn parse_headers(
    s: &str,
    var: &'static str,
    warnings: &mut Vec<OtelError>,
) -> Vec<(String, Zeroizing<String>)> {
    let mut out = Vec::new();
    for (i, item) in entries(s).enumerate() {
        let checked = parse_pair(item, i + 1).and_then(|(k, v)| {
            let v = Zeroizing::new(v);
            let valid = http::HeaderName::try_from(k.as_str()).is_ok()
                && http::HeaderValue::try_from(v.as_str()).is_ok();
            if valid {
                Ok((k, v))
            } else {
                Err(format!("entry {} is not a valid HTTP header", i + 1))
            }
        });
        match checked {
            Ok(h) => out.push(h),
            Err(detail) => warnings.push(OtelError::BadVariable {
                var,
                detail: format!("{detail}; entry skipped"),
            }),
        }
    }
    out
}

/// `k1=v1,k2=v2`, values percent-decoded (W3C baggage style, as the OTEL
/// spec says); any bad entry makes the whole value invalid.
fn parse_pairs(s: &str, var: &'static str) -> Result<Vec<(String, String)>, OtelError> {
    entries(s)
        .enumerate()
        .map(|(i, item)| parse_pair(item, i + 1))
        .collect::<Result<_, _>>()
        .map_err(|detail| OtelError::BadVariable {
            var,
            detail: format!("{detail}; the whole value is ignored"),
        })
}

fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// One `key=value` entry (the `n`th); the error names the entry, never its value.
fn parse_pair(item: &str, n: usize) -> Result<(String, String), String> {
    let Some((k, v)) = item.split_once('=') else {
        return Err(format!("entry {n} has no '='"));
    };
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("entry {n} has an empty key"));
    }
    let v = percent_encoding::percent_decode_str(v.trim())
        .decode_utf8()
        .map_err(|_| format!("value of entry {n} is not UTF-8 after percent-decoding"))?;
    Ok((k.to_string(), v.into_owned()))
}
