//! Broken configs: each is refused with the exact file:line:column, field path
//! and message. The CA block goes last so line numbers are the snippet's own.

use super::{errs, BASE};

/// Asserts that `snippet` (followed by the CA block) fails with exactly `expected`.
fn refused(snippet: &str, expected: &[&str]) {
    let text = format!("{snippet}{BASE}");
    let got = errs(&text);
    assert_eq!(got, expected, "\n--- config:\n{text}");
}

const SECRET_HEAD: &str = "transforms:\n  - name: secrets\n    config:\n      secrets:\n";

#[test]
fn unknown_key_at_depth_with_suggestion() {
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K}}\n          replace:\n            proxy_value: pk\n            match_header: [x-api-key]\n"),
        &["proxy.yaml:8:13: transforms[0].config.secrets[0].replace: unknown field 'match_header', did you mean 'match_headers'?"],
    );
    refused(
        "proxy:\n  listen: \":80\"\n",
        &["proxy.yaml:2:3: proxy: unknown field 'listen' (expected one of: http_listen, https_listen, tunnel_listen, max_request_body_bytes, max_response_body_bytes, max_buffered_bytes, upstream_response_header_timeout, upstream_deny_cidrs, max_connections_per_client, max_connections, client_cidrs)"],
    );
    // Fields are per source type: `region` is not an env source field (`ttl`
    // is, as on every source, though it has no effect there).
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K, region: eu-west-1}}\n          inject: {{header: X-Key}}\n"),
        &["proxy.yaml:5:39: transforms[0].config.secrets[0].source: unknown field 'region' (expected one of: type, var, json_key, ttl)"],
    );
}

#[test]
fn bare_ip_as_cidr() {
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      cidrs: [\"10.0.0.0/8\", \"10.1.2.3\"]\n",
        &["proxy.yaml:4:29: transforms[0].config.cidrs[1]: invalid CIDR \"10.1.2.3\": expected address/prefix such as 10.0.0.0/8"],
    );
}

#[test]
fn bad_regex() {
    refused(
        "transforms:\n  - name: header_allowlist\n    config:\n      headers:\n        - Accept\n        - \"/^X-(Trace/\"\n",
        &["proxy.yaml:6:11: transforms[0].config.headers[1]: invalid regex \"^X-(Trace\": unclosed group"],
    );
}

#[test]
fn path_without_slash() {
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: api.openai.com\n          paths: [\"v1/*\"]\n",
        &["proxy.yaml:6:19: transforms[0].config.rules[0].paths[0]: path pattern \"v1/*\" must start with '/'"],
    );
}

#[test]
fn bad_schemes() {
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: api.openai.com\n          schemes: [https, ftp]\n",
        &["proxy.yaml:6:28: transforms[0].config.rules[0].schemes[1]: invalid scheme 'ftp' (expected one of: http, https)"],
    );
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: api.openai.com\n          schemes: [htps]\n",
        &["proxy.yaml:6:21: transforms[0].config.rules[0].schemes[0]: invalid scheme 'htps', did you mean 'https'? (expected one of: http, https)"],
    );
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: api.openai.com\n          schemes: []\n",
        &["proxy.yaml:6:20: transforms[0].config.rules[0].schemes: an empty 'schemes' list matches nothing: list http, https or both, or leave it out for both"],
    );
    // In a credential transform's rules too.
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K}}\n          inject: {{header: X-Key}}\n          rules:\n            - host: api.test\n              schemes: https\n"),
        &["proxy.yaml:9:24: transforms[0].config.secrets[0].rules[0].schemes: expected a list, found a scalar"],
    );
}

#[test]
fn non_positive_and_negative_durations() {
    refused(
        "proxy:\n  upstream_response_header_timeout: 0s\n",
        &["proxy.yaml:2:37: proxy.upstream_response_header_timeout: duration \"0s\" must be positive"],
    );
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: aws_sm, secret_id: s, ttl: -5m}}\n          inject: {{header: X}}\n"),
        &["proxy.yaml:5:53: transforms[0].config.secrets[0].source.ttl: duration \"-5m\" must not be negative"],
    );
    refused(
        "proxy:\n  upstream_response_header_timeout: 30\n",
        &["proxy.yaml:2:37: proxy.upstream_response_header_timeout: invalid duration \"30\": expected a number with a unit such as \"30s\", \"5m\", \"1h30m\" or \"250ms\""],
    );
}

