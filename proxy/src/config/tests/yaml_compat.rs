//! Scalars and merges read as yaml.v3 reads them into the Go proxy's typed
//! fields: YAML 1.1 booleans in bool fields, Go integer syntax and whole
//! floats in integer fields (strings stay as written), and `<<` refusing an
//! alias of a list.

use super::{errs, ok, BASE};
use crate::config::{SecretMode, TransformConfig};

/// An allowlist whose `warn` is `value`.
fn warn(value: &str) -> String {
    format!("{BASE}transforms:\n  - name: allowlist\n    config:\n      domains: [a.test]\n      warn: {value}\n")
}

fn warn_of(text: &str) -> bool {
    let TransformConfig::Allowlist(a) = &ok(text).transforms[0] else {
        panic!("an allowlist")
    };
    a.warn
}

#[test]
fn bool_fields_take_the_yaml_1_1_spellings_quoted_or_not() {
    for (value, expected) in [
        ("true", true),
        ("False", false),
        ("yes", true),
        ("Yes", true),
        ("YES", true),
        ("y", true),
        ("Y", true),
        ("on", true),
        ("On", true),
        ("ON", true),
        ("no", false),
        ("No", false),
        ("NO", false),
        ("n", false),
        ("N", false),
        ("off", false),
        ("Off", false),
        ("OFF", false),
        // yaml.v3 matches the string value, so quoting does not matter.
        ("\"yes\"", true),
        ("'off'", false),
        ("!!str on", true),
    ] {
        assert_eq!(warn_of(&warn(value)), expected, "warn: {value}");
    }
    // Other spellings are refused as before, and a quoted "true" is a string.
    for (value, found) in [
        ("yEs", "'yEs'"),
        ("1", "'1'"),
        ("t", "'t'"),
        ("enabled", "'enabled'"),
        ("\"true\"", "a string"),
    ] {
        assert_eq!(
            errs(&warn(value)),
            [format!("proxy.yaml:8:13: transforms[0].config.warn: expected a boolean (true or false), found {found}")],
            "warn: {value}"
        );
    }
}

#[test]
fn string_fields_keep_yes_no_and_numbers_as_written() {
    let cfg = ok(&format!(
        "{BASE}transforms:\n  - name: secrets\n    config:\n      secrets:\n        \
         - source: {{type: env, var: yes}}\n          replace: {{proxy_value: 0x1F}}\n          \
         rules: [{{host: api.test}}]\n        - source: {{type: env, var: 1_000}}\n          \
         replace: {{proxy_value: 1e3}}\n          rules: [{{host: api.test}}]\n"
    ));
    let TransformConfig::Secrets(s) = &cfg.transforms[0] else {
        panic!("secrets")
    };
    let got: Vec<(String, String)> = s
        .secrets
        .iter()
        .map(|e| {
            let crate::config::SecretSourceConfig::Env { var, .. } = &e.source else {
                panic!("env")
            };
            let SecretMode::Replace(r) = &e.mode else {
                panic!("replace")
            };
            (var.clone(), r.proxy_value.clone())
        })
        .collect();
    assert_eq!(
        got,
        [
            ("yes".to_string(), "0x1F".to_string()),
            ("1_000".to_string(), "1e3".to_string())
        ]
    );
}

/// `proxy.max_request_body_bytes: <value>`.
fn body_limit(value: &str) -> String {
    format!("{BASE}proxy:\n  max_request_body_bytes: {value}\n")
}

#[test]
fn integer_fields_take_go_integer_syntax_and_whole_floats() {
    for (value, expected) in [
        ("2048", 2048),
        ("+2048", 2048),
        ("0x800", 2048),
        ("0X800", 2048),
        ("0o4000", 2048),
        ("0b100000000000", 2048),
        ("2_048", 2048),
        ("1_048_576", 1_048_576),
        ("2.048e3", 2048),
        ("2048.0", 2048),
        ("1e6", 1_000_000),
        ("0", 0),
    ] {
        assert_eq!(
            ok(&body_limit(value)).proxy.max_request_body_bytes,
            expected,
            "max_request_body_bytes: {value}"
        );
    }
    // And in the other integer fields, which share the decoder.
    let cfg = ok(&format!(
        "{BASE}  cert_cache_size: 0x400\n  leaf_cert_expiry_hours: 1e2\n"
    ));
    let crate::config::TlsConfig::Mitm(m) = &cfg.tls else {
        panic!("mitm")
    };
    assert_eq!((m.cert_cache_size, m.leaf_cert_expiry_hours), (1024, 100));
}

