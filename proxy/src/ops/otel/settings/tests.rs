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
        // A query may carry a key: it is sent, and not logged.
        ("http://host:4318/?token=SECRETPW", "http://host:4318/"),
        ("https://c.example/otlp?k=v#f", "https://c.example/otlp"),
    ] {
        let (s, _) = enabled(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
        assert_eq!(s.endpoint_for_log(), logged, "{endpoint}");
        assert!(!format!("{s:?}").contains("SECRETPW"), "{s:?}");
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

/// The TLS files, each `_LOGS_` form first, read as paths (the files are
/// read when the exporter is built); compression, `gzip` or `none`.
#[test]
fn tls_files_and_compression() {
    let (s, w) = enabled(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/generic/ca.pem"),
        ("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/logs/ca.pem"),
        (
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "/generic/client.pem",
        ),
        ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "/logs/client.key"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "GZIP"),
    ]);
    assert!(w.is_empty(), "{w:?}");
    let file = |var, path: &str| {
        Some(FileVar {
            var,
            path: path.into(),
        })
    };
    assert_eq!(
        s.tls,
        TlsFiles {
            ca: file("OTEL_EXPORTER_OTLP_LOGS_CERTIFICATE", "/logs/ca.pem"),
            client_cert: file(
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                "/generic/client.pem"
            ),
            client_key: file("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "/logs/client.key"),
        }
    );
    assert_eq!(s.compression, Compression::Gzip);
    assert!(!s.plaintext());

    let (s, w) = enabled(&[GENERIC]);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(
        (s.compression, s.tls.clone()),
        (Compression::None, TlsFiles::default())
    );

    // The logs value wins, `none` included; an unknown one is skipped with
    // a warning, so the generic one applies.
    let (s, w) = enabled(&[
        GENERIC,
        ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "none"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
    ]);
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(s.compression, Compression::None);
    let (s, w) = enabled(&[
        GENERIC,
        ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "zstd"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
    ]);
    assert_eq!(s.compression, Compression::Gzip);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        warned_about(&w, "OTEL_EXPORTER_OTLP_LOGS_COMPRESSION"),
        "{w:?}"
    );
    assert!(w[0].to_string().contains("use gzip or none"), "{}", w[0]);
}

/// TLS files with a plaintext endpoint would go unused: each is named in a
/// warning, and none is kept (so none is read).
#[test]
fn tls_files_with_a_plaintext_endpoint_are_warned_about() {
    let (s, w) = enabled(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "HTTP://c:4318"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/ca.pem"),
        ("OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY", "/client.key"),
    ]);
    assert!(s.plaintext());
    assert_eq!(s.tls, TlsFiles::default());
    assert_eq!(w.len(), 2, "{w:?}");
    for var in [
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_LOGS_CLIENT_KEY",
    ] {
        assert!(warned_about(&w, var), "{var}: {w:?}");
    }
    assert!(w[0].to_string().contains("plaintext"), "{}", w[0]);
}

/// `INSECURE` picks the scheme of a gRPC endpoint given without one
/// (`https://` unless it is true); a scheme wins over it, and an `INSECURE`
/// that says otherwise is warned about. http/protobuf needs a scheme.
#[test]
fn insecure_picks_the_scheme_of_a_grpc_endpoint_without_one() {
    let grpc = ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let bare = ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317");
    for (insecure, endpoint, plaintext) in [
        (None, "https://collector:4317", false),
        (
            Some(("OTEL_EXPORTER_OTLP_INSECURE", "false")),
            "https://collector:4317",
            false,
        ),
        (
            Some(("OTEL_EXPORTER_OTLP_INSECURE", "True")),
            "http://collector:4317",
            true,
        ),
        (
            Some(("OTEL_EXPORTER_OTLP_LOGS_INSECURE", "true")),
            "http://collector:4317",
            true,
        ),
    ] {
        let mut vars = vec![grpc, bare];
        vars.extend(insecure);
        let (s, w) = enabled(&vars);
        assert!(w.is_empty(), "{vars:?}: {w:?}");
        assert_eq!(s.endpoint, endpoint, "{vars:?}");
        assert_eq!(s.plaintext(), plaintext, "{vars:?}");
    }
    // An IP, a path, userinfo (taken out, with its warning).
    let (s, _) = enabled(&[grpc, ("OTEL_EXPORTER_OTLP_ENDPOINT", "127.0.0.1:4317")]);
    assert_eq!(s.endpoint, "https://127.0.0.1:4317");
    let (s, w) = enabled(&[
        grpc,
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "u:s3cret@c:4317/p://q"),
    ]);
    assert_eq!(s.endpoint, "https://c:4317/p://q");
    assert!(warned_about(&w, ENDPOINT), "{w:?}");
    assert!(!format!("{w:?}").contains("s3cret"), "{w:?}");

    // The logs value first; a bad one is skipped with a warning.
    let (s, w) = enabled(&[
        grpc,
        bare,
        ("OTEL_EXPORTER_OTLP_LOGS_INSECURE", "yes"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "true"),
    ]);
    assert_eq!(s.endpoint, "http://collector:4317");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        warned_about(&w, "OTEL_EXPORTER_OTLP_LOGS_INSECURE"),
        "{w:?}"
    );

    // The scheme wins; a contradicting INSECURE is named.
    for (endpoint, insecure) in [("https://c:4317", "true"), ("http://c:4317", "false")] {
        let (s, w) = enabled(&[
            grpc,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_INSECURE", insecure),
        ]);
        assert_eq!(s.endpoint, endpoint);
        assert_eq!(w.len(), 1, "{endpoint}: {w:?}");
        assert!(w[0].to_string().contains("no effect"), "{}", w[0]);
    }
    for (endpoint, insecure) in [("https://c:4317", "false"), ("http://c:4317", "true")] {
        let (_, w) = enabled(&[
            grpc,
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
            ("OTEL_EXPORTER_OTLP_INSECURE", insecure),
        ]);
        assert!(w.is_empty(), "{endpoint} {insecure}: {w:?}");
    }

    // http/protobuf: no scheme, no export; the error says why.
    for insecure in ["true", "false"] {
        let e = env(&[bare, ("OTEL_EXPORTER_OTLP_INSECURE", insecure)]);
        let OtelExport::InvalidEndpoint(err) = &e.export else {
            panic!("export not off: {e:?}")
        };
        assert!(err.to_string().contains("has no scheme"), "{err}");
    }
}
