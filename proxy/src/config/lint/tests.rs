//! Lint findings: each is flagged where it applies, and not where it does not.

mod values;

use super::*;

fn config(transforms: &str) -> Config {
    let text = format!(
        "tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\ntransforms:\n{transforms}\
         \x20 - name: allowlist\n    config:\n      domains: [\"api.test\"]\n"
    );
    super::super::parse(&text, "t.yaml", &|_| None).expect("valid config")
}

const JUDGE: &str = "  - name: judge\n    config:\n      name: j1\n      prompt: p\n      \
                     rules: [{host: api.test}]\n      provider: {type: anthropic, model: m, \
                     api_key_env: K}\n";
const SECRETS: &str = "  - name: secrets\n    config:\n      secrets:\n        - source: \
                       {type: env, var: S}\n          replace:\n            proxy_value: tok\n\
                       \x20           match_headers: [Authorization]\n          rules: \
                       [{host: api.test}]\n";

const ALLOW: &str = "  - name: allowlist\n    config:\n      domains: [\"api.test\"]\n";

const HEADERS: &str = "  - name: header_allowlist\n    config:\n      headers: [Accept]\n";

#[test]
fn a_header_allowlist_before_a_header_writer_is_flagged_and_after_is_not() {
    let before = lint(&config(&format!("{HEADERS}{SECRETS}")));
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].path, "transforms[0]");
    assert!(
        before[0]
            .message
            .starts_with("header_allowlist runs before transforms[1] (secrets), which writes request headers on hosts both apply to: the headers it works with are stripped before it runs; place header_allowlist after it"),
        "{}",
        before[0]
    );
    let listing = HEADERS.replace("[Accept]", "[Accept, Authorization]");
    assert_eq!(lint(&config(&format!("{SECRETS}{listing}"))), vec![]);
    // Scoped to another host than the secrets: they never meet.
    let elsewhere = HEADERS.replace(
        "headers: [Accept]\n",
        "headers: [Accept]\n      rules: [{host: other.test}]\n",
    );
    assert_eq!(lint(&config(&format!("{elsewhere}{SECRETS}"))), vec![]);
    // A judge writes no headers.
    assert_eq!(lint(&config(&format!("{HEADERS}{JUDGE}"))), vec![]);
    // A grpc server may set headers too; both are named.
    let grpc = "  - name: grpc\n    config:\n      name: g\n      target: \"localhost:9500\"\n";
    let both = lint(&config(&format!("{HEADERS}{SECRETS}{grpc}")));
    assert_eq!(both.len(), 1, "{both:?}");
    assert!(
        both[0].message.starts_with(
            "header_allowlist runs before transforms[1] (secrets), transforms[2] (grpc), \
             which write request headers on hosts both apply to: the headers they work with \
             are stripped before they run; place header_allowlist after them"
        ),
        "{}",
        both[0]
    );
}

const INJECT: &str = "  - name: secrets\n    config:\n      secrets:\n        - source: \
                      {type: env, var: S}\n          inject:\n            header: X-Api-Key\n\
                      \x20         rules: [{host: api.test}]\n";

