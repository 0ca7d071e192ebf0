//! The transport variables of the OTLP exporter specification: the TLS
//! files (`CERTIFICATE`, `CLIENT_CERTIFICATE`, `CLIENT_KEY`, read when the
//! exporter is built), `INSECURE` (the scheme of a gRPC endpoint given
//! without one) and `COMPRESSION`; each `OTEL_EXPORTER_OTLP_LOGS_*` form
//! before the generic one.

use std::path::PathBuf;

use super::{first_valid, OtlpProtocol};
use crate::ops::otel::OtelError;

const INSECURE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_INSECURE",
    "OTEL_EXPORTER_OTLP_INSECURE",
];
const COMPRESSION: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION",
    "OTEL_EXPORTER_OTLP_COMPRESSION",
];
const CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CERTIFICATE",
];
const CLIENT_CERTIFICATE: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_CLIENT_CERTIFICATE",
    "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
];
const CLIENT_KEY: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
    "OTEL_EXPORTER_OTLP_CLIENT_KEY",
];

/// `OTEL_EXPORTER_OTLP_LOGS_COMPRESSION`, else `OTEL_EXPORTER_OTLP_COMPRESSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `none` (the default): requests are sent as they are.
    None,
    /// `gzip`: the HTTP body with `Content-Encoding: gzip`, the gRPC message
    /// with `grpc-encoding: gzip`.
    Gzip,
}

impl Compression {
    /// The variable's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
        }
    }
}

/// A file named by an environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVar {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub path: PathBuf,
}

/// The TLS files of the collector connection. All unset for a plaintext
/// endpoint, whose connection never uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates that verify the collector, instead of the system's roots.
    pub ca: Option<FileVar>,
    /// PEM client certificate chain, for mutual TLS.
    pub client_cert: Option<FileVar>,
    /// PEM private key of the client certificate.
    pub client_key: Option<FileVar>,
}

/// Whether `endpoint` names a scheme: `://` before any path, query or
/// fragment (as the exporter library reads it, so `collector:4317/p://q`
/// has none).
pub(super) fn has_scheme(endpoint: &str) -> bool {
    endpoint
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']))
}

/// The endpoint with a scheme. A gRPC endpoint given without one
/// (`collector:4317`) gets `http://` when `OTEL_EXPORTER_OTLP_INSECURE` is
/// true and `https://` otherwise (the specification's only use of
/// `INSECURE`). An endpoint that names its scheme keeps it: the scheme wins,
/// and an `INSECURE` that says otherwise is named in a warning. An
/// http/protobuf endpoint without a scheme is returned as it is, to be
/// refused as invalid.
pub(super) fn with_scheme(
    endpoint: String,
    protocol: OtlpProtocol,
    get: impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<OtelError>,
) -> String {
    let insecure = first_valid(get, INSECURE, warnings, |v| {
        match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(format!("{v:?} is neither true nor false; ignored")),
        }
    });
    if !has_scheme(&endpoint) {
        return match (protocol, insecure) {
            (OtlpProtocol::Grpc, Some((_, true))) => format!("http://{endpoint}"),
            (OtlpProtocol::Grpc, _) => format!("https://{endpoint}"),
            (OtlpProtocol::HttpProtobuf, _) => endpoint,
        };
    }
    let scheme = endpoint
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase());
    match (insecure, scheme.as_deref()) {
        (Some((var, true)), Some("https")) => warnings.push(OtelError::BadVariable {
            var,
            detail: "true has no effect: the endpoint's https:// scheme wins, so the \
                     connection uses TLS (INSECURE applies only to a gRPC endpoint without a \
                     scheme)"
                .into(),
        }),
        (Some((var, false)), Some("http")) => warnings.push(OtelError::BadVariable {
            var,
            detail: "false has no effect: the endpoint's http:// scheme wins, so the \
                     connection is plaintext (use an https:// endpoint for TLS)"
                .into(),
        }),
        _ => {}
    }
    endpoint
}

/// The TLS files; none for a plaintext (`http://`) endpoint, each set one
/// named in a warning then, since it would go unused.
pub(super) fn tls_files(
    get: impl Fn(&str) -> Option<String>,
    plaintext: bool,
    warnings: &mut Vec<OtelError>,
) -> TlsFiles {
    let file = |vars: [&'static str; 2]| {
        vars.into_iter().find_map(|var| {
            get(var).map(|v| FileVar {
                var,
                path: PathBuf::from(v),
            })
        })
    };
    let files = TlsFiles {
        ca: file(CERTIFICATE),
        client_cert: file(CLIENT_CERTIFICATE),
        client_key: file(CLIENT_KEY),
    };
    if !plaintext {
        return files;
    }
    for f in [files.ca, files.client_cert, files.client_key]
        .into_iter()
        .flatten()
    {
        warnings.push(OtelError::BadVariable {
            var: f.var,
            detail: "not used: the endpoint is plaintext http://, so there is no TLS \
                     (use an https:// endpoint)"
                .into(),
        });
    }
    TlsFiles::default()
}

/// The compression; an unknown value is named in a warning and skipped.
pub(super) fn compression(
    get: impl Fn(&str) -> Option<String>,
    warnings: &mut Vec<OtelError>,
) -> Compression {
    first_valid(get, COMPRESSION, warnings, |v| {
        match v.to_ascii_lowercase().as_str() {
            "gzip" => Ok(Compression::Gzip),
            "none" => Ok(Compression::None),
            _ => Err(format!(
                "unsupported compression {v:?} (use gzip or none); ignored"
            )),
        }
    })
    .map_or(Compression::None, |(_, c)| c)
}

/// Makes the exporter library read the compression variables as
/// [`compression`] does, so that what goes on the wire is what the start-up
/// line says. The library reads them itself whenever its builder is given
/// no compression, and "none" cannot be given (only an algorithm can; gzip
/// is). It reads them untrimmed: `"none "` is a value it ignores, moving on
/// to the generic variable, which may say gzip where ours, trimmed, says
/// none. So each variable set with spaces around its value is set again to
/// the trimmed value, which is what [`compression`] reads either way.
///
/// Call it before any thread exists: `setenv` beside a thread that reads the
/// environment is undefined behaviour in C.
pub fn trim_compression_variables() {
    for var in COMPRESSION {
        let Some(value) = std::env::var_os(var) else {
            continue;
        };
        // A value that is not UTF-8 is ignored by both readers.
        let Some(text) = value.to_str() else { continue };
        let trimmed = text.trim();
        if trimmed.len() != text.len() {
            std::env::set_var(var, trimmed);
        }
    }
}
