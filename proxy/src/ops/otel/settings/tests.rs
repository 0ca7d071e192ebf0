//! Resolution of the `OTEL_*` variables from a map (the process environment
//! is never touched, so these run in parallel with everything else).

use std::time::Duration;

use super::*;

fn env(vars: &[(&str, &str)]) -> OtelEnv {
    OtelSettings::from_lookup(|k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    })
}

/// The settings, asserting that export is on.
fn enabled(vars: &[(&str, &str)]) -> (OtelSettings, Vec<OtelError>) {
    let e = env(vars);
    match e.export {
        OtelExport::Enabled(s) => (s, e.warnings),
        other => panic!("export not enabled by {vars:?}: {other:?}"),
    }
}

fn warned_about(warnings: &[OtelError], var: &str) -> bool {
    warnings
        .iter()
        .any(|w| matches!(w, OtelError::BadVariable { var: v, .. } if *v == var))
}

const GENERIC: (&str, &str) = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318/base/");

#[test]
fn env_parsing() {
    let e = env(&[]);
    assert!(matches!(e.export, OtelExport::Unset), "{e:?}");
    assert!(e.warnings.is_empty());
    let (s, w) = enabled(&[
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "https://collector.example:4318/",
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authorization=Bearer%20abc , x-team=blue",
        ),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=staging,service.name=from-attrs",
        ),
    ]);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(s.service_name, "from-attrs");
    assert_eq!(s.export_timeout, Duration::from_secs(10));
    assert_eq!(s.http_logs_url(), "https://collector.example:4318/v1/logs");
    assert_eq!(s.endpoint_for_log(), "https://collector.example:4318/");
    assert_eq!(s.headers[0].0, "Authorization");
    assert_eq!(s.headers[0].1.as_str(), "Bearer abc");
    let dbg = format!("{s:?}");
    assert!(!dbg.contains("abc"), "{dbg}");
    // A user and password in the URL are taken out (never sent, never in a
    // client's debug log), with a warning that does not repeat them.
    let (s, w) = enabled(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "https://user:pw-s3cret@collector.example:4318/",
    )]);
    assert_eq!(s.http_logs_url(), "https://collector.example:4318/v1/logs");
    assert_eq!(w.len(), 1, "{w:?}");
    let text = w[0].to_string();
    assert!(
        text.contains("OTEL_EXPORTER_OTLP_ENDPOINT") && !text.contains("s3cret"),
        "{text}"
    );
    assert!(!format!("{s:?}").contains("s3cret"));
    // A query string stays a query: `/v1/logs` goes on the path.
    let (s, _) = enabled(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://c:4318/base/?tenant=a",
    )]);
    assert_eq!(s.http_logs_url(), "http://c:4318/base/v1/logs?tenant=a");
    // Spelled as configured, userinfo removed: no `/` added after a bare host
    // and port (the spec's start-up line).
    for (endpoint, logged) in [
        ("https://c.example:4318", "https://c.example:4318"),
        ("https://u:p@c.example:4318", "https://c.example:4318"),
        ("https://c.example:4318/", "https://c.example:4318/"),
        ("https://u:p@c.example/otlp/", "https://c.example/otlp/"),
        ("https://c.example/otlp", "https://c.example/otlp"),
    ] {
        let (s, _) = enabled(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
        assert_eq!(s.endpoint_for_log(), logged, "{endpoint}");
    }
    let (s, _) = enabled(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "GRPC"),
        ("OTEL_SERVICE_NAME", "px"),
    ]);
    assert_eq!(
        (s.protocol, s.service_name.as_str()),
        (OtlpProtocol::Grpc, "px"),
        "protocol names are case-insensitive"
    );
}

#[test]
fn logs_variables_take_precedence_over_generic_ones() {
    let (s, w) = enabled(&[
        GENERIC,
        (
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "http://logs:4318/custom/path",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=generic,b=generic"),
        ("OTEL_EXPORTER_OTLP_LOGS_HEADERS", "a=logs"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "1500"),
    ]);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.endpoint_var, LOGS_ENDPOINT);
    assert_eq!(
        s.http_logs_url(),
        "http://logs:4318/custom/path",
        "the logs endpoint is used as-is"
    );
    assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf);
    let headers: Vec<(&str, &str)> = s
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        headers,
        [("a", "logs")],
        "the logs headers replace the generic ones"
    );
    assert_eq!(s.export_timeout, Duration::from_millis(1500));

    // Without the logs variables, the generic ones apply.
    let (s, w) = enabled(&[
        GENERIC,
        ("OTEL_EXPORTER_OTLP_HEADERS", "a=generic"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    ]);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.endpoint_var, ENDPOINT);
    assert_eq!(s.http_logs_url(), "http://generic:4318/base/v1/logs");
    assert_eq!(s.headers.len(), 1);
    assert_eq!(s.export_timeout, Duration::from_secs(2));

    // The logs endpoint alone enables export; gRPC uses it as-is too.
    let (s, _) = enabled(&[
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "https://logs:4317"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "grpc"),
    ]);
    assert_eq!(
        (s.endpoint.as_str(), s.protocol),
        ("https://logs:4317", OtlpProtocol::Grpc)
    );
}