#[test]
fn bad_enums() {
    refused(
        "log:\n  level: warning\n",
        &["proxy.yaml:2:10: log.level: invalid log level 'warning', did you mean 'warn'? (expected one of: debug, info, warn, error)"],
    );
    refused(
        "log:\n  format: jsonl\n",
        &["proxy.yaml:2:11: log.format: invalid log format 'jsonl', did you mean 'json'? (expected one of: json, text)"],
    );
    refused(
        "log:\n  format: logfmt\n",
        &["proxy.yaml:2:11: log.format: invalid log format 'logfmt' (expected one of: json, text)"],
    );
    refused(
        "dns:\n  proxy_ip: 10.0.0.2\n  records:\n    - {name: a.local, type: AAAA, value: \"::1\"}\n",
        &["proxy.yaml:4:29: dns.records[0].type: invalid record type 'AAAA' (expected one of: A, CNAME)"],
    );
}

#[test]
fn dns_values() {
    refused(
        "dns:\n  proxy_ip: \"fd00::2\"\n  upstream_resolver: dns.google\n  records:\n    - {name: db.internal, type: A, value: 10.0.0.5}\n    - {name: db.internal, type: CNAME, value: other.internal}\n",
        &[
            "proxy.yaml:2:13: dns.proxy_ip: \"fd00::2\" is an IPv6 address; proxy_ip is the IPv4 answer (set proxy_ip6 for AAAA)",
            "proxy.yaml:3:22: dns.upstream_resolver: invalid resolver address \"dns.google\": expected ip:port such as \"8.8.8.8:53\" or \"[2001:4860:4860::8888]:53\"",
            "proxy.yaml:6:8: dns.records[1]: 'db.internal' has a CNAME and another record",
        ],
    );
    // CNAME loops and over-long chains: refused where the chain starts, as the server
    // would refuse them at start-up.
    refused(
        "dns:\n  proxy_ip: 10.0.0.2\n  records:\n    - {name: ok.local, type: CNAME, value: a.local}\n    - {name: a.local, type: CNAME, value: B.local.}\n    - {name: b.local, type: CNAME, value: a.local}\n",
        &["proxy.yaml:4:8: dns.records[0]: CNAME chain ok.local -> a.local -> b.local -> a.local loops"],
    );
    refused(
        "dns:\n  proxy_ip: 10.0.0.2\n  records:\n    - {name: self.local, type: CNAME, value: self.local}\n",
        &["proxy.yaml:4:8: dns.records[0]: CNAME chain self.local -> self.local loops"],
    );
    let chain = |n: usize| -> String {
        let mut y = String::from("dns:\n  proxy_ip: 10.0.0.2\n  records:\n");
        for i in 0..n {
            y.push_str(&format!(
                "    - {{name: c{i}.local, type: CNAME, value: c{}.local}}\n",
                i + 1
            ));
        }
        y.push_str(&format!(
            "    - {{name: c{n}.local, type: A, value: 10.0.0.5}}\n"
        ));
        y
    };
    // Record types in any case, as DNS reads them.
    let lower = "tls:\n  mode: sni-only\ndns:\n  proxy_ip: 10.0.0.2\n  records:\n    - {name: a.local, type: a, value: 10.0.0.5}\n    - {name: b.local, type: Cname, value: a.local}\n";
    let cfg = crate::config::parse(lower, "proxy.yaml", &|_| None).expect("lowercase types");
    assert_eq!(cfg.dns.expect("dns").records.len(), 2);
    let eight = format!("tls:\n  mode: sni-only\n{}", chain(8));
    crate::config::parse(&eight, "proxy.yaml", &|_| None).expect("8 CNAMEs in a chain are fine");
    refused(
        &chain(9),
        &["proxy.yaml:4:8: dns.records[0]: CNAME chain c0.local -> c1.local -> c2.local -> c3.local -> c4.local -> c5.local -> c6.local -> c7.local -> c8.local -> c9.local is longer than 8 records"],
    );
}

