//! Findings about single values, which the decoder records where it reads
//! them: the value loads as the spec allows, and the warning names its place.

use super::*;
use crate::config::{InjectConfig, SecretMode, SecretSourceConfig};

/// The only finding about `cfg`, as `validate` and the log show it.
fn only_finding(cfg: &Config) -> String {
    let found = lint(cfg);
    assert_eq!(found.len(), 1, "{found:?}");
    found[0].to_string()
}

/// The `secrets` transform of `cfg` (its first).
fn secrets(cfg: &Config) -> &crate::config::SecretsConfig {
    match &cfg.transforms[0] {
        TransformConfig::Secrets(s) => s,
        other => panic!("expected secrets first, got {}", other.name()),
    }
}

#[test]
fn a_formatter_with_query_param_loads_unused_with_a_warning_at_the_formatter() {
    let inject = "  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, \
                  var: S}\n          inject:\n            query_param: key\n            \
                  formatter: \"Bearer {{ .Value }}\"\n";
    let cfg = config(inject);
    // The raw value is set: the formatter is not kept.
    assert_eq!(
        secrets(&cfg).secrets[0].mode,
        SecretMode::Inject(InjectConfig::QueryParam { name: "key".into() })
    );
    // `formatter: "Bearer ..."` is on line 11, its value at column 24.
    assert_eq!(
        only_finding(&cfg),
        "t.yaml:11:24: transforms[0].config.secrets[0].inject.formatter: 'formatter' is not \
         used with 'query_param': the parameter is set to the raw secret value; remove \
         'formatter' (or inject a 'header' to format the value)"
    );
    // With a header the formatter is used: nothing to say.
    assert_eq!(
        lint(&config(
            &inject.replace("query_param: key", "header: X-Key")
        )),
        vec![]
    );
    // A template that does not parse is still an error, as it is with a header.
    let broken = inject.replace("{{ .Value }}", "{{ .Value }");
    let text = format!("tls: {{ca_cert: c, ca_key: k}}\ntransforms:\n{broken}");
    let errs = crate::config::parse(&text, "t.yaml", &|_| None).expect_err("broken template");
    assert_eq!(
        errs.to_string(),
        "t.yaml:9:24: transforms[0].config.secrets[0].inject.formatter: invalid template: \
         template column 8: unclosed action"
    );
}

#[test]
fn a_ttl_on_an_env_source_loads_ignored_with_a_warning_at_the_ttl() {
    let entry = "  - name: secrets\n    config:\n      secrets:\n        - source:\n            \
                 type: env\n            var: S\n            ttl: 5m\n          inject: {header: \
                 X-Key}\n";
    let cfg = config(entry);
    let source = &secrets(&cfg).secrets[0].source;
    assert_eq!(
        source,
        &SecretSourceConfig::Env {
            var: "S".into(),
            json_key: None
        }
    );
    assert!(source.ttl().is_zero(), "an env source is read once");
    // `ttl: 5m` is on line 11, its value at column 18.
    assert_eq!(
        only_finding(&cfg),
        "t.yaml:11:18: transforms[0].config.secrets[0].source.ttl: 'ttl' has no effect on an \
         env source: the proxy's environment does not change while it runs, so the variable \
         is read once; remove 'ttl'"
    );
    // Zero says what an env source does anyway.
    assert_eq!(lint(&config(&entry.replace("5m", "0s"))), vec![]);
    // Read as every source's ttl is: a negative one is an error.
    let text = format!(
        "tls: {{ca_cert: c, ca_key: k}}\ntransforms:\n{}",
        entry.replace("5m", "-5m")
    );
    let errs = crate::config::parse(&text, "t.yaml", &|_| None).expect_err("negative ttl");
    assert_eq!(
        errs.to_string(),
        "t.yaml:9:18: transforms[0].config.secrets[0].source.ttl: duration \"-5m\" must not be \
         negative"
    );
}

