//! Reading the file as yaml.v3 reads it: a byte order mark, an empty file,
//! merge keys and standard tags in real configs, and `log.level` in any case.

use super::{errs, errs_env, ok, BASE};
use crate::config::{check_references, parse, LogLevel, TlsConfig, TransformConfig};

#[test]
fn a_byte_order_mark_at_the_start_is_accepted() {
    let cfg = ok(&format!("\u{feff}{BASE}log:\n  level: debug\n"));
    assert_eq!(cfg.log.level, LogLevel::Debug);
    assert!(matches!(cfg.tls, TlsConfig::Mitm(_)));
    // Columns on the first line are the editor's, not shifted by the mark.
    assert_eq!(
        errs(&format!("\u{feff}tlz: {{}}\n{BASE}")),
        ["proxy.yaml:1:1: unknown field 'tlz', did you mean 'tls'?"]
    );
}

#[test]
fn an_empty_file_is_an_error_at_the_file() {
    for text in [
        "",
        "\n",
        "  \n\t\n",
        "# just comments\n# nothing else\n",
        "\u{feff}",
        "---\n",
    ] {
        assert_eq!(errs(text), ["proxy.yaml: config file is empty"], "{text:?}");
    }
    // Even when the environment would supply every required setting.
    let env = |k: &str| (k == "IRON_TLS_MODE").then(|| "sni-only".to_string());
    assert_eq!(errs_env("", &env), ["proxy.yaml: config file is empty"]);
    // An explicit empty mapping means "all defaults".
    assert!(parse("{}\n", "proxy.yaml", &env).is_ok());
}

const SHARED: &str = "transforms:
  - name: secrets
    config:
      secrets:
        - &first
          source: {type: env, var: A}
          replace: {proxy_value: tok-a, match_headers: [Authorization]}
          rules: [{host: api.test}]
        - <<: *first
          source: {type: env, var: B}
        - <<: [{replace: {proxy_value: tok-c}}, *first]
          rules: [{host: other.test}]
";

/// The secrets entries of `cfg`'s first transform: (variable, proxy value, rules).
fn entries(cfg: &crate::config::Config) -> Vec<(String, String, String)> {
    let TransformConfig::Secrets(s) = &cfg.transforms[0] else {
        panic!("a secrets transform")
    };
    s.secrets
        .iter()
        .map(|e| {
            let crate::config::SecretSourceConfig::Env { var, .. } = &e.source else {
                panic!("env sources")
            };
            let crate::config::SecretMode::Replace(r) = &e.mode else {
                panic!("replace")
            };
            (var.clone(), r.proxy_value.clone(), format!("{:?}", e.rules))
        })
        .collect()
}

#[test]
fn merge_keys_share_settings_between_entries() {
    let cfg = ok(&format!("{BASE}{SHARED}"));
    let got = entries(&cfg);
    assert_eq!(got.len(), 3);
    assert_eq!((got[1].0.as_str(), got[1].1.as_str()), ("B", "tok-a"));
    assert_eq!(got[1].2, got[0].2, "rules merged from the first entry");
    // The earlier merged mapping wins over the later, the entry's own keys over both.
    assert_eq!((got[2].0.as_str(), got[2].1.as_str()), ("A", "tok-c"));
    assert_ne!(got[2].2, got[0].2, "own rules win");
}

#[test]
fn an_error_in_a_merged_value_points_where_it_was_written() {
    let text = format!("{BASE}{SHARED}").replace("var: A}", "var: A, extra: 1}");
    // The first entry and the last (which merges it) have the error, where the
    // first one wrote it; the second has its own `source`.
    assert_eq!(
        errs(&text),
        [
            "proxy.yaml:9:39: transforms[0].config.secrets[0].source: unknown field 'extra' (expected one of: type, var, json_key, ttl)",
            "proxy.yaml:9:39: transforms[0].config.secrets[2].source: unknown field 'extra' (expected one of: type, var, json_key, ttl)",
        ]
    );
    let bad = format!("{BASE}{SHARED}").replace("- <<: *first", "- <<: first");
    assert_eq!(
        errs(&bad),
        ["proxy.yaml:12:15: invalid YAML: '<<' merges a mapping or a list of mappings, found a scalar"]
    );
}

