//! `IRON_*` overrides, with the environment injected through the closure.

use super::{errs_env, parse, LogLevel, TlsConfig, BASE};

pub(super) fn env_of(
    pairs: &'static [(&'static str, &'static str)],
) -> impl Fn(&str) -> Option<String> {
    move |k| {
        pairs
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    }
}

#[test]
fn env_overrides() {
    let env = env_of(&[
        ("IRON_PROXY_HTTP_LISTEN", "127.0.0.1:8080"),
        ("IRON_PROXY_TUNNEL_LISTEN", "[::1]:1080"),
        ("IRON_PROXY_MAX_REQUEST_BODY_BYTES", "42"),
        ("IRON_PROXY_UPSTREAM_RESPONSE_HEADER_TIMEOUT", "2m"),
        (
            "IRON_PROXY_UPSTREAM_DENY_CIDRS",
            "10.0.0.0/8, 192.168.0.0/16",
        ),
        ("IRON_TLS_MODE", "sni-only"),
        ("IRON_METRICS_LISTEN", "127.0.0.1:9091"),
        ("IRON_MANAGEMENT_LISTEN", "127.0.0.1:9092"),
        ("IRON_LOG_LEVEL", "debug"),
        ("IRON_DNS_ENABLED", "true"),
        ("IRON_DNS_PROXY_IP", "10.1.2.3"),
    ]);
    let cfg = parse("proxy:\n  http_listen: \":80\"\n", "proxy.yaml", &env)
        .expect("valid with overrides");
    assert_eq!(cfg.proxy.http_listen.to_string(), "127.0.0.1:8080");
    assert_eq!(
        cfg.proxy.tunnel_listen.map(|l| l.to_string()).as_deref(),
        Some("[::1]:1080")
    );
    assert_eq!(cfg.proxy.max_request_body_bytes, 42);
    assert_eq!(
        cfg.proxy.upstream_response_header_timeout.to_string(),
        "2m0s"
    );
    assert_eq!(cfg.proxy.upstream_deny_cidrs.len(), 2);
    assert_eq!(cfg.tls, TlsConfig::SniOnly, "sni-only needs no CA");
    assert_eq!(cfg.metrics.listen.port(), 9091);
    assert_eq!(cfg.management.map(|m| m.listen.port()), Some(9092));
    assert_eq!(cfg.log.level, LogLevel::Debug);
    assert_eq!(
        cfg.dns.map(|d| d.proxy_ip.to_string()).as_deref(),
        Some("10.1.2.3")
    );

    // Empty deny list opts out; IRON_DNS_ENABLED=false removes the block; empty values are unset.
    let env = env_of(&[
        ("IRON_PROXY_UPSTREAM_DENY_CIDRS", ""),
        ("IRON_DNS_ENABLED", "0"),
        ("IRON_LOG_LEVEL", ""),
    ]);
    let cfg = parse(
        &format!("{BASE}dns: {{proxy_ip: 10.0.0.1}}\nlog: {{level: warn}}\n"),
        "p.yaml",
        &env,
    )
    .expect("valid");
    assert!(cfg.proxy.upstream_deny_cidrs.is_empty() && cfg.dns.is_none());
    assert_eq!(cfg.log.level, LogLevel::Warn);
}

#[test]
fn env_override_errors_name_the_variable() {
    let env = env_of(&[
        ("IRON_TLS_MODE", "mitn"),
        ("IRON_PROXY_MAX_RESPONSE_BODY_BYTES", "lots"),
        ("IRON_DNS_LISTEN", ":5353"),
        ("IRON_PROXY_UPSTREAM_DENY_CIDRS", "10.0.0.1"),
    ]);
    assert_eq!(
        errs_env(BASE, &env),
        [
            "IRON_DNS_LISTEN: dns.listen: cannot apply: DNS is disabled (no dns block; add one or set IRON_DNS_ENABLED=true)",
            "IRON_PROXY_MAX_RESPONSE_BODY_BYTES: proxy.max_response_body_bytes: expected an integer, found 'lots'",
            "IRON_PROXY_UPSTREAM_DENY_CIDRS: proxy.upstream_deny_cidrs[0]: invalid CIDR \"10.0.0.1\": expected address/prefix such as 10.0.0.0/8",
            "IRON_TLS_MODE: tls.mode: invalid tls mode 'mitn', did you mean 'mitm'? (expected one of: mitm, sni-only)",
        ]
    );
    let env = env_of(&[("IRON_DNS_ENABLED", "yes please")]);
    assert_eq!(
        errs_env(BASE, &env),
        ["IRON_DNS_ENABLED: dns: invalid boolean \"yes please\" (expected true or false)"]
    );
    let env = env_of(&[("IRON_DNS_ENABLED", "true")]);
    assert_eq!(
        errs_env(BASE, &env),
        ["IRON_DNS_ENABLED: dns: missing required field 'proxy_ip'"]
    );
}

/// A value that is not UTF-8 is an error at its variable (never showing the
/// value), for every variable the overrides read, not an unset variable.
#[test]
fn an_override_that_is_not_utf8_is_named() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let var_os = |var: &str| match var {
        "IRON_TLS_MODE" | "IRON_LOG_LEVEL" => Some(OsString::from_vec(b"mitm\xffs3cret".to_vec())),
        "IRON_METRICS_LISTEN" => Some(OsString::from(":9090")),
        _ => None,
    };
    let errors: Vec<String> = crate::config::env::not_utf8(&var_os)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        [
            "IRON_TLS_MODE: the value is not UTF-8",
            "IRON_LOG_LEVEL: the value is not UTF-8"
        ]
    );
}