#[test]
fn a_body_capture_cap_of_zero_is_the_default_with_a_warning() {
    let capture = "  - name: body_capture\n    config:\n      max_request_body_bytes: 0\n";
    let cfg = config(capture);
    let TransformConfig::BodyCapture(b) = &cfg.transforms[0] else {
        panic!("body_capture")
    };
    assert_eq!(b.max_request_body_bytes, 16_384);
    // `max_request_body_bytes: 0` is on line 7, its value at column 31.
    assert_eq!(
        only_finding(&cfg),
        "t.yaml:7:31: transforms[0].config.max_request_body_bytes: 0 means the default cap, \
         16384 bytes, not \"capture nothing\"; write 16384 (or leave the field out) to say so, \
         or remove body_capture to record no bodies"
    );
    // Any other cap is taken as written, without a word.
    let one = config(&capture.replace(": 0", ": 1"));
    let TransformConfig::BodyCapture(b) = &one.transforms[0] else {
        panic!("body_capture")
    };
    assert_eq!(b.max_request_body_bytes, 1);
    assert_eq!(lint(&one), vec![]);
}

/// A `header_allowlist` or `match_headers` literal no header can be named
/// loads (the spec's CI example lists `"//npm-auth-token"`), with a warning
/// at the entry saying what was probably meant.
#[test]
fn a_header_entry_no_header_can_be_named_loads_with_a_warning() {
    let cfg =
        config("  - name: header_allowlist\n    config:\n      headers: [\"X-Foo:\", Accept]\n");
    assert_eq!(
        only_finding(&cfg),
        "t.yaml:7:17: transforms[0].config.headers[0]: \"X-Foo:\" is no header name, so this \
         entry matches nothing; write the name without the colon"
    );
    let fine =
        config("  - name: header_allowlist\n    config:\n      headers: [X-Foo, \"/^x-.*$/\"]\n");
    assert_eq!(lint(&fine), vec![]);
}

/// A CIDR with host bits set loads as its network, with a warning at the
/// entry (an allowlist `10.0.0.1/8` meant for one host admits the /8).
#[test]
fn a_cidr_with_host_bits_loads_as_its_network_with_a_warning() {
    let cfg = config(
        "  - name: allowlist\n    config:\n      cidrs: [\"10.0.0.1/8\", \"10.1.0.0/16\"]\n",
    );
    let TransformConfig::Allowlist(a) = &cfg.transforms[0] else {
        panic!("allowlist")
    };
    assert_eq!(a.cidrs[0].to_string(), "10.0.0.0/8");
    assert_eq!(
        only_finding(&cfg),
        "t.yaml:7:15: transforms[0].config.cidrs[0]: 10.0.0.1/8 has host bits set: it is read \
         as the network 10.0.0.0/8; write that, or 10.0.0.1/32 for the one address"
    );
}

/// An IPv4-mapped IPv6 range loads as the IPv4 range it stands for, with a
/// warning: addresses are compared as IPv4 once unmapped, so a deny entry
/// `::ffff:169.254.169.254/128` kept as written denied nothing.
#[test]
fn an_ipv4_mapped_range_loads_as_its_ipv4_range_with_a_warning() {
    let text = "tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\nproxy:\n  upstream_deny_cidrs: \
                [\"::ffff:169.254.169.254/128\", \"::ffff:10.0.0.0/104\", \"::1/128\"]\n\
                transforms:\n  - name: allowlist\n    config:\n      domains: [api.test]\n";
    let cfg = crate::config::parse(text, "t.yaml", &|_| None).expect("valid config");
    let nets: Vec<String> = cfg
        .proxy
        .upstream_deny_cidrs
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, ["169.254.169.254/32", "10.0.0.0/8", "::1/128"]);
    let deny = crate::upstream::DenyList::new(cfg.proxy.upstream_deny_cidrs.clone());
    for ip in ["169.254.169.254", "::ffff:169.254.169.254", "10.9.8.7"] {
        assert!(deny.check(ip.parse().expect("ip")).is_some(), "{ip}");
    }
    let found: Vec<String> = lint(&cfg).iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "t.yaml:5:25: proxy.upstream_deny_cidrs[0]: ::ffff:169.254.169.254/128 is an \
             IPv4-mapped IPv6 range: addresses are compared as IPv4, so it is read as \
             169.254.169.254/32; write that",
            "t.yaml:5:55: proxy.upstream_deny_cidrs[1]: ::ffff:10.0.0.0/104 is an IPv4-mapped \
             IPv6 range: addresses are compared as IPv4, so it is read as 10.0.0.0/8; write that",
        ]
    );
}

