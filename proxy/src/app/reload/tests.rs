//! Reload tests: what needs a restart, what a reload refuses.

use super::*;

fn parse(text: &str) -> Config {
    config::parse(text, "test.yaml", &|_| None).expect("a valid test config")
}

const BASE: &str = r#"
proxy: {http_listen: "127.0.0.1:8080", https_listen: "127.0.0.1:8443"}
tls: {mode: sni-only}
transforms:
  - name: allowlist
    config: {domains: ["a.test"]}
"#;

#[test]
fn policy_changes_need_no_restart() {
    let new = BASE.replace("a.test", "b.test").replace(
        "proxy: {",
        "proxy: {max_request_body_bytes: 10, upstream_deny_cidrs: [], max_connections_per_client: 5, ",
    );
    assert!(restart_only_changes(&parse(BASE), &parse(&new)).is_empty());
}

#[test]
fn listener_metrics_and_log_level_changes_need_no_restart() {
    let new = BASE
        .replace("127.0.0.1:8080", "127.0.0.1:8081")
        .replace(
            "https_listen: \"127.0.0.1:8443\"",
            "https_listen: \"127.0.0.1:9443\", tunnel_listen: \"127.0.0.1:1080\"",
        )
        .replace(
            "{mode: sni-only}",
            "{mode: sni-only}\nlog: {level: debug}\nmetrics: {listen: \"127.0.0.1:9191\"}",
        );
    assert!(new.contains("9443") && new.contains("9191"), "{new}");
    assert!(
        restart_only_changes(&parse(BASE), &parse(&new)).is_empty(),
        "{:?}",
        restart_only_changes(&parse(BASE), &parse(&new))
    );
}

#[test]
fn tls_dns_management_intercept_and_log_format_changes_are_reported() {
    let new = BASE
        .replace(
            "{mode: sni-only}",
            "{mode: mitm, ca_cert: /ca.crt, ca_key: /ca.key}\nlog: {format: text}\nmanagement: {listen: \"127.0.0.1:9092\", api_key_env: K}",
        );
    assert_eq!(
        restart_only_changes(&parse(BASE), &parse(&new)),
        vec!["tls", "management", "log.format"]
    );
}

#[test]
fn mcp_servers_run_after_the_transforms() {
    let with_mcp = format!(
        "{BASE}mcp:\n  servers:\n    - name: gh\n      rules: [{{host: mcp.test}}]\n      tools: [{{name: search}}]\n"
    );
    let sources = crate::secrets::Sources::new(crate::secrets::SourcesOptions::default());
    let (policy, _) =
        super::super::build::build_policy(&parse(&with_mcp), &sources, None).expect("builds");
    let names: Vec<_> = policy
        .pipeline
        .transforms()
        .iter()
        .map(|t| t.name())
        .collect();
    assert_eq!(names.last(), Some(&"mcp"), "{names:?}");
    let (policy, _) =
        super::super::build::build_policy(&parse(BASE), &sources, None).expect("builds");
    assert!(policy
        .pipeline
        .transforms()
        .iter()
        .all(|t| t.name() != "mcp"));
}

#[test]
fn a_reload_that_drops_the_allowlist_is_refused_unless_it_says_allow_all() {
    let sources = crate::secrets::Sources::new(crate::secrets::SourcesOptions::default());
    let (running, _) =
        super::super::build::build_policy(&parse(BASE), &sources, None).expect("builds");
    let cut = "proxy: {http_listen: \"127.0.0.1:8080\"}\ntls: {mode: sni-only}\n";
    for new in [cut.to_string(), format!("{cut}transforms:\n")] {
        let refused = drops_the_allowlist(&running, &parse(&new)).expect("refused");
        assert!(
            refused.contains("transforms: the new config has no allowlist transform")
                && refused.contains("rename it into place"),
            "{refused}"
        );
    }
    let all = BASE.replace("a.test", "*");
    assert_eq!(drops_the_allowlist(&running, &parse(&all)), None);
    // Without an allowlist running (as startup allows), nothing is dropped.
    let (open, _) = super::super::build::build_policy(&parse(cut), &sources, None).expect("builds");
    assert_eq!(drops_the_allowlist(&open, &parse(cut)), None);
}