#[test]
fn a_header_allowlist_that_strips_a_credential_set_before_it_is_flagged() {
    let found = lint(&config(&format!("{INJECT}{HEADERS}")));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "transforms[1]");
    assert_eq!(
        found[0].message,
        "header_allowlist does not list X-Api-Key (set by transforms[0] (secrets)): on hosts \
         both apply to, it strips that header after the credential is set, and the upstream \
         never receives it; add it to its headers"
    );
    // Where the field is: the header_allowlist entry (`- name: header_allowlist`, line 12).
    assert!(
        found[0]
            .to_string()
            .starts_with("t.yaml:12:5: transforms[1]: header_allowlist does not list X-Api-Key"),
        "{}",
        found[0]
    );
    // Listed in any case, or by a regex on the canonical name: kept, nothing to say.
    for listed in ["[Accept, x-api-key]", "[Accept, \"/^X-Api-.*$/\"]"] {
        let h = HEADERS.replace("[Accept]", listed);
        assert_eq!(lint(&config(&format!("{INJECT}{h}"))), vec![], "{listed}");
    }
    // Scoped to another host than the secret: they never meet.
    let elsewhere = HEADERS.replace(
        "headers: [Accept]\n",
        "headers: [Accept]\n      rules: [{host: other.test}]\n",
    );
    assert_eq!(lint(&config(&format!("{INJECT}{elsewhere}"))), vec![]);
    // A replacement in a header it names, and an injection: both named, each once.
    // (The second injection of X-Api-Key is flagged apart, as skipped.)
    let found = lint(&config(&format!("{INJECT}{SECRETS}{INJECT}{HEADERS}")));
    let both: Vec<&Lint> = found.iter().filter(|f| f.path == "transforms[3]").collect();
    assert_eq!(both.len(), 1, "{found:?}");
    assert!(
        both[0].message.starts_with(
            "header_allowlist does not list X-Api-Key (set by transforms[0] (secrets), \
             transforms[2] (secrets)), Authorization (set by transforms[1] (secrets)): on hosts \
             both apply to, it strips those headers after the credential is set, and the \
             upstream never receives them; add them to its headers"
        ),
        "{}",
        both[0]
    );
}

const ANNOTATE: &str = "  - name: annotate\n    config:\n      annotations:\n        - rules: \
                        [{host: api.test}]\n          headers: [x-request-id, authorization]\n";

#[test]
fn an_annotate_after_a_transform_that_sets_a_captured_header_is_flagged_and_before_is_not() {
    let after = lint(&config(&format!("{SECRETS}{ANNOTATE}")));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].path, "transforms[1]");
    assert_eq!(
        after[0].message,
        "annotate runs after transforms[0] (secrets), which sets request headers it captures \
         on hosts both apply to: the audit record would hold the real credentials (annotate \
         records those headers as \"[redacted]\" instead); place annotate before it to \
         record the workload's proxy tokens"
    );
    assert_eq!(lint(&config(&format!("{ANNOTATE}{SECRETS}"))), vec![]);
    // Captures only headers no credential transform sets (the spec's full example).
    let request_id = ANNOTATE.replace("x-request-id, authorization", "x-request-id");
    assert_eq!(lint(&config(&format!("{SECRETS}{request_id}"))), vec![]);
    // Another host than the secrets: they never meet.
    let elsewhere = ANNOTATE.replace("{host: api.test}", "{host: other.test}");
    assert_eq!(lint(&config(&format!("{SECRETS}{elsewhere}"))), vec![]);
    // An injected header, named in another case; and a second writer (gcp_auth sets
    // Authorization): both are named.
    let inject = "  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, \
                  var: S}\n          inject: {header: X-Api-Key, formatter: \"Key {{ .Value }}\"}\n";
    let gcp = "  - name: gcp_auth\n    config:\n      credentials_provider: {type: \
               workload_identity}\n      scopes: [s]\n      rules: [{host: api.test}]\n";
    let key = ANNOTATE.replace("x-request-id, authorization", "x-api-key");
    assert_eq!(lint(&config(&format!("{inject}{key}"))).len(), 1);
    let both_headers = ANNOTATE.replace("x-request-id, authorization", "x-api-key, Authorization");
    let both = lint(&config(&format!("{inject}{gcp}{both_headers}")));
    assert_eq!(both.len(), 1, "{both:?}");
    assert!(
        both[0].message.starts_with(
            "annotate runs after transforms[0] (secrets), transforms[1] (gcp_auth), which set \
             request headers it captures on hosts both apply to: the audit record would hold \
             the real credentials (annotate records those headers as \"[redacted]\" instead); \
             place annotate before them"
        ),
        "{}",
        both[0]
    );
}