/// A host pattern whose leading `*` lacks its dot (`*example.com`) matches
/// `badexample.com` too: it loads as the glob it is, with a warning giving
/// the pattern probably meant, wherever host patterns are written (allowlist
/// `domains`, any rule's `host`, `dns.passthrough`).
#[test]
fn a_host_glob_without_the_dot_after_its_star_loads_with_a_warning() {
    let cfg = config(
        "  - name: allowlist\n    config:\n      domains: [\"*example.com\", \"*.example.org\"]\n      \
         rules: [{host: \"*api.test\"}]\n",
    );
    let found: Vec<String> = lint(&cfg).iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "t.yaml:7:17: transforms[0].config.domains[0]: \"*example.com\" matches every host \
             whose name ends in \"example.com\", such as badexample.com, not only example.com \
             and its subdomains; for those write \"*.example.com\"",
            "t.yaml:8:22: transforms[0].config.rules[0].host: \"*api.test\" matches every host \
             whose name ends in \"api.test\", such as badapi.test, not only api.test and its \
             subdomains; for those write \"*.api.test\"",
        ]
    );
    let text = "tls: {ca_cert: c, ca_key: k}\ndns:\n  proxy_ip: 10.0.0.2\n  passthrough: \
                [\"*corp.example\"]\ntransforms:\n  - name: allowlist\n    config: {domains: \
                [a.test]}\n";
    let cfg = crate::config::parse(text, "t.yaml", &|_| None).expect("valid config");
    let found: Vec<String> = lint(&cfg).iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        ["t.yaml:4:17: dns.passthrough[0]: \"*corp.example\" matches every host whose name ends \
          in \"corp.example\", such as badcorp.example, not only corp.example and its \
          subdomains; for those write \"*.corp.example\""]
    );
    // Globs that say what they mean are left alone.
    let fine = config(
        "  - name: allowlist\n    config:\n      domains: [\"*.example.com\", \"*-api.test\", \
         \"api-*.test\", \"*\"]\n",
    );
    assert_eq!(lint(&fine), vec![]);
}

/// An `aws_auth` region that is a near miss of an AWS region's name loads
/// with a warning naming the region meant, at the entry (and at the
/// workload identity provider's `region`); other services' own names and
/// well-shaped regions load without a word.
#[test]
fn an_aws_region_near_miss_loads_with_a_warning_naming_the_region() {
    let aws = "  - name: aws_auth\n    config:\n      credentials_provider: {type: \
               workload_identity, region: us-east1}\n      allowed_regions: [\"US-EAST-1\", \
               eu-west-1, auto, us-esat-2]\n      rules: [{host: \"*.amazonaws.com\"}]\n";
    let cfg = config(aws);
    let TransformConfig::AwsAuth(a) = &cfg.transforms[0] else {
        panic!("aws_auth")
    };
    assert_eq!(
        a.allowed_regions,
        ["US-EAST-1", "eu-west-1", "auto", "us-esat-2"]
    );
    let found: Vec<String> = lint(&cfg).iter().map(ToString::to_string).collect();
    let allowed = "A request is signed only when its signature's region equals an entry \
                   exactly, and AWS SDKs sign with the region's own name, so this entry admits \
                   none (403 region_not_allowed).";
    let shape = "this is not the name of an AWS region (a partition, a direction and a number, \
                 as in us-east-1)";
    assert_eq!(
        found,
        [
            format!(
                "t.yaml:7:63: transforms[0].config.credentials_provider.region: 'us-east1': \
                 {shape}; did you mean 'us-east-1'? The credential chain calls AWS (STS) in \
                 this region, and AWS has no region of this name."
            ),
            format!(
                "t.yaml:8:25: transforms[0].config.allowed_regions[0]: 'US-EAST-1': AWS region \
                 names are lowercase; did you mean 'us-east-1'? {allowed}"
            ),
            format!(
                "t.yaml:8:55: transforms[0].config.allowed_regions[3]: 'us-esat-2': {shape}; \
                 did you mean 'us-east-2'? {allowed}"
            ),
        ]
    );
    let fine = aws
        .replace("us-east1", "us-east-1")
        .replace("\"US-EAST-1\", ", "")
        .replace(", us-esat-2", ", us-gov-west-1, ap-southeast-9");
    assert_eq!(lint(&config(&fine)), vec![]);
}

