//! `iron-proxy validate -preflight` answers "will the proxy start here?", as `nginx -t` does,
//! for the packaged unit's `ExecStartPre`: what this machine lacks and the proxy refuses to
//! start without (the MITM CA files, the management key, a judge's key, a gRPC TLS file,
//! `TOKIO_WORKER_THREADS` it cannot use) is an error at its field, exit 1, and the proxy is
//! shown to refuse the same config; plain `validate` judges the config, not the machine: the
//! same lines are warnings and it exits 0 (every example of the docs validates anywhere).
//! What the proxy starts without and fails closed on when a request needs it (a secret
//! source's variable, a `gcp_auth` keyfile) stays a warning under `-preflight` too, an error
//! under `-strict`, and the proxy is shown to start.

use std::time::Duration;

use iron_proxy_tests::{paths, Proxy};

use super::validate::validate_with as validate;

/// Unset everywhere: named by the configs below as a key the proxy lacks.
const UNSET: &str = "IRON_E2E_O2_UNSET_KEY";

const ALLOW: &str = "transforms:\n  - name: allowlist\n    config:\n      domains: [a.test]\n";

/// A config whose every other part is valid and present, with `extra` after the allowlist.
fn sni_only(extra: &str) -> String {
    format!("tls: {{mode: sni-only}}\n{ALLOW}{extra}")
}

#[test]
fn preflight_fails_on_what_stops_the_proxy_starting_here() {
    struct Case {
        what: &'static str,
        config: String,
        env: &'static [(&'static str, &'static str)],
        /// Each error line after `<file>:`, or after nothing for a variable.
        errors: Vec<String>,
        /// What the proxy prints when it refuses the same config.
        start_says: &'static str,
    }
    let cases = [
        Case {
            what: "MITM CA files that are not there",
            config: format!(
                "tls:\n  ca_cert: /nonexistent/o2/ca.crt\n  ca_key: /nonexistent/o2/ca.key\n{ALLOW}"
            ),
            env: &[],
            errors: vec![
                ":2:12: error: tls.ca_cert: file /nonexistent/o2/ca.crt does not exist".into(),
                ":3:11: error: tls.ca_key: file /nonexistent/o2/ca.key does not exist".into(),
            ],
            start_says: "tls.ca_cert: reading /nonexistent/o2/ca.crt",
        },
        Case {
            what: "the management key variable unset",
            config: sni_only(&format!(
                "management:\n  listen: \"127.0.0.1:0\"\n  api_key_env: {UNSET}\n"
            )),
            env: &[],
            errors: vec![format!(
                ":8:16: error: management.api_key_env: environment variable {UNSET} is not set"
            )],
            start_says: "will not run unauthenticated",
        },
        Case {
            what: "a judge's key variable unset",
            config: sni_only(&format!(
                "  - name: judge\n    config:\n      name: guard\n      prompt: \"Deny all.\"\n      \
                 rules: [{{host: a.test}}]\n      provider: {{type: openai, model: m, api_key_env: {UNSET}}}\n"
            )),
            env: &[],
            errors: vec![format!(
                ":11:55: error: transforms[1].config.provider.api_key_env: environment variable \
                 {UNSET} is not set"
            )],
            start_says: "provider.api_key_env names IRON_E2E_O2_UNSET_KEY",
        },
        Case {
            what: "a gRPC transform's TLS file that is not there",
            config: sni_only(
                "  - name: grpc\n    config:\n      name: g\n      target: \"127.0.0.1:1\"\n      \
                 tls: {enabled: true, ca_cert: /nonexistent/o2/grpc-ca.pem}\n      \
                 rules: [{host: a.test}]\n",
            ),
            env: &[],
            errors: vec![
                ":10:37: error: transforms[1].config.tls.ca_cert: file \
                 /nonexistent/o2/grpc-ca.pem does not exist"
                    .into(),
            ],
            start_says: "reading ca_cert /nonexistent/o2/grpc-ca.pem",
        },
        Case {
            what: "TOKIO_WORKER_THREADS the proxy cannot use",
            config: sni_only(""),
            env: &[("TOKIO_WORKER_THREADS", "many")],
            errors: vec![
                "TOKIO_WORKER_THREADS: error: expected a positive whole number of threads, \
                 got \"many\""
                    .into(),
            ],
            start_says: "TOKIO_WORKER_THREADS: expected a positive whole number",
        },
    ];
    for case in cases {
        let what = case.what;
        // Plain validate: the config is valid; what this machine lacks is a warning.
        let (exit, stdout, stderr, file) = validate(&case.config, &[], case.env);
        assert_eq!(
            exit, 0,
            "{what}: plain validate refuses it:\n{stdout}{stderr}"
        );
        for e in &case.errors {
            let line = e.replacen(": error: ", ": warning: ", 1);
            let line = if line.starts_with(':') {
                format!("{file}{line}")
            } else {
                line
            };
            assert!(
                stderr.lines().any(|l| l == line),
                "{what}: plain validate has no line {line:?}:\n{stderr}"
            );
        }
        assert_eq!(stdout, format!("{file}: valid\n"), "{what}: {stderr}");

        let (exit, stdout, stderr, file) = validate(&case.config, &["-preflight"], case.env);
        assert_eq!(
            exit, 1,
            "{what}: validate -preflight passes it:\n{stdout}{stderr}"
        );
        for e in &case.errors {
            let line = if e.starts_with(':') {
                format!("{file}{e}")
            } else {
                e.clone()
            };
            assert!(
                stderr.lines().any(|l| l == line),
                "{what}: no line {line:?}:\n{stderr}"
            );
        }
        assert!(
            stderr.ends_with(&format!(
                "{file}: invalid ({} error(s))\n",
                case.errors.len()
            )),
            "{what}:\n{stderr}"
        );
        assert!(stdout.is_empty(), "{what}: {stdout}");

        // The proxy refuses the same config in the same environment.
        let mut px = Proxy::with(case.config.as_str());
        for (k, v) in case.env {
            px = px.env(k, v);
        }
        let (status, logs) = px.run_to_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(1), "{what}:\n{}", logs.join("\n"));
        assert!(
            logs.iter().any(|l| l.contains(case.start_says)),
            "{what}:\n{}",
            logs.join("\n")
        );
    }
}