#[test]
fn a_body_capture_after_secrets_in_bodies_is_flagged_and_before_is_not() {
    let capture = "  - name: body_capture\n    config:\n      rules: [{host: api.test}]\n";
    let in_body = SECRETS.replace(
        "match_headers: [Authorization]\n",
        "match_headers: [Authorization]\n            match_body: true\n",
    );
    let after = lint(&config(&format!("{in_body}{capture}")));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].path, "transforms[1]");
    assert_eq!(
        after[0].message,
        "body_capture runs after transforms[0] (secrets), which swaps real credentials into \
         request bodies on hosts both apply to: the audit record would hold the credentials; \
         place body_capture before it (the spec's position)"
    );
    assert_eq!(lint(&config(&format!("{capture}{in_body}"))), vec![]);
    // Secrets in headers only: the body holds no credential.
    assert_eq!(lint(&config(&format!("{SECRETS}{capture}"))), vec![]);
    // Another host: they never meet.
    let elsewhere = in_body.replace("{host: api.test}", "{host: other.test}");
    assert_eq!(lint(&config(&format!("{elsewhere}{capture}"))), vec![]);
    // Two swappers are both named.
    let both = lint(&config(&format!("{in_body}{in_body}{capture}")));
    assert!(
        both[0].message.starts_with(
            "body_capture runs after transforms[0] (secrets), transforms[1] (secrets), which \
             swap real credentials into request bodies on hosts both apply to: the audit \
             record would hold the credentials; place body_capture before them"
        ),
        "{}",
        both[0]
    );
}

#[test]
fn a_judge_after_secrets_is_flagged_and_before_is_not() {
    let after = lint(&config(&format!("{SECRETS}{JUDGE}")));
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].path, "transforms[1]");
    assert!(
        after[0]
            .message
            .contains("judge \"j1\" runs after transforms[0] (secrets)"),
        "{}",
        after[0]
    );
    assert_eq!(lint(&config(&format!("{JUDGE}{SECRETS}"))), vec![]);
    assert_eq!(lint(&config(JUDGE)), vec![]);
    // Secrets for another host: the judge never sees them.
    let elsewhere = SECRETS.replace("{host: api.test}", "{host: other.test}");
    assert_eq!(lint(&config(&format!("{elsewhere}{JUDGE}"))), vec![]);
}

#[test]
fn findings_name_the_file_line_and_column_of_their_field() {
    let text =
        format!("tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\ntransforms:\n{SECRETS}{JUDGE}{ALLOW}");
    let cfg = super::super::parse(&text, "t.yaml", &|_| None).expect("valid config");
    let found = lint(&cfg);
    assert_eq!(found.len(), 1, "{found:?}");
    // transforms[1] is the judge, whose entry starts on line 13 (`- name: judge`).
    assert_eq!(found[0].location.to_string(), "t.yaml:13:5");
    assert!(
        found[0].to_string().starts_with(
            "t.yaml:13:5: transforms[1]: judge \"j1\" runs after transforms[0] (secrets)"
        ),
        "{}",
        found[0]
    );
}

/// The findings of a config with `management: {listen: <listen>}`, under `env`.
fn management_lints(listen: &str, env: &dyn Fn(&str) -> Option<String>) -> Vec<Lint> {
    let text = format!("tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\nmanagement:\n  listen: \"{listen}\"\ntransforms:\n{ALLOW}");
    lint(&super::super::parse(&text, "t.yaml", env).expect("valid config"))
}

#[test]
fn a_management_api_off_loopback_is_flagged_at_its_listen_address() {
    for listen in [
        ":9092",
        "0.0.0.0:9092",
        "[::]:9092",
        "10.0.0.5:9092",
        "[fd00::5]:9092",
    ] {
        let found = management_lints(listen, &|_| None);
        assert_eq!(found.len(), 1, "{listen}: {found:?}");
        assert_eq!(found[0].path, "management.listen");
        assert_eq!(found[0].location.to_string(), "t.yaml:5:11", "{listen}");
        assert!(
            found[0]
                .message
                .contains(&format!("({listen}) over plain HTTP"))
                && found[0]
                    .message
                    .contains("bearer token from $IRON_MANAGEMENT_API_KEY")
                && found[0]
                    .message
                    .contains("set management.listen to \"127.0.0.1:9092\""),
            "{listen}: {}",
            found[0]
        );
    }
    assert!(management_lints(":9092", &|_| None)[0]
        .message
        .starts_with("the management API listens on every interface (:9092)"));
    for listen in [
        "127.0.0.1:9092",
        "127.0.0.2:9092",
        "localhost:9092",
        "[::1]:9092",
        "[::ffff:127.0.0.1]:9092",
    ] {
        assert_eq!(management_lints(listen, &|_| None), vec![], "{listen}");
    }
    // Set by its variable: the finding names the variable, as an error would.
    let env = |k: &str| (k == "IRON_MANAGEMENT_LISTEN").then(|| ":9092".to_string());
    let found = management_lints("127.0.0.1:9092", &env);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].location.to_string(), "IRON_MANAGEMENT_LISTEN");
}

