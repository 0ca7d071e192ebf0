//! Values that passed `validate` and failed only at run time, or never
//! worked: text no header value may hold in a header template, a prefix or a
//! proxy token; empty names; a secret source's region that is no host
//! label; proxy tokens that meet. Each is refused (or warned about) at its
//! field, without repeating the value.

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

/// Required names the spec marks required were accepted empty.
#[test]
fn empty_secret_ids_parameter_names_and_tool_names_are_refused() {
    assert_eq!(
        errs(&format!(
            "{SECRET_HEAD}        - source: {{type: aws_sm, secret_id: \"\"}}\n          inject: \
             {{header: X-Key}}\n        - source: {{type: aws_ssm, name: ''}}\n          inject: \
             {{header: X-Other}}\n{BASE}"
        )),
        [
            "proxy.yaml:5:45: transforms[0].config.secrets[0].source.secret_id: secret_id must \
             not be empty",
            "proxy.yaml:7:41: transforms[0].config.secrets[1].source.name: name must not be empty",
        ]
    );
    assert_eq!(
        errs(&format!(
            "mcp:\n  servers:\n    - name: github\n      rules: [{{host: m.test}}]\n      tools:\n        \
             - name: \"\"\n{BASE}"
        )),
        ["proxy.yaml:6:17: mcp.servers[0].tools[0].name: name must not be empty"]
    );
}

/// A secret source's region goes into the endpoint's host name: one no
/// host label can be is refused; a near miss of a region's name is a
/// warning naming the region meant.
#[test]
fn a_secret_source_region_is_checked() {
    let source = |region: &str| {
        format!(
            "{SECRET_HEAD}        - source: {{type: aws_sm, secret_id: k, region: \"{region}\"}}\n          \
             inject: {{header: X-Key}}\n{BASE}"
        )
    };
    assert_eq!(
        errs(&source("../../etc")),
        [
            "proxy.yaml:5:56: transforms[0].config.secrets[0].source.region: \"../../etc\" is not \
          an AWS region: the region is part of the service's host name, which takes letters, \
          digits, '-' and '_' (it holds '.'); write a region such as us-east-1"
        ]
    );
    assert_eq!(
        warnings(&source("us-east1")),
        [
            "proxy.yaml:5:56: transforms[0].config.secrets[0].source.region: 'us-east1': this is \
          not the name of an AWS region (a partition, a direction and a number, as in \
          us-east-1); did you mean 'us-east-1'? The secret is fetched from AWS in this region, \
          and AWS has no region of this name."
        ]
    );
    ok(&source("eu-west-1"));
}

/// Two entries with one proxy token on requests both see: the second never
/// swaps anything. A warning at the second, naming the first (the spec
/// allows it, and a config that ran before must still start); entries on
/// different hosts, or scanning different headers, may share a token. One
/// token inside another is a warning at the shorter one.
#[test]
fn proxy_values_that_meet_are_warned_about() {
    let entry = |value: &str, extra: &str| {
        format!(
            "        - source: {{type: env, var: K}}\n          replace: {{proxy_value: {value}{extra}}}\n"
        )
    };
    let text = format!("{SECRET_HEAD}{}{}{BASE}", entry("pk", ""), entry("pk", ""));
    let same = "on requests both entries see: that entry swaps the token first, so this one \
                never finds it (and with require refuses the request); give each secret its own \
                proxy_value";
    assert_eq!(
        warnings(&text),
        [format!(
            "proxy.yaml:8:34: transforms[0].config.secrets[1].replace.proxy_value: the same \
             proxy_value as transforms[0].config.secrets[0].replace.proxy_value (line 6), {same}"
        )]
    );
    // Another transform, legacy form: the same.
    let text = format!(
        "{SECRET_HEAD}{}  - name: secrets\n    config:\n      secrets:\n        - source: {{type: \
         env, var: J}}\n          proxy_value: pk\n{BASE}",
        entry("pk", "")
    );
    assert_eq!(
        warnings(&text),
        [format!(
            "proxy.yaml:11:24: transforms[1].config.secrets[0].proxy_value: the same proxy_value \
             as transforms[0].config.secrets[0].replace.proxy_value (line 6), {same}"
        )]
    );
    // Disjoint: other hosts, or other headers and no body.
    let on = |host: &str| format!("          rules: [{{host: {host}}}]\n");
    let apart = format!(
        "{SECRET_HEAD}{}{}{}{}{BASE}",
        entry("pk", ""),
        on("a.test"),
        entry("pk", ""),
        on("b.test")
    );
    assert_eq!(warnings(&apart), Vec::<String>::new());
    let apart = format!(
        "{SECRET_HEAD}{}{}{BASE}",
        entry("pk", ", match_headers: [X-A]"),
        entry("pk", ", match_headers: [X-B]")
    );
    assert_eq!(warnings(&apart), Vec::<String>::new());
    let text = format!("{SECRET_HEAD}{}{}{BASE}", entry("pk9", ""), entry("pk", ""));
    assert_eq!(
        warnings(&text),
        [
            "proxy.yaml:8:34: transforms[0].config.secrets[1].replace.proxy_value: this \
          proxy_value is part of transforms[0].config.secrets[0].replace.proxy_value (line 6), \
          on requests both entries see: where the workload sends that longer token, this entry \
          can swap the part of it that matches, and the upstream receives neither token nor \
          secret; use proxy values that do not contain one another"
        ]
    );
}