#[test]
fn sdk_disabled_and_exporter_none_turn_export_off() {
    for v in ["true", "TRUE", "True"] {
        let e = env(&[GENERIC, ("OTEL_SDK_DISABLED", v)]);
        assert!(matches!(e.export, OtelExport::SdkDisabled), "{v}: {e:?}");
    }
    // Even an invalid endpoint is not looked at then.
    let e = env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "nonsense"),
        ("OTEL_SDK_DISABLED", "true"),
    ]);
    assert!(matches!(e.export, OtelExport::SdkDisabled), "{e:?}");
    assert!(e.warnings.is_empty(), "{:?}", e.warnings);
    let (_, w) = enabled(&[GENERIC, ("OTEL_SDK_DISABLED", "false")]);
    assert!(w.is_empty(), "{w:?}");
    // Only "true" is true; anything else is false, with a warning.
    let (_, w) = enabled(&[GENERIC, ("OTEL_SDK_DISABLED", "1")]);
    assert!(warned_about(&w, "OTEL_SDK_DISABLED"), "{w:?}");
    let (_, w) = enabled(&[GENERIC, ("OTEL_SDK_DISABLED", "")]);
    assert!(w.is_empty(), "an empty value is unset: {w:?}");

    let e = env(&[GENERIC, ("OTEL_LOGS_EXPORTER", "none")]);
    assert!(matches!(e.export, OtelExport::ExporterNone), "{e:?}");
    let (_, w) = enabled(&[GENERIC, ("OTEL_LOGS_EXPORTER", "otlp")]);
    assert!(w.is_empty(), "{w:?}");
    let (_, w) = enabled(&[GENERIC, ("OTEL_LOGS_EXPORTER", "console")]);
    assert!(warned_about(&w, "OTEL_LOGS_EXPORTER"), "{w:?}");
}

#[test]
fn invalid_values_are_ignored_with_a_warning() {
    let (s, w) = enabled(&[
        GENERIC,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team=blue,novalue"),
    ]);
    assert_eq!(s.protocol, OtlpProtocol::HttpProtobuf, "the default");
    assert_eq!(s.export_timeout, DEFAULT_TIMEOUT);
    assert!(
        s.resource_attributes.is_empty(),
        "a bad entry discards the whole value (resource spec): {:?}",
        s.resource_attributes
    );
    for var in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_RESOURCE_ATTRIBUTES",
    ] {
        assert!(warned_about(&w, var), "no warning about {var}: {w:?}");
    }

    // An invalid logs value falls back to the generic one, not to the default.
    let (s, w) = enabled(&[
        GENERIC,
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "carrier-pigeon"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
    ]);
    assert_eq!(s.protocol, OtlpProtocol::Grpc);
    assert_eq!(s.export_timeout, Duration::from_secs(3));
    assert!(
        warned_about(&w, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"),
        "{w:?}"
    );
    assert!(warned_about(&w, "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT"), "{w:?}");
}

#[test]
fn bad_header_entries_are_skipped_and_their_values_never_reported() {
    let (s, w) = enabled(&[
        GENERIC,
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "ok=fine,s3cr3t-no-equals,=s3cr3t-no-key,bad name=s3cr3t-name,x=s3cr3t%0Anewline,y=%FFs3cr3t",
        ),
    ]);
    let names: Vec<&str> = s.headers.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["ok"], "only the valid entry is kept");
    assert_eq!(w.len(), 5, "one warning per bad entry: {w:?}");
    for warning in &w {
        let text = warning.to_string();
        assert!(text.contains("OTEL_EXPORTER_OTLP_HEADERS"), "{text}");
        assert!(
            !text.contains("s3cr3t"),
            "a header value reached a warning: {text}"
        );
    }
}

#[test]
fn an_invalid_endpoint_turns_export_off_without_falling_back() {
    for (vars, var) in [
        (
            vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
            ENDPOINT,
        ),
        (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c/")], ENDPOINT),
        (vec![("OTEL_EXPORTER_OTLP_ENDPOINT", "http://")], ENDPOINT),
        (
            vec![
                ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "user:s3cr3t@logs"),
                GENERIC,
            ],
            LOGS_ENDPOINT,
        ),
    ] {
        let e = env(&vars);
        let OtelExport::InvalidEndpoint(err) = &e.export else {
            panic!("{vars:?}: export not off: {e:?}")
        };
        assert!(
            matches!(err, OtelError::BadVariable { var: v, .. } if *v == var),
            "{vars:?}: {err:?}"
        );
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }
}

/// Standard variables this exporter does not read are named in a warning
/// (with what to do instead), not ignored in silence; their values are not
/// repeated.
#[test]
fn unsupported_standard_variables_are_warned_about() {
    let (_, w) = enabled(&[
        GENERIC,
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca-secret-path.pem"),
        ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip"),
    ]);
    assert!(warned_about(&w, "OTEL_EXPORTER_OTLP_CERTIFICATE"), "{w:?}");
    assert!(
        warned_about(&w, "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION"),
        "{w:?}"
    );
    assert_eq!(w.len(), 2, "{w:?}");
    let text: Vec<String> = w.iter().map(ToString::to_string).collect();
    assert!(text[0].contains("SSL_CERT_FILE"), "{text:?}");
    assert!(
        !text.iter().any(|t| t.contains("ca-secret-path")),
        "{text:?}"
    );
    let (_, none) = enabled(&[GENERIC]);
    assert!(none.is_empty(), "{none:?}");
}
