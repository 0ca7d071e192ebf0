//! Values that passed `validate` and failed only at run time, or never
//! worked: text no header value may hold in a header template, a prefix or a
//! proxy token. Each is refused (or warned about) at its field, without
//! repeating the value.

use super::{errs, ok, BASE};

const SECRET_HEAD: &str = "transforms:\n  - name: secrets\n    config:\n      secrets:\n";

/// The findings of `text`, as `validate` shows them, but the one every
/// config here has (no allowlist).
fn warnings(text: &str) -> Vec<String> {
    crate::config::lint(&ok(text))
        .iter()
        .map(ToString::to_string)
        .filter(|w| !w.contains("no allowlist transform"))
        .collect()
}

/// A formatter whose own text puts a control character in the header value
/// made every request fail with "secret X: the value is not a valid header
/// value", blaming the secret. Refused at load, at the formatter, whether
/// the character is in the text, in a string literal or the newline a block
/// scalar ends with; a tab is allowed, and a formatter with `query_param`
/// (not a header) is left alone.
#[test]
fn a_formatter_that_writes_a_control_character_is_refused() {
    let entry = |formatter: &str| {
        format!(
            "{SECRET_HEAD}        - source: {{type: env, var: K}}\n          inject:\n            \
             header: X-Key\n            formatter: {formatter}\n{BASE}"
        )
    };
    assert_eq!(
        errs(&entry("\"Bearer\\n{{ .Value }}\"")),
        [
            "proxy.yaml:8:24: transforms[0].config.secrets[0].inject.formatter: the template \
          writes a line feed (LF) at character 7 into the header value, which no HTTP header \
          value may hold: every request it applies to would fail"
        ]
    );
    assert_eq!(
        errs(&entry("'{{ \"\\r\" }}{{ .Value }}'")),
        [
            "proxy.yaml:8:24: transforms[0].config.secrets[0].inject.formatter: the template \
          writes a carriage return (CR) into the header value, which no HTTP header value may \
          hold: every request it applies to would fail"
        ]
    );
    assert_eq!(
        errs(&entry("|\n              Bearer {{ .Value }}")),
        [
            "proxy.yaml:9:15: transforms[0].config.secrets[0].inject.formatter: the template \
          writes a line feed (LF) at character 20 into the header value, which no HTTP header \
          value may hold: every request it applies to would fail (a YAML block scalar written \
          with '|' or '>' ends with a newline: write '|-' or '>-', or a quoted string)"
        ]
    );
    ok(&entry("\"Bearer\\t{{ .Value | base64 }}\""));
    ok(&format!(
        "{SECRET_HEAD}        - source: {{type: env, var: K}}\n          inject: {{query_param: \
         key, formatter: \"a\\nb\"}}\n{BASE}"
    ));
}

/// `hmac_sign`'s header templates and `oauth_token`'s `value_prefix` make
/// header values too.
#[test]
fn hmac_header_templates_and_oauth_prefixes_are_checked_as_header_values() {
    let hmac = format!(
        "transforms:\n  - name: hmac_sign\n    config:\n      timestamp: {{format: unix_seconds}}\n      \
         signature: {{algorithm: sha256, key_encoding: raw, output_encoding: hex, message: \
         \"{{{{ .Method }}}}\\n{{{{ .Path }}}}\"}}\n      credentials:\n        secret: {{type: env, \
         var: K}}\n      headers:\n        - name: X-Sig\n          value: \"{{{{ .Signature \
         }}}}\\r\"\n      rules: [{{host: api.test}}]\n{BASE}"
    );
    assert_eq!(
        errs(&hmac),
        [
            "proxy.yaml:10:18: transforms[0].config.headers[0].value: the template writes a \
          carriage return (CR) at character 17 into the header value, which no HTTP header \
          value may hold: every request it applies to would fail"
        ]
    );
    let oauth = format!(
        "transforms:\n  - name: oauth_token\n    config:\n      tokens:\n        - grant: \
         client_credentials\n          client_id: {{type: env, var: I}}\n          client_secret: \
         {{type: env, var: S}}\n          token_endpoint: https://auth.test/token\n          \
         rules: [{{host: api.test}}]\n          value_prefix: \"Bearer\\0\"\n{BASE}"
    );
    assert_eq!(
        errs(&oauth),
        [
            "proxy.yaml:10:25: transforms[0].config.tokens[0].value_prefix: value_prefix holds a \
          NUL character at character 7, which no HTTP header value may hold: every request it \
          applies to would fail"
        ]
    );
}

/// A proxy token no header value can hold is never found in a header: an
/// error when headers are all the entry scans, a warning when it scans the
/// body or the query too.
#[test]
fn a_proxy_value_no_header_can_hold_is_refused_or_warned() {
    let entry = |extra: &str| {
        format!(
            "{SECRET_HEAD}        - source: {{type: env, var: K}}\n          replace:\n            \
             proxy_value: \"pk-proxy\\n\"\n{extra}{BASE}"
        )
    };
    assert_eq!(
        errs(&entry("")),
        [
            "proxy.yaml:7:26: transforms[0].config.secrets[0].replace.proxy_value: proxy_value \
          holds a line feed (LF) at character 9, which no HTTP header value may hold, so the \
          token is never found in a header, and headers are all this entry scans (a YAML block \
          scalar written with '|' or '>' ends with a newline: write '|-' or '>-', or a quoted \
          string)"
        ]
    );
    assert_eq!(
        warnings(&entry("            match_body: true\n")),
        [
            "proxy.yaml:7:26: transforms[0].config.secrets[0].replace.proxy_value: proxy_value \
          holds a line feed (LF) at character 9, which no HTTP header value may hold, so the \
          token is never found in a header; only in the body or the query (a YAML block scalar \
          written with '|' or '>' ends with a newline: write '|-' or '>-', or a quoted string)"
        ]
    );
}