#[test]
fn integer_fields_refuse_fractions_octal_lookalikes_and_strings() {
    let at = "proxy.yaml:5:27: proxy.max_request_body_bytes:";
    for (value, message) in [
        ("1.5", "expected an integer, found '1.5' (a fraction: yaml.v3 would drop it silently; write a whole number)"),
        ("2.5e-1", "expected an integer, found '2.5e-1' (a fraction: yaml.v3 would drop it silently; write a whole number)"),
        ("010", "expected an integer, found '010' (a leading 0 means octal to yaml.v3: write 0o... or drop the 0)"),
        ("0x", "expected an integer, found '0x'"),
        ("_1", "expected an integer, found '_1'"),
        ("1k", "expected an integer, found '1k'"),
        (".inf", "expected an integer, found '.inf'"),
        ("\"2048\"", "expected an integer, found a string"),
        ("'0x800'", "expected an integer, found a string"),
        ("-1", "-1 is out of range (0..=9223372036854775807)"),
        ("-1e3", "-1e3 is out of range (0..=9223372036854775807)"),
        ("1e30", "1e30 is out of range (0..=9223372036854775807)"),
        ("99999999999999999999", "expected an integer, found '99999999999999999999' (out of range)"),
    ] {
        assert_eq!(
            errs(&body_limit(value)),
            [format!("{at} {message}")],
            "max_request_body_bytes: {value}"
        );
    }
}

#[test]
fn variables_still_take_plain_decimals_only() {
    let env = |k: &str| (k == "IRON_PROXY_MAX_REQUEST_BODY_BYTES").then(|| "0x800".to_string());
    assert_eq!(
        super::errs_env(BASE, &env),
        ["IRON_PROXY_MAX_REQUEST_BODY_BYTES: proxy.max_request_body_bytes: expected an integer, found '0x800'"]
    );
}

/// Two allowlists; the second one's `config` ends with `<<: <merge>`. The
/// first has anchors: `&cfg` on its config, `&rules` on a list of mappings.
fn merged(merge: &str) -> String {
    format!(
        "tls:\n  mode: sni-only\ntransforms:\n  - name: header_allowlist\n    config: &cfg\n      \
         headers: [Accept]\n      rules: &rules [{{host: a.test}}, {{host: b.test}}]\n  \
         - name: header_allowlist\n    config:\n      <<: {merge}\n"
    )
}

fn rules_of(cfg: &crate::config::Config) -> String {
    let TransformConfig::HeaderAllowlist(h) = &cfg.transforms[1] else {
        panic!("a header_allowlist")
    };
    format!("{:?}", h.rules)
}

#[test]
fn a_merge_of_a_mapping_or_a_list_written_in_place_is_accepted() {
    let first = rules_of(&ok(&merged("*cfg")));
    for merge in [
        "*cfg",
        "[*cfg]",
        "[*cfg, {headers: [Host]}]",
        "[{headers: [Host]}, *cfg]",
    ] {
        assert_eq!(rules_of(&ok(&merged(merge))), first, "<<: {merge}");
    }
}

#[test]
fn a_merge_of_an_alias_of_a_list_is_refused_at_the_alias() {
    // yaml.v3: "map merge requires map or sequence of maps as the value", for
    // an alias of a list even when the list holds mappings.
    assert_eq!(
        errs(&merged("*rules")),
        ["proxy.yaml:10:11: invalid YAML: '<<' merges a mapping or a list of mappings, found an \
          alias of a list (yaml.v3 refuses it: write the list in place, '<<: [*a, *b]')"]
    );
    // A list inside the list is refused as before, at that element.
    assert_eq!(
        errs(&merged("[*cfg, *rules]")),
        ["proxy.yaml:10:18: invalid YAML: '<<' merges a mapping or a list of mappings, found a list"]
    );
    // An alias of a list anywhere else is fine.
    let cfg = ok(&merged("*cfg").replace(
        "  - name: header_allowlist\n    config:\n      <<: *cfg\n",
        "  - name: header_allowlist\n    config:\n      headers: [Host]\n      rules: *rules\n",
    ));
    assert_eq!(cfg.transforms.len(), 2);
}
