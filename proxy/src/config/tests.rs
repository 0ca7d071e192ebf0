//! Config tests: every spec example parses, broken configs are refused at the
//! right place, defaults, environment overrides and references.

mod broken;
mod env;
mod fuzz;
mod hostile;
mod indentation;
mod input_checks;
mod loading;
mod lookalike;
mod spec_files;
mod yaml_compat;

use super::*;
use env::env_of;

/// A config that needs nothing else: the CA paths MITM mode requires.
pub(crate) const BASE: &str = "tls:\n  ca_cert: /certs/ca.crt\n  ca_key: /certs/ca.key\n";

fn no_env(_: &str) -> Option<String> {
    None
}

/// Parses `text` (file name `proxy.yaml`) with no environment, expecting success.
pub(super) fn ok(text: &str) -> Config {
    parse(text, "proxy.yaml", &no_env)
        .unwrap_or_else(|e| panic!("expected a valid config, got:\n{e}\n--- config:\n{text}"))
}

/// Parses `text`, expecting failure; returns the error lines.
pub(super) fn errs(text: &str) -> Vec<String> {
    errs_env(text, &no_env)
}

pub(super) fn errs_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    match parse(text, "proxy.yaml", env) {
        Ok(_) => panic!("expected errors, config was accepted:\n{text}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults() {
    let cfg = ok(BASE);
    assert!(
        cfg.dns.is_none()
            && cfg.mcp.is_none()
            && cfg.management.is_none()
            && cfg.intercept.is_none()
    );
    let p = &cfg.proxy;
    assert_eq!(p.http_listen, ListenAddr::AllInterfaces(80));
    assert_eq!(p.https_listen, ListenAddr::AllInterfaces(443));
    assert_eq!(p.tunnel_listen, None);
    assert_eq!(p.max_request_body_bytes, 1_048_576);
    assert_eq!(p.max_response_body_bytes, 0);
    assert_eq!(p.max_buffered_bytes, 256 << 20);
    assert_eq!(
        p.upstream_response_header_timeout.get(),
        std::time::Duration::from_secs(30)
    );
    assert_eq!(p.upstream_deny_cidrs, default_deny_cidrs());
    assert_eq!(p.upstream_deny_cidrs.len(), 4);
    let TlsConfig::Mitm(m) = &cfg.tls else {
        panic!("mitm is the default")
    };
    assert_eq!((m.cert_cache_size, m.leaf_cert_expiry_hours), (1000, 72));
    assert_eq!(cfg.metrics.listen, ListenAddr::AllInterfaces(9090));
    assert_eq!(cfg.log.level, LogLevel::Info);
    assert_eq!(cfg.log.format, LogFormat::Json);
    assert!(cfg.transforms.is_empty());

    let cfg = ok(&format!(
        "{BASE}dns: {{proxy_ip: 10.0.0.2, upstream_resolver: 1.1.1.1}}\nmanagement: {{listen: \"127.0.0.1:9092\"}}\nmcp: {{}}\nproxy: {{upstream_deny_cidrs: []}}\n"
    ));
    let dns = cfg.dns.expect("dns block");
    assert_eq!(dns.listen, ListenAddr::AllInterfaces(53));
    assert_eq!(
        dns.upstream_resolver,
        Some("1.1.1.1:53".parse().expect("addr"))
    );
    let mg = cfg.management.expect("management");
    assert_eq!(mg.api_key_env, "IRON_MANAGEMENT_API_KEY");
    let mcp = cfg.mcp.expect("mcp");
    assert_eq!(
        (mcp.error.code, mcp.error.message.as_str()),
        (-32001, "blocked by iron-proxy policy")
    );
    assert!(cfg.proxy.upstream_deny_cidrs.is_empty(), "[] opts out");
}

#[test]
fn transform_defaults() {
    let cfg = ok(&format!(
        "{BASE}transforms:
  - name: judge
    config:
      name: j
      prompt: p
      rules: [{{host: api.github.com}}]
      provider: {{type: openai, model: m, api_key_env: K}}
  - name: body_capture
  - name: secrets
    config:
      secrets:
        - source: {{type: aws_ssm, name: /x}}
          inject: {{query_param: key}}
        - source: {{type: 1password_connect, secret_ref: \"op://v/i/s/f\"}}
          inject: {{header: X-Key}}
        - source: {{type: 1password, secret_ref: \"op://v/i/f\"}}
          inject: {{header: X-Key}}
"
    ));
    let TransformConfig::Judge(j) = &cfg.transforms[0] else {
        panic!("judge")
    };
    assert_eq!(j.fallback, JudgeFallback::Deny);
    assert_eq!(j.timeout.get(), std::time::Duration::from_secs(8));
    assert_eq!(j.max_concurrent, 100);
    assert_eq!(j.circuit_breaker, CircuitBreakerConfig::default());
    assert_eq!(j.circuit_breaker.consecutive_failures, 5);
    assert_eq!(
        j.circuit_breaker.cooldown.get(),
        std::time::Duration::from_secs(10)
    );
    let JudgeProvider::OpenAi(pc) = &j.provider else {
        panic!("openai")
    };
    assert_eq!(
        (pc.base_url.as_str(), pc.max_tokens),
        ("https://api.openai.com/", 256)
    );
    let TransformConfig::BodyCapture(b) = &cfg.transforms[1] else {
        panic!("body_capture")
    };
    assert_eq!(b.max_request_body_bytes, 16_384);
    let TransformConfig::Secrets(s) = &cfg.transforms[2] else {
        panic!("secrets")
    };
    let SecretSourceConfig::AwsSsm {
        with_decryption,
        ttl,
        ..
    } = &s.secrets[0].source
    else {
        panic!("ssm")
    };
    assert!(*with_decryption && ttl.is_zero());
    let SecretSourceConfig::OnePasswordConnect {
        host_env,
        token_env,
        secret_ref,
        ..
    } = &s.secrets[1].source
    else {
        panic!("connect")
    };
    assert_eq!(
        (host_env.as_str(), token_env.as_str()),
        ("OP_CONNECT_HOST", "OP_CONNECT_TOKEN")
    );
    assert_eq!(secret_ref.section.as_deref(), Some("s"));
    let SecretSourceConfig::OnePassword { token_env, .. } = &s.secrets[2].source else {
        panic!("1password")
    };
    assert_eq!(token_env, "OP_SERVICE_ACCOUNT_TOKEN");
    assert!(s.scrub_response_bodies, "on unless turned off");
}

/// Every transform that notes the credential values it puts in a request
/// (docs/secrets.md, "What comes back") takes `scrub_response_bodies`: on by
/// default, a boolean, its errors at its field path, and a near miss pointed
/// at it.
#[test]
fn credential_transforms_take_scrub_response_bodies() {
    let cases = [
        (
            "secrets",
            "      secrets:\n        - source: {type: env, var: K}\n          inject: {header: X-Key}\n",
        ),
        (
            "oauth_token",
            "      tokens:\n        - grant: client_credentials\n          \
             client_id: {type: env, var: I}\n          client_secret: {type: env, var: S}\n          \
             token_endpoint: \"https://login.test/token\"\n          rules: [{host: api.test}]\n",
        ),
        (
            "gcp_auth",
            "      keyfile_path: /etc/sa.json\n      scopes: [s]\n",
        ),
        (
            "hmac_sign",
            "      timestamp: {format: unix_seconds}\n      signature:\n        \
             algorithm: sha256\n        key_encoding: base64\n        output_encoding: base64\n        \
             message: \"{{.Timestamp}}\"\n      credentials:\n        \
             secret: {type: env, var: S}\n        passphrase: {type: env, var: P}\n      \
             headers:\n        - {name: X-Passphrase, value: \"{{.Credentials.passphrase}}\"}\n      \
             rules: [{host: api.test}]\n",
        ),
        (
            "aws_auth",
            "      access_key_id: {type: env, var: A}\n      secret_access_key: {type: env, var: S}\n      \
             session_token: {type: env, var: T}\n      rules: [{host: \"*.amazonaws.com\"}]\n",
        ),
    ];
    let flag = |cfg: &Config| match &cfg.transforms[0] {
        TransformConfig::Secrets(c) => c.scrub_response_bodies,
        TransformConfig::OauthToken(c) => c.scrub_response_bodies,
        TransformConfig::GcpAuth(c) => c.scrub_response_bodies,
        TransformConfig::HmacSign(c) => c.scrub_response_bodies,
        TransformConfig::AwsAuth(c) => c.scrub_response_bodies,
        _ => panic!("not a credential transform"),
    };
    for (name, body) in cases {
        let head = format!("transforms:\n  - name: {name}\n    config:\n");
        assert!(
            flag(&ok(&format!("{BASE}{head}{body}"))),
            "{name}: on unless turned off"
        );
        let cfg = ok(&format!(
            "{BASE}{head}      scrub_response_bodies: false\n{body}"
        ));
        assert!(!flag(&cfg), "{name}");
        let e = errs(&format!(
            "{head}      scrub_response_bodies: sometimes\n{body}"
        ));
        assert_eq!(e.len(), 1, "{name}: {e:?}");
        assert!(
            e[0].contains("transforms[0].config.scrub_response_bodies"),
            "{name}: {e:?}"
        );
        let e = errs(&format!("{head}      scrub_response_body: false\n{body}"));
        assert!(
            e.iter()
                .any(|l| l.contains("did you mean 'scrub_response_bodies'")),
            "{name}: {e:?}"
        );
    }
}

#[test]
fn log_format_text() {
    let cfg = ok(&format!("{BASE}log:\n  level: debug\n  format: text\n"));
    assert_eq!(cfg.log.level, LogLevel::Debug);
    assert_eq!(cfg.log.format, LogFormat::Text);
    assert_eq!(
        ok(&format!("{BASE}log: {{format: json}}\n")).log.format,
        LogFormat::Json
    );
}

#[test]
fn backwards_compatible_replace_form() {
    let legacy = ok(&format!(
        "{BASE}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: T}}\n          proxy_value: pk\n          match_headers: [Authorization, \"/^x-.*/\"]\n          require: true\n"
    ));
    let modern = ok(&format!(
        "{BASE}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: T}}\n          replace:\n            proxy_value: pk\n            match_headers: [Authorization, \"/^x-.*/\"]\n            require: true\n"
    ));
    let entry = |c: &Config| match &c.transforms[0] {
        TransformConfig::Secrets(s) => s.secrets[0].clone(),
        _ => panic!("secrets"),
    };
    assert_eq!(entry(&legacy), entry(&modern));
    let SecretMode::Replace(r) = entry(&legacy).mode else {
        panic!("replace")
    };
    assert!(r.require && !r.match_body);
    assert!(r.match_headers[0].matches("authorization"));
    assert!(
        r.match_headers[1].matches("X-Api-Key"),
        "regex is case-insensitive"
    );
    assert!(!r.match_headers[1].matches("Authorization"));
}

#[test]
fn listen_addresses() {
    let p = |s: &str| s.parse::<ListenAddr>();
    assert_eq!(p(":80"), Ok(ListenAddr::AllInterfaces(80)));
    assert_eq!(p(":80").map(|l| l.socket_addrs().len()), Ok(2));
    assert_eq!(
        p(":80").map(|l| l.to_socket_addr().to_string()),
        Ok("[::]:80".into())
    );
    assert_eq!(
        p("127.0.0.1:9092").map(|l| l.to_socket_addr().to_string()),
        Ok("127.0.0.1:9092".into())
    );
    assert_eq!(p("[::1]:53").map(|l| l.to_string()), Ok("[::1]:53".into()));
    assert_eq!(p("0.0.0.0:0").map(|l| l.port()), Ok(0));
    assert_eq!(
        p("localhost:9090").map(|l| l.to_string()),
        Ok("127.0.0.1:9090".into())
    );
    for bad in [
        "80",
        ":http",
        "::1:53",
        "example.com:80",
        "1.2.3.4:99999",
        "",
        ":",
        "[::1]",
    ] {
        assert!(p(bad).is_err(), "{bad:?} must be refused");
    }
}

#[test]
fn go_durations() {
    let d = |s: &str| s.parse::<GoDuration>().map(|d| d.0);
    assert_eq!(d("30s"), Ok(30_000_000_000));
    assert_eq!(d("1h30m"), Ok(5_400_000_000_000));
    assert_eq!(d("250ms"), Ok(250_000_000));
    assert_eq!(d("1.5s"), Ok(1_500_000_000));
    assert_eq!(d("-2m"), Ok(-120_000_000_000));
    assert_eq!(d("0"), Ok(0));
    assert_eq!(d("10us"), d("10µs"));
    for bad in ["", "30", "s", "1x", "1.2.3s", "--1s", "1h 30m"] {
        assert!(d(bad).is_err(), "{bad:?} must be refused");
    }
    assert!("0s".parse::<PositiveDuration>().is_err());
    assert!("-1s".parse::<NonNegativeDuration>().is_err());
    assert!("0"
        .parse::<NonNegativeDuration>()
        .is_ok_and(|d| d.is_zero()));
    assert_eq!(
        "90m".parse::<PositiveDuration>().map(|d| d.to_string()),
        Ok("1h30m0s".into())
    );
    assert_eq!(
        "1500ms".parse::<PositiveDuration>().map(|d| d.to_string()),
        Ok("1.5s".into())
    );
}

#[test]
fn intercept_section() {
    let cfg = ok(&format!("{BASE}dns: {{proxy_ip: 10.0.0.1}}\nintercept:\n  cgroups: [workload.slice, /sys/fs/cgroup/x]\n  uids: [1001, runner, \"1002\"]\n"));
    let ic = cfg.intercept.clone().expect("intercept");
    assert_eq!(ic.mode, InterceptMode::Ebpf);
    assert_eq!(
        ic.uids,
        [
            UidSpec::Id(1001),
            UidSpec::Name("runner".into()),
            UidSpec::Id(1002)
        ]
    );
    assert_eq!(ic.listen.to_string(), "127.0.0.1:15001");
    assert_eq!(ic.pin_path, std::path::Path::new("/sys/fs/bpf/iron-proxy"));
    assert!(
        ic.dns_enabled(&cfg),
        "dns defaults to on when a dns block exists"
    );
    let cfg = ok(&format!(
        "{BASE}intercept: {{uids: [0], mode: nftables, dns: false}}\n"
    ));
    assert!(!cfg
        .intercept
        .as_ref()
        .is_some_and(|ic| ic.dns_enabled(&cfg)));
}

#[test]
fn references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "x").expect("write");
    let text = format!(
        "tls: {{ca_cert: {}, ca_key: /nonexistent/ca.key}}
management: {{listen: \"127.0.0.1:1\"}}
transforms:
  - name: secrets
    config:
      secrets:
        - source: {{type: env, var: SET_VAR}}
          inject: {{header: A}}
        - source: {{type: 1password_connect, secret_ref: \"op://a/b/c\"}}
          inject: {{header: B}}
",
        ca.display()
    );
    let cfg = ok(&text);
    let env = env_of(&[("SET_VAR", "v"), ("OP_CONNECT_HOST", "")]);
    let refs: Vec<String> = check_references(&cfg, &env)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        refs,
        [
            "tls.ca_key: file /nonexistent/ca.key does not exist",
            "management.api_key_env: environment variable IRON_MANAGEMENT_API_KEY is not set",
            "transforms[0].config.secrets[1].source.host_env: environment variable OP_CONNECT_HOST is not set",
            "transforms[0].config.secrets[1].source.token_env: environment variable OP_CONNECT_TOKEN is not set",
        ]
    );
}

#[test]
fn header_matchers() {
    let m: HeaderMatcher = "/^X-Trace-.*$/".parse().expect("regex");
    assert!(m.matches("x-trace-id") && !m.matches("x-other"));
    let l: HeaderMatcher = "Content-Type".parse().expect("literal");
    assert_eq!(l.literal(), Some("Content-Type"));
    assert!(l.matches("content-type"));
    assert!("/(/".parse::<HeaderMatcher>().is_err());
    assert!(
        "//".parse::<HeaderMatcher>().is_err(),
        "empty regex matches everything: refused"
    );
    // A literal that no header can be named matches nothing: it loads (the
    // spec's CI example has one), with a warning saying what was meant.
    for (bad, msg) in [
        ("/", "\"/\" is no header name, so this entry matches nothing; a regex goes between two slashes, such as \"/^x-trace-.*$/\""),
        ("X-Foo:", "\"X-Foo:\" is no header name, so this entry matches nothing; write the name without the colon"),
        ("Content Type", "\"Content Type\" is no header name, so this entry matches nothing (a header name is one token: letters, digits and !#$%&'*+-.^_`|~)"),
    ] {
        let m = bad.parse::<HeaderMatcher>().expect("loads");
        assert_eq!(m.never_matches().as_deref(), Some(msg), "{bad:?}");
    }
    assert_eq!(l.never_matches(), None);
    assert_eq!(m.never_matches(), None);
}