#[test]
fn a_config_without_an_allowlist_is_flagged() {
    let text = format!("tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\ntransforms:\n{SECRETS}");
    let found = lint(&super::super::parse(&text, "t.yaml", &|_| None).expect("valid config"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "transforms");
    assert_eq!(found[0].location.to_string(), "t.yaml:5:3");
    assert!(
        found[0]
            .message
            .starts_with("no allowlist transform: every destination is allowed"),
        "{}",
        found[0]
    );
    // No transforms at all: the same, at the file (there is no field to point at).
    let bare = "tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\n";
    let found = lint(&super::super::parse(bare, "t.yaml", &|_| None).expect("valid config"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].location.to_string(), "t.yaml");
    // An allowlist in warn mode is an allowlist being rolled out: no finding.
    let warn = format!(
        "{bare}transforms:\n  - name: allowlist\n    config:\n      warn: true\n      domains: [\"*\"]\n"
    );
    assert_eq!(
        lint(&super::super::parse(&warn, "t.yaml", &|_| None).expect("valid config")),
        vec![]
    );
}

#[test]
fn sni_only_flags_what_needs_mitm_and_rules_that_restrict_requests() {
    let text = format!(
        "tls:\n  mode: sni-only\ntransforms:\n{SECRETS}  - name: allowlist\n    config:\n      \
         domains: [\"api.test\"]\n      rules:\n        - host: \"a.test\"\n        - host: \
         \"b.test\"\n          methods: [GET]\n        - host: \"c.test\"\n          paths: \
         [\"/v1/*\"]\n"
    );
    let found = lint(&super::super::parse(&text, "t.yaml", &|_| None).expect("valid config"));
    let paths: Vec<&str> = found.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "transforms[0]",
            "transforms[1].config.rules[1]",
            "transforms[1].config.rules[2]"
        ],
        "{found:?}"
    );
    assert!(
        found[0].message.starts_with(
            "tls.mode is sni-only: HTTPS connections pass through undecrypted, so secrets never \
             acts on them"
        ),
        "{}",
        found[0]
    );
    assert!(
        found[1].message.contains("never admits one"),
        "{}",
        found[1]
    );
    // transforms[1].config.rules[1] is `- host: "b.test"` on line 17.
    assert_eq!(found[1].location.to_string(), "t.yaml:17:11");
    // The same config in MITM mode: nothing to say.
    let mitm = text.replace(
        "tls:\n  mode: sni-only\n",
        "tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\n",
    );
    assert_eq!(
        lint(&super::super::parse(&mitm, "t.yaml", &|_| None).expect("valid config")),
        vec![]
    );
}

/// A `secrets` transform whose entries inject `slots` (`header: X` or
/// `query_param: x`) on `host`.
fn injecting(slots: &[&str], host: &str) -> String {
    let entries: String = slots
        .iter()
        .map(|slot| {
            format!(
                "        - source: {{type: env, var: S}}\n          inject: {{{slot}}}\n\
                 \x20         rules: [{{host: \"{host}\"}}]\n"
            )
        })
        .collect();
    format!("  - name: secrets\n    config:\n      secrets:\n{entries}")
}

const GCP: &str = "  - name: gcp_auth\n    config:\n      credentials_provider: {type: \
                   workload_identity}\n      scopes: [s]\n      rules: [{host: api.test}]\n";