#[test]
fn validate_warns_of_what_the_proxy_starts_without() {
    let dir = paths::scratch_dir("validate-start-gcp");
    let keyfile = dir.path().join("later.json");
    let config = sni_only(&format!(
        "  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: {UNSET}}}\n          \
         inject: {{header: X-Key}}\n          rules: [{{host: a.test}}]\n  - name: gcp_auth\n    config:\n      \
         keyfile_path: \"{}\"\n      scopes: [x]\n      rules: [{{host: a.test}}]\n",
        keyfile.display()
    ));
    let (exit, stdout, stderr, file) = validate(&config, &["-preflight"], &[]);
    assert_eq!(exit, 0, "{stdout}{stderr}");
    assert_eq!(stdout, format!("{file}: valid\n"), "{stderr}");
    let warnings = [
        format!(
            "{file}:9:36: warning: transforms[1].config.secrets[0].source.var: environment \
             variable {UNSET} is not set"
        ),
        format!(
            "{file}:14:21: warning: transforms[2].config.keyfile_path: file {} does not exist",
            keyfile.display()
        ),
    ];
    for w in &warnings {
        assert!(stderr.lines().any(|l| l == w), "no line {w:?}:\n{stderr}");
    }
    assert!(!stderr.contains("error"), "{stderr}");

    // Errors under -strict.
    let (exit, _, stderr, file) = validate(&config, &["-strict"], &[]);
    assert_eq!(exit, 1, "{stderr}");
    assert!(
        stderr.contains(": error: transforms[1].config.secrets[0].source.var: ")
            && stderr.contains(": error: transforms[2].config.keyfile_path: ")
            && stderr.ends_with(&format!("{file}: invalid under -strict (2 problem(s))\n")),
        "{stderr}"
    );

    // And the proxy does start with them missing.
    let px = Proxy::with(config.as_str()).start();
    px.wait_for_log(|l| l.contains("\"ready\""));
}