#[test]
fn inject_and_replace_together() {
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K}}\n          inject: {{header: Authorization}}\n          replace: {{proxy_value: pk}}\n"),
        &["proxy.yaml:7:11: transforms[0].config.secrets[0]: 'inject' and 'replace' are mutually exclusive"],
    );
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K}}\n          replace: {{proxy_value: pk}}\n          match_body: true\n"),
        &["proxy.yaml:7:11: transforms[0].config.secrets[0]: 'match_body' belongs inside 'replace': do not mix the legacy top-level replace fields with a 'replace' block"],
    );
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K}}\n          rules: []\n"),
        &["proxy.yaml:5:11: transforms[0].config.secrets[0]: one of 'inject' or 'replace' is required"],
    );
}

#[test]
fn host_and_cidr_in_one_rule() {
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: a.com\n          cidr: 10.0.0.0/8\n",
        &["proxy.yaml:5:11: transforms[0].config.rules[0]: a rule needs exactly one of 'host' or 'cidr'"],
    );
}

#[test]
fn mcp_equals_and_in() {
    refused(
        "mcp:\n  servers:\n    - name: gh\n      rules: [{host: mcp.github.com}]\n      tools:\n        - name: create_issue\n          when:\n            - path: owner\n              equals: ironsh\n              in: [a, b]\n",
        &["proxy.yaml:10:15: mcp.servers[0].tools[0].when[0]: 'equals', 'in' and 'matches' are mutually exclusive"],
    );
}

#[test]
fn mcp_equals_with_a_leading_zero() {
    refused(
        "mcp:\n  servers:\n    - name: gh\n      rules: [{host: mcp.github.com}]\n      tools:\n        - name: create_issue\n          when:\n            - path: n\n              in: [1, 010]\n",
        &["proxy.yaml:9:23: mcp.servers[0].tools[0].when[0].in: \"010\" is ambiguous (a leading 0 means octal to yaml.v3: write 0o... or drop the 0)"],
    );
}

const JUDGE: &str = "      prompt: p\n      rules: [{host: api.github.com}]\n      provider: {type: anthropic, model: m, api_key_env: K}\n";

#[test]
fn judge_fallback_allow() {
    refused(
        &format!("transforms:\n  - name: judge\n    config:\n      name: guard\n      fallback: allow\n{JUDGE}"),
        &["proxy.yaml:5:17: transforms[0].config.fallback: invalid judge fallback 'allow' (expected one of: deny, skip): a failing judge cannot approve a request"],
    );
}

#[test]
fn duplicate_judge_names() {
    refused(
        &format!("transforms:\n  - name: judge\n    config:\n      name: guard\n{JUDGE}  - name: judge\n    config:\n      name: guard\n{JUDGE}"),
        &["proxy.yaml:10:13: transforms[1].config.name: duplicate judge name 'guard' (also used by transforms[0]); judge names must be unique"],
    );
    // Still reported when another entry is broken.
    refused(
        &format!("transforms:\n  - name: judge\n    config:\n      name: guard\n{JUDGE}  - name: judge\n    config:\n      name: guard\n      timeout: 0s\n{JUDGE}"),
        &[
            "proxy.yaml:10:13: transforms[1].config.name: duplicate judge name 'guard' (also used by transforms[0]); judge names must be unique",
            "proxy.yaml:11:16: transforms[1].config.timeout: duration \"0s\" must be positive",
        ],
    );
}