#[test]
fn a_credential_transform_that_sets_what_an_earlier_one_set_is_flagged() {
    let two = lint(&config(&format!(
        "{}{}",
        injecting(&["header: X-Api-Key"], "api.test"),
        injecting(&["header: x-api-key"], "*.test")
    )));
    assert_eq!(two.len(), 1, "{two:?}");
    assert_eq!(two[0].path, "transforms[1].config.secrets[0]");
    assert_eq!(
        two[0].message,
        "on hosts both apply to, an earlier credential transform already sets header x-api-key \
         (set by transforms[0] (secrets) secrets[0]), and the first in config order wins: there \
         this one is skipped (its trace says already_set); give them rules that do not meet, or \
         remove one"
    );
    // The second transform's entry starts on line 14 (`- source:`).
    assert_eq!(two[0].location.to_string(), "t.yaml:14:11");
    // Two entries of one transform, and a query parameter (names compared exactly).
    let one = lint(&config(&injecting(
        &["query_param: key", "query_param: Key", "query_param: key"],
        "api.test",
    )));
    assert_eq!(one.len(), 1, "{one:?}");
    assert_eq!(one[0].path, "transforms[0].config.secrets[2]");
    assert!(
        one[0].message.contains(
            "already sets query parameter key (set by transforms[0] (secrets) secrets[0])"
        ),
        "{}",
        one[0]
    );
    // gcp_auth after a secret injected into Authorization: both setters named.
    let gcp = lint(&config(&format!(
        "{}{GCP}",
        injecting(
            &["header: Authorization", "header: Authorization"],
            "api.test"
        )
    )));
    let paths: Vec<&str> = gcp.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["transforms[0].config.secrets[1]", "transforms[1]"]);
    assert!(
        gcp[1].message.contains(
            "header Authorization (set by transforms[0] (secrets) secrets[0], transforms[0] \
             (secrets) secrets[1])"
        ),
        "{}",
        gcp[1]
    );
}

#[test]
fn credential_transforms_that_never_meet_or_only_fall_back_are_not_flagged() {
    // Other hosts, other headers, a header against a query parameter of that name.
    for (a, b) in [
        (
            injecting(&["header: X-Api-Key"], "api.test"),
            injecting(&["header: X-Api-Key"], "other.test"),
        ),
        (
            injecting(&["header: X-Api-Key"], "api.test"),
            injecting(&["header: X-Other-Key"], "api.test"),
        ),
        (
            injecting(&["header: key"], "api.test"),
            injecting(&["query_param: key"], "api.test"),
        ),
    ] {
        assert_eq!(lint(&config(&format!("{a}{b}"))), vec![], "{a}{b}");
    }
    // A replacement sets Authorization only when the workload sent the proxy
    // token: injecting it otherwise is a fallback, not a conflict.
    assert_eq!(lint(&config(&format!("{SECRETS}{GCP}"))), vec![]);
    // Entries of one oauth_token: the first that applies is the only one used.
    let oauth = "  - name: oauth_token\n    config:\n      tokens:\n        - grant: \
                 client_credentials\n          client_id: {type: env, var: C}\n          \
                 client_secret: {type: env, var: D}\n          token_endpoint: \
                 \"https://auth.test/token\"\n          rules: [{host: api.test}]\n";
    let second = oauth
        .lines()
        .skip(3)
        .map(|l| format!("{l}\n"))
        .collect::<String>();
    assert_eq!(lint(&config(&format!("{oauth}{second}"))), vec![]);
    // But aws_auth after it, on the same host, is skipped there.
    let aws = "  - name: aws_auth\n    config:\n      credentials_provider: {type: \
               workload_identity}\n      rules: [{host: \"*.test\"}]\n";
    let found = lint(&config(&format!("{oauth}{aws}")));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "transforms[1]");
    assert!(
        found[0]
            .message
            .contains("header Authorization (set by transforms[0] (oauth_token) tokens[0])"),
        "{}",
        found[0]
    );
}