#[test]
fn standard_tags_give_strings_numbers_and_booleans_where_expected() {
    let cfg = ok(&format!(
        "{BASE}proxy:\n  max_request_body_bytes: !!int \"2048\"\n{}",
        SHARED.replace("proxy_value: tok-a", "proxy_value: !!str 12345")
    ));
    assert_eq!(cfg.proxy.max_request_body_bytes, 2048);
    assert_eq!(entries(&cfg)[0].1, "12345");
    // A string where a number or boolean is expected is refused, like a quoted one.
    assert_eq!(
        errs(&format!(
            "{BASE}proxy:\n  max_request_body_bytes: !!str 2048\n"
        )),
        ["proxy.yaml:5:33: proxy.max_request_body_bytes: expected an integer, found a string"]
    );
    assert_eq!(
        errs(&format!("{BASE}transforms:\n  - name: allowlist\n    config: {{domains: [a.test], warn: !!str true}}\n")),
        ["proxy.yaml:6:45: transforms[0].config.warn: expected a boolean (true or false), found a string"]
    );
    assert_eq!(
        errs(&format!("{BASE}log: !custom {{level: info}}\n")),
        ["proxy.yaml:4:6: invalid YAML: unknown tag '!custom' (supported: !!str, !!int, !!bool, !!float, !!null, !!map, !!seq, !!merge)"]
    );
}

#[test]
fn the_log_level_is_read_in_any_case() {
    for (text, level) in [
        ("DEBUG", LogLevel::Debug),
        ("Info", LogLevel::Info),
        ("wArN", LogLevel::Warn),
        ("ERROR", LogLevel::Error),
        ("\"Debug\"", LogLevel::Debug),
    ] {
        let cfg = ok(&format!("{BASE}log:\n  level: {text}\n"));
        assert_eq!(cfg.log.level, level, "{text}");
        assert_eq!(
            cfg.log.level.as_str(),
            text.trim_matches('"').to_lowercase()
        );
    }
    // A real typo still gets its suggestion, in whatever case it was written.
    assert_eq!(
        errs(&format!("{BASE}log:\n  level: DEBG\n")),
        ["proxy.yaml:5:10: log.level: invalid log level 'DEBG', did you mean 'debug'? (expected one of: debug, info, warn, error)"]
    );
    assert_eq!(
        errs(&format!("{BASE}log:\n  level: verbose\n")),
        ["proxy.yaml:5:10: log.level: invalid log level 'verbose' (expected one of: debug, info, warn, error)"]
    );
}