#[test]
fn bad_templates() {
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K}}\n          inject:\n            header: Authorization\n            formatter: \"Bearer {{{{ .Value }}\"\n"),
        &["proxy.yaml:8:24: transforms[0].config.secrets[0].inject.formatter: invalid template: template column 8: unclosed action"],
    );
    refused(
        &format!("{SECRET_HEAD}        - source: {{type: env, var: K}}\n          inject: {{header: Authorization, formatter: \"Basic {{{{ b64 .Value }}}}\"}}\n"),
        &["proxy.yaml:6:54: transforms[0].config.secrets[0].inject.formatter: invalid template: template column 10: unknown function \"b64\" (available: base64)"],
    );
    refused(
        "transforms:
  - name: hmac_sign
    config:
      timestamp: {format: unix_seconds}
      signature: {algorithm: sha256, key_encoding: raw, output_encoding: hex, message: \"{{.Timestamp}}{{.Credentials.kye}}\"}
      credentials: {key: {type: env, var: A}, secret: {type: env, var: B}}
      headers: [{name: X-Sig, value: \"{{.Signature}}\"}]
      rules: [{host: api.example.com}]
",
        &["proxy.yaml:5:88: transforms[0].config.signature.message: template uses .Credentials.kye but there is no credential 'kye', did you mean 'key'?"],
    );
}

#[test]
fn yaml_syntax_error() {
    refused(
        "proxy:\n  http_listen: \":80\"\n   https_listen: \":443\"\n",
        &["proxy.yaml:3:4: invalid YAML: line 3 is indented further than line 2 ('http_listen: \":80\"'), whose key has its value on that line already: indent line 3 to column 3 to make it a key beside it"],
    );
    assert_eq!(errs("dns: [\n"), ["proxy.yaml:1:6: invalid YAML: the list opened here with '[' is not closed with ']' before the end of the file"]);
}

#[test]
fn missing_required_fields() {
    refused(
        "dns:\n  listen: \":53\"\n",
        &["proxy.yaml:2:3: dns: missing required field 'proxy_ip'"],
    );
    refused(
        "transforms:\n  - name: oauth_token\n    config:\n      tokens:\n        - grant: password\n          username: {type: env, var: U}\n          client_id: {type: env, var: C}\n          token_endpoint: \"https://x.example/token\"\n          rules: [{host: x.example}]\n",
        &["proxy.yaml:5:11: transforms[0].config.tokens[0]: missing required field 'password'"],
    );
}

#[test]
fn unknown_transform_name() {
    refused(
        "transforms:\n  - name: allowlst\n",
        &["proxy.yaml:2:11: transforms[0].name: unknown transform 'allowlst', did you mean 'allowlist'? (valid transforms: allowlist, secrets, gcp_auth, oauth_token, aws_auth, hmac_sign, body_capture, annotate, grpc, judge, header_allowlist)"],
    );
    refused(
        "transforms:\n  - name: sikrit\n",
        &["proxy.yaml:2:11: transforms[0].name: unknown transform 'sikrit' (expected one of: allowlist, secrets, gcp_auth, oauth_token, aws_auth, hmac_sign, body_capture, annotate, grpc, judge, header_allowlist)"],
    );
}

#[test]
fn a_transform_named_as_the_spec_pages_name_it_points_at_its_config_name() {
    // The Concepts page's "Header Capture" is `annotate`; spelled any way, or
    // with a typo, it is still an error, with the transform meant.
    for name in [
        "header_capture",
        "Header-Capture",
        "headercapture",
        "header_captures",
    ] {
        refused(
            &format!("transforms:\n  - name: {name}\n"),
            &[&format!("proxy.yaml:2:11: transforms[0].name: unknown transform '{name}', did you mean 'annotate' (which copies request header values into the audit record)? (valid transforms: allowlist, secrets, gcp_auth, oauth_token, aws_auth, hmac_sign, body_capture, annotate, grpc, judge, header_allowlist)")],
        );
    }
    // "Host Allowlist" is `allowlist` (closest by spelling is header_allowlist,
    // which strips headers), and "LLM Judge" is `judge`.
    refused(
        "transforms:\n  - name: host_allowlist\n",
        &["proxy.yaml:2:11: transforms[0].name: unknown transform 'host_allowlist', did you mean 'allowlist' (which allows destination hosts, methods and paths and denies the rest)? (valid transforms: allowlist, secrets, gcp_auth, oauth_token, aws_auth, hmac_sign, body_capture, annotate, grpc, judge, header_allowlist)"],
    );
    refused(
        "transforms:\n  - name: llm_judge\n",
        &["proxy.yaml:2:11: transforms[0].name: unknown transform 'llm_judge', did you mean 'judge' (which asks an LLM whether each request may go)? (valid transforms: allowlist, secrets, gcp_auth, oauth_token, aws_auth, hmac_sign, body_capture, annotate, grpc, judge, header_allowlist)"],
    );
}

#[test]
fn mutually_exclusive_credentials() {
    refused(
        "transforms:\n  - name: gcp_auth\n    config:\n      keyfile_path: /k.json\n      credentials_provider: {type: workload_identity}\n      scopes: [s]\n",
        &["proxy.yaml:4:7: transforms[0].config: exactly one of 'keyfile_path', 'keyfile' or 'credentials_provider' must be set"],
    );
    refused(
        "transforms:\n  - name: gcp_auth\n    config:\n      credentials_provider: {type: workload_identity}\n      subject: a@b.example\n      scopes: [s]\n",
        &["proxy.yaml:5:7: transforms[0].config: 'subject' (domain-wide delegation) is incompatible with 'credentials_provider'"],
    );
    refused(
        "transforms:\n  - name: aws_auth\n    config:\n      access_key_id: {type: env, var: A}\n      credentials_provider: {type: workload_identity}\n      rules: [{host: \"*.amazonaws.com\"}]\n",
        &["proxy.yaml:4:7: transforms[0].config: 'access_key_id' and 'credentials_provider' are mutually exclusive"],
    );
    refused(
        "transforms:\n  - name: grpc\n    config:\n      name: g\n      target: \"localhost:9500\"\n      tls: {enabled: true, cert: /c.pem}\n",
        &["proxy.yaml:6:28: transforms[0].config.tls: 'cert' must be set together with 'key'"],
    );
}

#[test]
fn intercept_constraints() {
    refused(
        "intercept:\n  mode: ebpf\n",
        &["proxy.yaml:2:3: intercept: at least one of 'cgroups' or 'uids' is required"],
    );
    refused(
        "intercept:\n  uids: [1001]\n  dns: true\n",
        &["proxy.yaml:3:8: intercept.dns: DNS redirection needs a dns block (the proxy's DNS server)"],
    );
}

#[test]
fn duplicate_keys() {
    refused(
        "log:\n  level: info\n  level: debug\n",
        &["proxy.yaml:3:3: log: duplicate field 'level'"],
    );
}

#[test]
fn every_error_in_a_file_is_reported() {
    refused(
        "dns:
  proxy_ip: 10.0.0.300
proxy:
  upstream_deny_cidrs: [\"169.254.169.254\"]
  tunnel_listen: \"1080\"
transforms:
  - name: allowlist
    config:
      domain: [a.com]
  - name: secrets
    config:
      secrets:
        - source: {type: env}
          inject: {header: \"Bad Header\"}
        - source: {type: env, var: K}
          replace: {proxy_value: \"\"}
metrics:
  listen: 9090
logs: {}
",
        &[
            "proxy.yaml:2:13: dns.proxy_ip: invalid IPv4 address \"10.0.0.300\"",
            "proxy.yaml:4:25: proxy.upstream_deny_cidrs[0]: invalid CIDR \"169.254.169.254\": expected address/prefix such as 10.0.0.0/8",
            "proxy.yaml:5:18: proxy.tunnel_listen: invalid listen address \"1080\": expected host:port such as \":80\", \"127.0.0.1:9090\" or \"[::1]:53\"",
            "proxy.yaml:9:7: transforms[0].config: unknown field 'domain', did you mean 'domains'?",
            "proxy.yaml:13:20: transforms[1].config.secrets[0].source: missing required field 'var'",
            "proxy.yaml:14:28: transforms[1].config.secrets[0].inject.header: invalid header name \"Bad Header\"",
            "proxy.yaml:16:34: transforms[1].config.secrets[1].replace.proxy_value: proxy_value must not be empty",
            "proxy.yaml:18:11: metrics.listen: invalid listen address \"9090\": expected host:port such as \":80\", \"127.0.0.1:9090\" or \"[::1]:53\"",
            "proxy.yaml:19:1: unknown field 'logs', did you mean 'log'?",
        ],
    );
}

#[test]
fn environment_variable_names_that_cannot_exist() {
    refused(
        &format!(
            "{SECRET_HEAD}        - source: {{type: env, var: \"\"}}\n          inject: {{header: X-Key}}\n        - source: {{type: 1password_connect, secret_ref: \"op://v/i/f\", token_env: \"A=B\"}}\n          inject: {{header: X-Other}}\nmanagement:\n  listen: \"127.0.0.1:9092\"\n  api_key_env: \"\"\n"
        ),
        &[
            "proxy.yaml:5:36: transforms[0].config.secrets[0].source.var: environment variable name must not be empty",
            "proxy.yaml:7:82: transforms[0].config.secrets[1].source.token_env: this is not an environment variable name (letters, digits and '_'); the 3 characters written are not shown, in case they are the value itself",
            "proxy.yaml:11:16: management.api_key_env: environment variable name must not be empty",
        ],
    );
}

/// A value pasted where its variable's name goes is refused without being
/// echoed; a `$` before a name gets a hint.
#[test]
fn a_value_in_place_of_an_environment_variable_name_is_not_echoed() {
    refused(
        &format!(
            "{SECRET_HEAD}        - source: {{type: env, var: \"sk-proj-AbCd0123+/xyz\"}}\n          inject: {{header: X-Key}}\n        - source: {{type: env, var: \"$OPENAI_API_KEY\"}}\n          inject: {{header: X-A}}\n        - source: {{type: env, var: \"${{GH_TOKEN}}\"}}\n          inject: {{header: X-B}}\n        - source: {{type: env, var: My_Key_2}}\n          inject: {{header: X-C}}\n"
        ),
        &[
            "proxy.yaml:5:36: transforms[0].config.secrets[0].source.var: this is not an environment variable name (letters, digits and '_'); the 21 characters written are not shown, in case they are the value itself",
            "proxy.yaml:7:36: transforms[0].config.secrets[1].source.var: write the variable's name without '$': OPENAI_API_KEY (the config names the variable; the proxy reads it)",
            "proxy.yaml:9:36: transforms[0].config.secrets[2].source.var: write the variable's name without '$': GH_TOKEN (the config names the variable; the proxy reads it)",
        ],
    );
}

/// A file's contents pasted where its path goes (PEM, a JSON key file, any
/// text of several lines) are refused without being echoed.
#[test]
fn file_contents_in_place_of_a_path_are_not_echoed() {
    let got = errs(
        "tls:\n  ca_cert: \"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n\"\n  ca_key: |\n    secret line one\n    secret line two\ntransforms:\n  - name: gcp_auth\n    config:\n      keyfile_path: '{\"type\": \"service_account\", \"private_key\": \"k\"}'\n      scopes: [s]\n      rules: [{host: a.test}]\n",
    );
    assert_eq!(
        got,
        [
            "proxy.yaml:2:12: tls.ca_cert: this is PEM text (a key or a certificate), not a file path; write it to a file and give that file's path (the 59 characters written are not shown)",
            "proxy.yaml:4:5: tls.ca_key: this is several lines of text, not a file path; write it to a file and give that file's path (the 32 characters written are not shown)",
            "proxy.yaml:9:21: transforms[0].config.keyfile_path: this is JSON (a key file's contents?), not a file path; write it to a file and give that file's path (the 47 characters written are not shown)",
        ]
    );
    for g in &got {
        assert!(
            !g.contains("secret line") && !g.contains("MIIB") && !g.contains("private_key"),
            "{g}"
        );
    }
}

#[test]
fn a_host_pattern_that_can_never_match() {
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      domains: [\".example.com\", \"foo..com\"]\n",
        &[
            "proxy.yaml:4:17: transforms[0].config.domains[0]: host pattern \".example.com\" has an empty label; for example.com and its subdomains write \"*.example.com\"",
            "proxy.yaml:4:33: transforms[0].config.domains[1]: host pattern \"foo..com\" has an empty label (two dots in a row)",
        ],
    );
}

#[test]
fn allowlist_domains_that_hold_an_address_or_a_port() {
    refused(
        "transforms:\n  - name: allowlist\n    config:\n      domains: [\"127.0.0.1\", \"::1\", \"localhost:18000\"]\n      rules:\n        - host: \"api.test:443\"\n",
        &[
            "proxy.yaml:4:17: transforms[0].config.domains[0]: \"127.0.0.1\" is an IP address, which `domains` never matches; allow it in `cidrs` as \"127.0.0.1/32\"",
            "proxy.yaml:4:30: transforms[0].config.domains[1]: \"::1\" is an IP address, which `domains` never matches; allow it in `cidrs` as \"::1/128\"",
            "proxy.yaml:4:37: transforms[0].config.domains[2]: host pattern \"localhost:18000\" holds a port; patterns match host names (and IP addresses), never ports",
            "proxy.yaml:6:17: transforms[0].config.rules[0].host: host pattern \"api.test:443\" holds a port; patterns match host names (and IP addresses), never ports",
        ],
    );
}

#[test]
fn a_negative_body_capture_cap_is_refused() {
    // 0 is the default (with a warning, see the lint tests); below it is an error.
    refused(
        "transforms:\n  - name: body_capture\n    config:\n      max_request_body_bytes: -1\n",
        &["proxy.yaml:4:31: transforms[0].config.max_request_body_bytes: -1 is out of range (0..=9223372036854775807)"],
    );
    // Written as yaml.v3 reads an integer, too.
    refused(
        "transforms:\n  - name: body_capture\n    config:\n      max_request_body_bytes: -1e3\n",
        &["proxy.yaml:4:31: transforms[0].config.max_request_body_bytes: -1e3 is out of range (0..=9223372036854775807)"],
    );
}

#[test]
fn max_connections_per_client_is_off_by_default_and_checked_when_set() {
    assert_eq!(super::ok(BASE).proxy.max_connections_per_client, None);
    let cfg = super::ok(&format!(
        "{BASE}proxy:\n  max_connections_per_client: 256\n"
    ));
    assert_eq!(
        cfg.proxy.max_connections_per_client.map(|n| n.get()),
        Some(256)
    );
    // null is the default too.
    let cfg = super::ok(&format!(
        "{BASE}proxy:\n  max_connections_per_client: null\n"
    ));
    assert_eq!(cfg.proxy.max_connections_per_client, None);
    refused(
        "proxy:\n  max_connections_per_client: 0\n",
        &["proxy.yaml:2:31: proxy.max_connections_per_client: 0 is out of range (1..=1000000)"],
    );
    refused(
        "proxy:\n  max_connections_per_client: 2000000\n",
        &["proxy.yaml:2:31: proxy.max_connections_per_client: 2000000 is out of range (1..=1000000)"],
    );
    refused(
        "proxy:\n  max_connections_per_client: many\n",
        &["proxy.yaml:2:31: proxy.max_connections_per_client: expected an integer, found 'many'"],
    );
    let env = |k: &str| (k == "IRON_PROXY_MAX_CONNECTIONS_PER_CLIENT").then(|| "-1".to_string());
    assert_eq!(
        super::errs_env(BASE, &env),
        ["IRON_PROXY_MAX_CONNECTIONS_PER_CLIENT: proxy.max_connections_per_client: -1 is out of range (1..=1000000)"]
    );
}

#[test]
fn max_connections_is_unset_by_default_and_checked_when_set() {
    // Unset: the proxy derives it from the open-file limit at start-up.
    assert_eq!(super::ok(BASE).proxy.max_connections, None);
    let cfg = super::ok(&format!("{BASE}proxy:\n  max_connections: 5000\n"));
    assert_eq!(cfg.proxy.max_connections.map(|n| n.get()), Some(5000));
    refused(
        "proxy:\n  max_connections: 0\n",
        &["proxy.yaml:2:20: proxy.max_connections: 0 is out of range (1..=1000000)"],
    );
    refused(
        "proxy:\n  max_connections: 1000001\n",
        &["proxy.yaml:2:20: proxy.max_connections: 1000001 is out of range (1..=1000000)"],
    );
    let env = |k: &str| (k == "IRON_PROXY_MAX_CONNECTIONS").then(|| "0".to_string());
    assert_eq!(
        super::errs_env(BASE, &env),
        ["IRON_PROXY_MAX_CONNECTIONS: proxy.max_connections: 0 is out of range (1..=1000000)"]
    );
}

/// At most 50 errors are reported, then a count of the rest; a message
/// echoing a long value is cut.
#[test]
fn errors_are_bounded_in_number_and_length() {
    let cidrs: Vec<String> = (0..80).map(|i| format!("\"bad{i}\"")).collect();
    let text = format!(
        "proxy:\n  upstream_deny_cidrs: [{}]\nlog:\n  level: \"{}\"\n{BASE}",
        cidrs.join(", "),
        "x".repeat(5000)
    );
    let got = errs(&text);
    assert_eq!(got.len(), 51, "{got:?}");
    assert_eq!(
        got[50],
        "proxy.yaml: … and 31 more errors, not shown (fix these first)"
    );
    assert!(got.iter().all(|e| e.len() < 500), "{got:?}");
}

/// Two listeners on one address are refused at the later field (at the one the file set
/// when the other is a default), naming the other; a wildcard takes every address of its
/// port, and the metrics endpoint's `[::]` takes IPv4 too.
#[test]
fn two_listeners_on_one_address() {
    refused(
        "proxy:\n  http_listen: \"127.0.0.1:8080\"\n  tunnel_listen: \"127.0.0.1:8080\"\n",
        &["proxy.yaml:3:18: proxy.tunnel_listen: 127.0.0.1:8080 is also proxy.http_listen (127.0.0.1:8080): two listeners cannot share an address; give one another port"],
    );
    refused(
        "proxy:\n  https_listen: \"127.0.0.1:9090\"\n",
        &["proxy.yaml:2:17: proxy.https_listen: 127.0.0.1:9090 is also metrics.listen (its default, :9090): two listeners cannot share an address; give one another port"],
    );
    refused(
        "proxy:\n  http_listen: \"127.0.0.1:7001\"\nmetrics:\n  listen: \"[::]:7001\"\n",
        &["proxy.yaml:4:11: metrics.listen: [::]:7001 is also proxy.http_listen (127.0.0.1:7001): two listeners cannot share an address; give one another port"],
    );
    // The data plane's [::] is IPv6 only; other ports, and port 0, never meet.
    let fine = "proxy:\n  http_listen: \"0.0.0.0:7002\"\n  https_listen: \"[::]:7002\"\n  tunnel_listen: \"127.0.0.1:0\"\nmetrics:\n  listen: \"127.0.0.1:0\"\n";
    super::ok(&format!("{fine}{}", super::BASE));
}

#[test]
fn client_cidrs_are_unset_by_default_and_checked_when_set() {
    // Unset: any client.
    assert_eq!(super::ok(BASE).proxy.client_cidrs, None);
    let cfg = super::ok(&format!(
        "{BASE}proxy:\n  client_cidrs: [\"10.0.0.0/8\", \"fd00::/8\"]\n"
    ));
    let want: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
    assert_eq!(cfg.proxy.client_cidrs, Some(want));
    // An empty list: loopback alone.
    let cfg = super::ok(&format!("{BASE}proxy:\n  client_cidrs: []\n"));
    assert_eq!(cfg.proxy.client_cidrs, Some(Vec::new()));
    refused(
        "proxy:\n  client_cidrs: [\"10.0.0.0/8\", \"10.0.0.300/32\"]\n",
        &["proxy.yaml:2:32: proxy.client_cidrs[1]: invalid CIDR \"10.0.0.300/32\": expected address/prefix such as 10.0.0.0/8"],
    );
    let env =
        |k: &str| (k == "IRON_PROXY_CLIENT_CIDRS").then(|| "10.1.0.0/16,192.0.2.0/24".to_string());
    let cfg = crate::config::parse(BASE, "proxy.yaml", &env).expect("valid");
    assert_eq!(
        cfg.proxy.client_cidrs.map(|c| c.len()),
        Some(2),
        "the variable is a comma-separated list"
    );
}
