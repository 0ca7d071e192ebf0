//! The header variables, `OTEL_EXPORTER_OTLP_LOGS_HEADERS` and
//! `OTEL_EXPORTER_OTLP_HEADERS`, read by us alone.
//!
//! The exporter library reads them too, whatever headers its builder is
//! given: at `build()` it parses the logs variable (else the generic one)
//! with its own rules and lays the result over ours (HTTP:
//! `HttpExporterBuilder::build_client`; gRPC:
//! `TonicExporterBuilder::build_channel`, in opentelemetry-otlp 0.33). Its
//! rules are not ours: an entry whose value is not UTF-8 after
//! percent-decoding, which we skip with a warning, it sends with its value
//! undecoded. Then the wire carried a header that the start-up line and the
//! warnings said was not sent. There is no builder option that stops the
//! library's read, so [`take_header_variables`] takes the two variables out
//! of the environment before any thread starts, and keeps their values for
//! [`super::OtelSettings::from_env`]: the exporter is given our parsed
//! headers, and they are all it sends.
//!
//! The `TRACES` and `METRICS` forms are read by the library only when it
//! builds a span or metrics exporter, which iron-proxy never does: they are
//! left alone (and are ignored, as before).

use std::sync::OnceLock;

use zeroize::Zeroizing;

/// The header variables, most specific first.
pub(super) const HEADERS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
];

/// The values [`take_header_variables`] took out of the environment, in the
/// order of [`HEADERS`]; `None` for one unset (or not UTF-8, which both
/// readers treat as unset).
static TAKEN: OnceLock<[Option<Zeroizing<String>>; 2]> = OnceLock::new();

/// Takes `OTEL_EXPORTER_OTLP_LOGS_HEADERS` and `OTEL_EXPORTER_OTLP_HEADERS`
/// out of the environment, keeping their values for
/// [`super::OtelSettings::from_env`], so that the exporter library, which
/// would read them again with other rules, sends only the headers we parsed
/// and reported. Processes the proxy starts (the eBPF loader, a credential
/// helper) no longer inherit the collector's credentials either. A second
/// call changes nothing.
///
/// Call it before any thread exists (`unsetenv` beside a thread that reads
/// the environment is undefined behaviour in C), and after
/// [`crate::rep_movsb::reexec_if_needed`], whose new process image must
/// find the variables in the environment it is given.
pub fn take_header_variables() {
    TAKEN.get_or_init(|| {
        HEADERS.map(|var| {
            let value = std::env::var_os(var)?;
            std::env::remove_var(var);
            value.into_string().ok().map(Zeroizing::new)
        })
    });
}

/// The value of variable `var`: for a header variable the value
/// [`take_header_variables`] kept, for any other one (or in a process that
/// never called it: unit tests, the library used in-process) the
/// environment's.
pub(super) fn variable(var: &str) -> Option<String> {
    match (TAKEN.get(), HEADERS.iter().position(|h| *h == var)) {
        (Some(taken), Some(i)) => taken[i].as_deref().cloned(),
        _ => std::env::var(var).ok(),
    }
}
