use super::*;

#[test]
fn scratch() {
    let text = r#"tls:
  ca_cert: /c
  ca_key: /k
proxy:
  upstream_response_header_timeout: 0s
  upstream_deny_cidrs: ["10.0.0.1", "::1/128"]
  http_listen: "localhost"
transforms:
  - name: allowlist
    config:
      domain: ["a.com"]
      rules:
        - host: a.com
          cidr: 10.0.0.0/8
        - host: b.com
          paths: ["v1/*"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: X}
          inject: {header: Authorization, formatter: "Bearer {{ .Valu }}"}
          replace:
            proxy_value: x
            match_header: [a]
        - source: {type: envv, var: X}
          replace: {proxy_value: x, match_headers: ["/(/"]}
        - source: {type: 1password, secret_ref: "op:/x"}
          inject: {query_param: k, formatter: "x"}
  - name: judge
    config:
      name: j
      prompt: p
      fallback: allow
      rules: []
      provider: {type: anthropic, model: m, api_key_env: K}
  - name: judge
    config:
      name: j
      prompt: p
      timeout: -1s
      rules: [{host: a}]
      provider: {type: anthropic, model: m, api_key_env: K}
  - name: allowlst
  - name: hmac_sign
    config:
      timestamp: {format: unix}
      signature: {algorithm: sha256, key_encoding: raw, output_encoding: hex, message: "{{.Timestamp}}{{.Credentials.ky}}"}
      credentials: {key: {type: env, var: A}}
      headers: [{name: X, value: "{{.Sig}}"}]
      rules: [{host: a}]
mcp:
  servers:
    - name: gh
      rules: [{host: a}]
      tools:
        - name: t
          when:
            - {path: owner, equals: x, in: [y]}
            - {path: title, matches: "("}
logg: {}
"#;
    for e in errs(text) { println!("{e}"); }
    for t in ["a: [", "a: b\n  c: d\nx", "- 1", "tls: 5", "transforms:\n  - name: oauth_token\n    config:\n      tokens:\n        - grant: client_credentials\n          client_id: {type: env, var: A}\n          username: {type: env, var: B}\n          token_endpoint: ftp://x\n          rules: [{host: a}]\n"] {
        println!("---"); for e in errs(t) { println!("{e}"); }
    }
    panic!();
}