/// An internationalized host name loads in its ASCII (IDNA) form; a label
/// that mixes scripts (`gіthub`, a Cyrillic `і`) or is all lookalikes of
/// ASCII letters (`аррӏе`) loads with a warning naming the label, its
/// scripts and characters, the `xn--` name it matches and the name it looks
/// like, wherever host names are written; `bücher.example` loads silently.
#[test]
fn a_host_label_that_mixes_scripts_loads_with_a_warning() {
    let cfg = config(
        "  - name: allowlist\n    config:\n      domains: [\"g\u{456}thub.com\", \"b\u{fc}cher.example\"]\n      \
         rules: [{host: \"*.\u{430}\u{440}\u{440}\u{4cf}\u{435}.com\"}]\n",
    );
    let found: Vec<String> = lint(&cfg).iter().map(ToString::to_string).collect();
    assert_eq!(
        found,
        [
            "t.yaml:7:17: transforms[0].config.domains[0]: label 'g\\u{456}thub' of \
             \"g\u{456}thub.com\" mixes Cyrillic and Latin (U+0456 CYRILLIC SMALL LETTER \
             BYELORUSSIAN-UKRAINIAN I): it matches only xn--gthub-n2e.com, not github.com, \
             which it looks like",
            "t.yaml:8:22: transforms[0].config.rules[0].host: label \
             '\\u{430}\\u{440}\\u{440}\\u{4cf}\\u{435}' of \"*.\u{430}\u{440}\u{440}\u{4cf}\u{435}.com\" \
             is written in Cyrillic (U+0430 CYRILLIC SMALL LETTER A, U+0440 CYRILLIC SMALL \
             LETTER ER, U+04CF CYRILLIC SMALL LETTER PALOCHKA, U+0435 CYRILLIC SMALL LETTER IE): \
             it matches only *.xn--80ak6aa92e.com, not *.apple.com, which it looks like",
        ]
    );
    let TransformConfig::Allowlist(a) = &cfg.transforms[0] else {
        panic!("allowlist first")
    };
    assert_eq!(a.domains[1].to_string(), "xn--bcher-kva.example");

    let text = "tls: {ca_cert: c, ca_key: k}\ndns:\n  proxy_ip: 10.0.0.2\n  passthrough: \
                [\"g\u{456}thub.com\"]\n  records:\n    - {name: \"b\u{fc}cher.test\", type: A, \
                value: 10.0.0.9}\n    - {name: \"\u{430}pple.test\", type: A, value: 10.0.0.9}\n\
                transforms:\n  - name: allowlist\n    config: {domains: [a.test]}\n";
    let cfg = crate::config::parse(text, "t.yaml", &|_| None).expect("valid config");
    let found: Vec<String> = lint(&cfg).iter().map(ToString::to_string).collect();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert!(
        found[0].starts_with("t.yaml:4:17: dns.passthrough[0]: label 'g\\u{456}thub'"),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("t.yaml:7:14: dns.records[1].name: label '\\u{430}pple' of"),
        "{found:#?}"
    );
    assert_eq!(
        cfg.dns.as_ref().expect("dns").records[0].name,
        "xn--bcher-kva.test"
    );
}

/// Invisible characters in a host name are dropped by IDNA (as browsers do):
/// the name loads as the one without them, with a warning naming them.
#[test]
fn an_invisible_character_in_a_host_name_is_named() {
    let cfg = config("  - name: allowlist\n    config:\n      domains: [\"git\u{200b}hub.com\"]\n");
    assert_eq!(
        only_finding(&cfg),
        "t.yaml:7:17: transforms[0].config.domains[0]: 'git\\u{200b}hub.com' holds U+200B ZERO \
         WIDTH SPACE, which IDNA drops: it matches github.com"
    );
}