#[test]
fn load_places_findings_and_references_then_keeps_no_document() {
    const DOMAINS: usize = 10_000;
    let domains: String = (0..DOMAINS)
        .map(|i| format!("        - d{i}.test\n"))
        .collect();
    let text = format!(
        "tls:\n  ca_cert: /nonexistent/ca.crt\n  ca_key: /nonexistent/ca.key\n\
         management:\n  listen: \":9092\"\ntransforms:\n  - name: allowlist\n    config:\n      \
         domains:\n{domains}  - name: secrets\n    config:\n      secrets:\n        \
         - source: {{type: env, var: S}}\n          replace: {{proxy_value: tok, match_headers: \
         [Authorization]}}\n          rules: [{{host: api.test}}]\n  - name: judge\n    \
         config: {{name: j1, prompt: p, rules: [{{host: api.test}}], provider: {{type: anthropic, \
         model: m, api_key_env: K}}}}\n"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("proxy.yaml");
    std::fs::write(&path, text).expect("written");
    let file = path.display().to_string();
    let cfg = crate::config::load(&path).unwrap_or_else(|e| panic!("valid config, got:\n{e}"));

    // Findings were placed at load, where each field was written.
    let found: Vec<String> = crate::config::lint(&cfg)
        .iter()
        .map(|l| format!("{}: {}", l.location, l.path))
        .collect();
    let judge_line = 10 + DOMAINS + 6;
    assert_eq!(
        found,
        [
            format!("{file}:{judge_line}:5: transforms[2]"),
            format!("{file}:5:11: management.listen"),
        ]
    );
    // So were the fields `validate` may report as missing files or variables.
    assert_eq!(
        cfg.locate("tls.ca_cert").to_string(),
        format!("{file}:2:12")
    );
    assert_eq!(
        cfg.locate("transforms[1].config.secrets[0].source.var")
            .to_string(),
        format!("{file}:{}:36", 10 + DOMAINS + 3)
    );
    // The config keeps those places only: twelve (two CA files, three
    // variables, the seven listeners a start or reload binds), not the ten
    // thousand domains, which it can no longer place at all.
    assert_eq!(cfg.positions.len(), 12);
    assert_eq!(
        cfg.locate("transforms[0].config.domains[7]").to_string(),
        file
    );
}

/// The spec's starting configs leave the CA to the deployment: without
/// `tls.ca_cert`/`ca_key` a config is valid, each unset field is a reference
/// `validate` warns about (an error under -strict), and starting needs both.
#[test]
fn an_unset_ca_is_valid_but_named_for_startup() {
    let cfg = super::ok("proxy: {}\n");
    let TlsConfig::Mitm(m) = &cfg.tls else {
        panic!("mitm is the default")
    };
    let refs: Vec<String> = check_references(&cfg, &|_| None)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        refs,
        [
            "tls.ca_cert is not set; MITM mode (the default) needs the CA to start: set it here \
             or in IRON_TLS_CA_CERT, or set tls.mode: sni-only",
            "tls.ca_key is not set; MITM mode (the default) needs the CA to start: set it here \
             or in IRON_TLS_CA_KEY, or set tls.mode: sni-only",
        ]
    );
    assert_eq!(m.ca_paths().map_err(|e| e.field), Err("ca_cert"));
    let cfg = super::ok("tls:\n  ca_cert: /c.pem\n");
    let TlsConfig::Mitm(m) = &cfg.tls else {
        panic!("mitm")
    };
    assert_eq!(m.ca_paths().map_err(|e| e.field), Err("ca_key"));
    // The environment fills them as it fills any other field.
    let env = |k: &str| match k {
        "IRON_TLS_CA_CERT" => Some("/c.pem".to_string()),
        "IRON_TLS_CA_KEY" => Some("/k.pem".to_string()),
        _ => None,
    };
    let cfg = parse("proxy: {}\n", "proxy.yaml", &env).expect("valid");
    let TlsConfig::Mitm(m) = &cfg.tls else {
        panic!("mitm")
    };
    assert!(m.ca_paths().is_ok());
    // sni-only needs no CA.
    let cfg = super::ok("tls: {mode: sni-only}\n");
    assert!(check_references(&cfg, &|_| None).is_empty());
}

/// A file that is only a list of transforms (how the spec writes its
/// transform examples) is read as `transforms:`, with a warning at line 1;
/// its errors keep their places in the list.
#[test]
fn a_list_is_read_as_the_transforms() {
    let text = "- name: allowlist\n  config:\n    domains: [a.test]\n";
    let cfg = super::ok(text);
    assert_eq!(cfg.transforms.len(), 1);
    let warned: Vec<String> = crate::config::lint(&cfg)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        warned
            .iter()
            .any(|w| w.starts_with("proxy.yaml:1:1:") && w.contains("the file is a list")),
        "{warned:?}"
    );
    assert_eq!(
        super::errs("- name: allowlist\n  config:\n    domain: [a.test]\n"),
        ["proxy.yaml:3:5: transforms[0].config: unknown field 'domain', did you mean 'domains'?"]
    );
}