#[test]
fn a_second_header_allowlist_on_the_same_hosts_is_flagged() {
    let scoped = |host: &str| {
        HEADERS.replace(
            "headers: [Accept]\n",
            &format!("headers: [Accept]\n      rules: [{{host: \"{host}\"}}]\n"),
        )
    };
    let found = lint(&config(&format!(
        "{}{}{HEADERS}",
        scoped("api.test"),
        scoped("other.test")
    )));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, "transforms[2]");
    assert_eq!(
        found[0].message,
        "the header_allowlists at transforms[0], transforms[1] apply to hosts this one applies \
         to, and the first in config order wins: there this one is skipped (its trace says \
         already_applied) and only the first one's headers are kept; merge the header lists, \
         or give them rules that do not meet"
    );
    let one = lint(&config(&format!(
        "{}{}",
        scoped("*.test"),
        scoped("api.test")
    )));
    assert_eq!(one.len(), 1, "{one:?}");
    assert!(
        one[0]
            .message
            .starts_with("the header_allowlist at transforms[0] applies to hosts"),
        "{}",
        one[0]
    );
    assert_eq!(
        lint(&config(&format!(
            "{}{}",
            scoped("api.test"),
            scoped("other.test")
        ))),
        vec![]
    );
}

#[test]
fn interception_without_a_dns_block_is_named_unless_said_outright() {
    let lints = |text: &str| {
        lint(&super::super::parse(text, "t.yaml", &|_| None).expect("valid config"))
            .into_iter()
            .filter(|f| f.path == "intercept")
            .collect::<Vec<_>>()
    };
    let allow = "transforms:\n  - name: allowlist\n    config:\n      domains: [a.test]\n";
    let found = lints(&format!("{allow}intercept:\n  uids: [1000]\n"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].message.contains("/etc/hosts"), "{found:?}");
    assert_eq!(found[0].location.to_string(), "t.yaml:6:3");
    assert!(lints(&format!(
        "{allow}intercept:\n  uids: [1000]\n  dns: false\n"
    ))
    .is_empty());
    assert!(lints(&format!(
        "{allow}dns:\n  listen: \"127.0.0.1:8053\"\n  proxy_ip: 127.0.0.1\nintercept:\n  uids: [1000]\n"
    ))
    .is_empty());
}

/// A config with `dns` set to `dns_yaml` (indented under `dns:`).
fn with_dns(dns_yaml: &str) -> Config {
    let text = format!(
        "tls:\n  ca_cert: ca.pem\n  ca_key: ca.key\ndns:\n{dns_yaml}transforms:\n\
         \x20 - name: allowlist\n    config:\n      domains: [\"api.test\"]\n"
    );
    super::super::parse(&text, "t.yaml", &|_| None).expect("valid config")
}

#[test]
fn a_passthrough_glob_over_the_public_internet_is_flagged_and_internal_zones_are_not() {
    let found = lint(&with_dns(
        "  proxy_ip: 10.0.0.2\n  upstream_resolver: 10.0.0.53:53\n  passthrough: [\"*\", \"*.svc\", \"*.com\", \"*.corp.example\"]\n",
    ));
    let paths: Vec<&str> = found.iter().map(|l| l.path.as_str()).collect();
    assert_eq!(
        paths,
        ["dns.passthrough[0]", "dns.passthrough[2]"],
        "{found:?}"
    );
    assert!(
        found[0].message.contains("forwards every name"),
        "{}",
        found[0]
    );
    assert!(
        found[1].message.contains("every name under .com"),
        "{}",
        found[1]
    );
}

#[test]
fn an_upstream_resolver_that_is_the_proxys_own_dns_is_flagged() {
    for listen in ["127.0.0.1:5353", "0.0.0.0:5353", ":5353"] {
        let found = lint(&with_dns(&format!(
            "  listen: \"{listen}\"\n  proxy_ip: 10.0.0.2\n  upstream_resolver: 127.0.0.1:5353\n"
        )));
        assert_eq!(found.len(), 1, "{listen}: {found:?}");
        assert_eq!(found[0].path, "dns.upstream_resolver");
        assert!(
            found[0].message.contains("this proxy's own DNS server"),
            "{}",
            found[0]
        );
    }
    let elsewhere = lint(&with_dns(
        "  listen: \"127.0.0.1:5353\"\n  proxy_ip: 10.0.0.2\n  upstream_resolver: 127.0.0.1:53\n",
    ));
    assert_eq!(elsewhere, vec![]);
}
