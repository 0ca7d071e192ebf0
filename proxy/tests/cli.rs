//! The binary's command line, run as a real process (no root needed): version
//! flags, `validate`/`check` on good and broken configs (file:line:col, field
//! path, suggestions), `-strict`, the spec's complete example configs, usage
//! errors, startup failures that must exit 1 with a clear message, and output
//! into a closed pipe.
//!
//! Being an integration test of the `iron-proxy` package, this file also makes
//! `cargo test -p iron-proxy` build the binary the end-to-end suite runs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_iron-proxy");
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What one run of the binary did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: unexpected exit code\n{self}"
        );
        self
    }

    fn expect_stderr(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "expected stderr to contain {needle:?}\n{self}"
        );
        self
    }

    fn expect_stdout(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "expected stdout to contain {needle:?}\n{self}"
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the binary with `args` and a scrubbed environment plus `env`; kills it
/// (by its PID) if it is still running after 20 s.
fn run_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_streams(args, env, false)
}

/// Runs the binary as the packaged unit does: stdout the journal (here a
/// file that `JOURNAL_STREAM` names, as systemd names the journal's socket),
/// stderr the log file (`StandardError=append:`).
fn run_as_unit(args: &[&str], env: &[(&str, &str)]) -> Run {
    run_streams(args, env, true)
}

/// [`run_env`], with `JOURNAL_STREAM` naming stdout when `journal`.
fn run_streams(args: &[&str], env: &[(&str, &str)], journal: bool) -> Run {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let stdout = std::fs::File::create(&out_path).expect("stdout file");
    let meta = stdout.metadata().expect("stat stdout file");
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("IRON_LOG_FILTER")
        .env_remove("JOURNAL_STREAM")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(std::fs::File::create(&err_path).expect("stderr file"));
    if journal {
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    }
    for (k, _) in std::env::vars() {
        if k.starts_with("IRON_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd.spawn().expect("spawning iron-proxy");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for iron-proxy") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "iron-proxy {args:?} still running after 20 s\nstderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Run {
        code: status.code(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

fn run(args: &[&str]) -> Run {
    run_env(args, &[])
}

/// A temp dir holding `proxy.yaml` with `text`.
struct ConfigFile {
    dir: tempfile::TempDir,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("proxy.yaml"), text).expect("writing proxy.yaml");
        ConfigFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("proxy.yaml")
    }

    fn arg(&self) -> String {
        self.path().to_str().expect("UTF-8 temp path").to_string()
    }
}

/// A fresh CA written by the binary's own `generate-ca`.
fn generated_ca(dir: &Path) -> (String, String) {
    let out = dir.to_str().expect("UTF-8 temp path");
    run(&["generate-ca", "-outdir", out]).expect_code(0, "generate-ca");
    let s = |f: &str| dir.join(f).to_str().expect("UTF-8").to_string();
    (s("ca.crt"), s("ca.key"))
}

/// A config whose listeners take free loopback ports, for runs that must fail
/// before serving (or would otherwise collide with :80/:443).
fn runnable(ca: &(String, String), transforms: &str) -> String {
    format!(
        "proxy:\n  http_listen: \"127.0.0.1:0\"\n  https_listen: \"127.0.0.1:0\"\ntls:\n  ca_cert: \"{}\"\n  ca_key: \"{}\"\ntransforms:\n{transforms}",
        ca.0, ca.1
    )
}

const CA_BLOCK: &str = "tls:\n  ca_cert: /nonexistent/ca.crt\n  ca_key: /nonexistent/ca.key\n";

#[test]
fn version_flags_and_command_print_the_version() {
    for args in [&["--version"][..], &["-v"], &["version"]] {
        run(args)
            .expect_code(0, &format!("{args:?}"))
            .expect_stdout(&format!("iron-proxy {VERSION}"));
    }
}

#[test]
fn help_shows_the_documented_go_style_flags() {
    // Go's flag package answers -h and -help; --help is the two-dash form.
    for args in [&["--help"][..], &["-h"], &["-help"], &["help"]] {
        let r = run(args);
        r.expect_code(0, &format!("{args:?}"))
            .expect_stdout("  -config, --config <FILE>  Path to the YAML config")
            .expect_stdout("  -v, -version, --version   Print the version and exit")
            .expect_stdout("  -h, -help, --help")
            .expect_stdout("Commands:\n  run ");
        assert!(!r.stdout.contains("\x1b["), "plain text: {r}");
    }
    // A subcommand's help, in the short and the long layout.
    let r = run(&["init", "-h"]);
    r.expect_code(0, "init -h")
        .expect_stdout("  -allow, --allow <HOSTS>  ")
        .expect_stdout("  -intercept-user, --intercept-user <USER>  ")
        .expect_stdout("  -no-start, --no-start  ");
    // Every flag line is aligned: the help texts start in one column.
    let starts: std::collections::BTreeSet<usize> = r
        .stdout
        .lines()
        .filter(|l| l.starts_with("  -"))
        .map(|l| {
            let spec_end = l[2..].find("  ").map_or(l.len(), |i| i + 2);
            spec_end + l[spec_end..].len() - l[spec_end..].trim_start().len()
        })
        .collect();
    assert_eq!(starts.len(), 1, "one help column: {r}");
    run(&["generate-ca", "--help"])
        .expect_code(0, "generate-ca --help")
        .expect_stdout("\n  -alg, --alg <ALG>\n          Key algorithm")
        .expect_stdout("\n  -expiry-hours, --expiry-hours <EXPIRY_HOURS>\n");
    run(&["help", "validate"])
        .expect_code(0, "help validate")
        .expect_stdout("  -strict, --strict ");
    // A command missing its subcommand prints its help as a usage error.
    run(&["intercept"])
        .expect_code(2, "intercept without an action")
        .expect_stderr("  -config, --config <FILE>  ");
}

#[test]
fn validate_accepts_a_valid_config_and_check_is_an_alias() {
    let cfg = ConfigFile::new(&format!(
        "{CA_BLOCK}transforms:\n  - name: allowlist\n    config:\n      domains: [\"*.example.com\"]\n"
    ));
    for cmd in ["validate", "check"] {
        let r = run(&[cmd, "-config", &cfg.arg()]);
        r.expect_code(0, cmd).expect_stdout("valid");
        // The missing CA files are facts about this machine: a warning, not an error.
        r.expect_stderr("warning");
    }
    // Long-dash and `=` spellings too.
    run(&["validate", &format!("--config={}", cfg.arg())]).expect_code(0, "--config=");
}

/// Each broken config, the location and the text its error line must carry.
const BROKEN: &[(&str, &str, &str)] = &[
    (
        "proxy:\n  listen: \":80\"\n",
        "proxy.yaml:2:3:",
        "proxy: unknown field 'listen'",
    ),
    (
        "transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: K}\n          replace:\n            proxy_value: pk\n            match_header: [x-api-key]\n",
        "proxy.yaml:8:13:",
        "transforms[0].config.secrets[0].replace: unknown field 'match_header', did you mean 'match_headers'?",
    ),
    (
        "proxy:\n  http_listen: \":80\"\n   https_listen: \":443\"\n",
        "proxy.yaml:3:4:",
        "invalid YAML: line 3 is indented further than line 2",
    ),
    (
        "transforms:\n  - name: allowlist\n    config:\n      cidrs: [\"10.0.0.0/8\", \"10.1.2.3\"]\n",
        "proxy.yaml:4:29:",
        "transforms[0].config.cidrs[1]: invalid CIDR \"10.1.2.3\"",
    ),
    (
        "transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: api.openai.com\n          paths: [\"v1/*\"]\n",
        "proxy.yaml:6:19:",
        "transforms[0].config.rules[0].paths[0]: path pattern \"v1/*\" must start with '/'",
    ),
    (
        "proxy:\n  upstream_response_header_timeout: 0s\n",
        "proxy.yaml:2:37:",
        "proxy.upstream_response_header_timeout: duration \"0s\" must be positive",
    ),
    (
        "log:\n  level: warning\n",
        "proxy.yaml:2:10:",
        "log.level: invalid log level 'warning', did you mean 'warn'?",
    ),
    (
        "transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: a.com\n          cidr: 10.0.0.0/8\n",
        "proxy.yaml:5:11:",
        "transforms[0].config.rules[0]: a rule needs exactly one of 'host' or 'cidr'",
    ),
    (
        "transforms:\n  - name: allowlsit\n    config: {}\n",
        "proxy.yaml:2:",
        "transforms[0].name",
    ),
];

#[test]
fn validate_refuses_broken_configs_with_location_and_field_path() {
    for (snippet, at, message) in BROKEN {
        // The CA block goes last so the snippet's line numbers are the file's.
        let cfg = ConfigFile::new(&format!("{snippet}{CA_BLOCK}"));
        for cmd in ["validate", "check"] {
            let r = run(&[cmd, "-config", &cfg.arg()]);
            r.expect_code(1, &format!("{cmd} of {snippet:?}"));
            let line = r
                .stderr
                .lines()
                .find(|l| l.contains(message))
                .unwrap_or_else(|| panic!("no error line with {message:?} for {snippet:?}\n{r}"));
            assert!(
                line.contains(at),
                "error line lacks the location {at:?}: {line}\n{r}"
            );
            assert!(
                line.contains(&cfg.arg()) || line.starts_with("proxy.yaml:"),
                "error line does not name the file: {line}"
            );
        }
    }
}

#[test]
fn unknown_transform_name_suggests_the_closest() {
    let cfg = ConfigFile::new(&format!(
        "transforms:\n  - name: allowlsit\n    config: {{}}\n{CA_BLOCK}"
    ));
    run(&["validate", "-config", &cfg.arg()])
        .expect_code(1, "typo in a transform name")
        .expect_stderr("did you mean 'allowlist'?");
}

#[test]
fn strict_turns_missing_files_and_unset_env_into_errors() {
    let ca_dir = tempfile::tempdir().expect("temp dir");
    let ca = generated_ca(ca_dir.path());
    let secret = "transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: IRON_CLI_TEST_UNSET_VAR}\n          inject: {header: X-Key}\n";
    let unset_env = ConfigFile::new(&format!(
        "tls:\n  ca_cert: \"{}\"\n  ca_key: \"{}\"\n{secret}",
        ca.0, ca.1
    ));
    let missing_file = ConfigFile::new(CA_BLOCK);
    for (cfg, what) in [
        (&unset_env, "IRON_CLI_TEST_UNSET_VAR"),
        (&missing_file, "/nonexistent/ca.crt"),
    ] {
        run(&["validate", "-config", &cfg.arg()])
            .expect_code(0, &format!("{what} without -strict"))
            .expect_stderr("warning")
            .expect_stderr(what);
        run(&["validate", "-config", &cfg.arg(), "-strict"])
            .expect_code(1, &format!("{what} under -strict"))
            .expect_stderr("error")
            .expect_stderr(what);
    }
    // Once the variable is set, -strict has nothing to say.
    run_env(
        &["validate", "-strict", "-config", &unset_env.arg()],
        &[("IRON_CLI_TEST_UNSET_VAR", "value")],
    )
    .expect_code(0, "-strict with the variable set");
}

#[test]
fn validate_warns_about_a_judge_that_would_see_injected_credentials() {
    let secrets = "  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: IRON_CLI_LINT_KEY}\n          inject: {header: X-Key}\n";
    let judge = "  - name: judge\n    config:\n      name: gate\n      prompt: no exfiltration\n      rules: [{host: api.test}]\n      provider: {type: anthropic, model: m, api_key_env: IRON_CLI_LINT_KEY}\n";
    let env = [("IRON_CLI_LINT_KEY", "value")];
    let after = ConfigFile::new(&format!(
        "tls:\n  mode: sni-only\ntransforms:\n{secrets}{judge}"
    ));
    // A choice the spec allows: a warning naming both transforms, never an error.
    for strict in [false, true] {
        let mut args = vec!["validate", "-config"];
        let arg = after.arg();
        args.push(&arg);
        if strict {
            args.push("-strict");
        }
        run_env(&args, &env)
            .expect_code(0, "a judge after secrets")
            .expect_stderr(
                "warning: transforms[1]: judge \"gate\" runs after transforms[0] (secrets)",
            );
    }
    let before = ConfigFile::new(&format!(
        "tls:\n  mode: sni-only\ntransforms:\n{judge}{secrets}"
    ));
    let r = run_env(&["validate", "-config", &before.arg()], &env);
    r.expect_code(0, "judge first");
    // (sni-only keeps this config free of CA files, and has warnings of its own.)
    assert!(!r.stderr.contains("runs after"), "{r}");
}

/// `shared/spec/configs`: the nearest ancestor of the crate that has it.
fn spec_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/spec/configs"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("shared/spec/configs not found above {}", manifest.display()))
}

/// The complete configs listed in the spec's configs/README.md (kind
/// `proxy-config`), plus `embedded/`. Fragments and transform list items are
/// merged onto a base by the config module's unit tests.
fn complete_spec_configs() -> Vec<PathBuf> {
    let dir = spec_dir();
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("configs/README.md");
    let mut files: Vec<PathBuf> = readme
        .lines()
        .filter(|l| l.starts_with("| [") && l.trim_end().ends_with("| proxy-config |"))
        .filter_map(|l| Some(l.split_once("](")?.1.split_once(')')?.0.to_string()))
        .map(|f| dir.join(f))
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir.join("embedded")) {
        files.extend(entries.flatten().map(|e| e.path()));
    }
    files.sort();
    files
}

#[test]
fn every_complete_spec_config_validates() {
    let files = complete_spec_configs();
    assert!(
        files.len() >= 20,
        "expected the spec's complete configs, found {files:?}"
    );
    for f in &files {
        let text =
            std::fs::read_to_string(f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        // Bodies the docs elide (`config: ...`) are filled in by the config module's
        // unit test; here they are skipped.
        if text
            .lines()
            .any(|l| l.trim_end().ends_with(": ...") || l.trim_end().ends_with(": {...}"))
        {
            eprintln!("skipping {} (elided bodies)", f.display());
            continue;
        }
        // Some guides leave `tls:` out (their deployment mounts it elsewhere); MITM, the
        // default, needs the CA paths, so give those the same block the unit tests use.
        let has_tls = text.lines().any(|l| l.starts_with("tls:"));
        let text = if has_tls {
            text
        } else {
            format!("{text}\n{CA_BLOCK}")
        };
        let cfg = ConfigFile::new(&text);
        // Without -strict, missing CA files and unset secrets are only warnings.
        run(&["validate", "-config", &cfg.arg()]).expect_code(0, &f.display().to_string());
    }
}

#[test]
fn full_example_validates_strictly_once_its_references_exist() {
    let text = std::fs::read_to_string(spec_dir().join("configuration-01-full-example.yaml"))
        .expect("full example");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = generated_ca(dir.path());
    let mut text = text
        .replace("/certs/ca.crt", &ca.0)
        .replace("/certs/ca.key", &ca.1);
    // `validate` builds the gRPC transform as start-up does, so these must be
    // PEM a TLS client can use: the generated CA stands in for all three.
    for (f, pem) in [
        ("grpc-ca.pem", &ca.0),
        ("grpc-client.pem", &ca.0),
        ("grpc-client-key.pem", &ca.1),
    ] {
        text = text.replace(&format!("/etc/iron-proxy/{f}"), pem);
    }
    let cfg = ConfigFile::new(&text);
    let env = [
        ("OPENAI_API_KEY", "sk-test"),
        ("ANTHROPIC_API_KEY", "sk-ant-test"),
        ("IRON_MANAGEMENT_API_KEY", "mgmt"),
    ];
    let r = run_env(&["validate", "-strict", "-config", &cfg.arg()], &env);
    r.expect_code(0, "full example under -strict");
}

#[test]
fn usage_errors_exit_2() {
    run(&["--no-such-flag"])
        .expect_code(2, "unknown flag")
        .expect_stderr("--no-such-flag");
    run(&["validate", "-no-such-flag"]).expect_code(2, "unknown validate flag");
    run(&["no-such-command"]).expect_code(2, "unknown command");
    run(&["validate"])
        .expect_code(2, "validate without -config")
        .expect_stderr("-config");
}

#[test]
fn missing_config_file_exits_1_naming_it() {
    run(&["validate", "-config", "/nonexistent/proxy.yaml"])
        .expect_code(1, "validate of a missing file")
        .expect_stderr("/nonexistent/proxy.yaml");
    run(&["-config", "/nonexistent/proxy.yaml"])
        .expect_code(1, "run with a missing file")
        .expect_stderr("/nonexistent/proxy.yaml");
}

#[test]
fn run_with_a_transform_that_cannot_start_exits_1_naming_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = generated_ca(dir.path());
    for (transform, want) in [
        (
            "  - name: judge\n    config:\n      name: guard\n      prompt: \"Deny all.\"\n      rules: [{host: a.test}]\n      provider: {type: openai, model: m, api_key_env: IRON_TEST_UNSET_KEY}\n",
            "provider.api_key_env names IRON_TEST_UNSET_KEY, which is not set",
        ),
        (
            "  - name: grpc\n    config:\n      name: policy\n      target: \"localhost:9500\"\n      tls: {enabled: true, ca_cert: /nonexistent/grpc-ca.pem}\n",
            "grpc transform 'policy': reading ca_cert /nonexistent/grpc-ca.pem",
        ),
    ] {
        let cfg = ConfigFile::new(&runnable(&ca, transform));
        // validate accepts the config (it checks the file, not the host)...
        run(&["validate", "-config", &cfg.arg()]).expect_code(0, "validate");
        // ...but the proxy refuses to start rather than run with less policy.
        run(&["-config", &cfg.arg()])
            .expect_code(1, "run")
            .expect_stderr(want);
    }
}

/// Mistakes `validate` names with what to write instead, through the real
/// binary: near misses that load (`*example.com`, an AWS region written
/// `us-east1` or `US-EAST-1`, a misspelt `IRON_*` variable) are warnings at
/// their place; two MCP servers of one name and YAML's own mistakes (a tab,
/// a key without its colon) are errors at the line at fault. The misspelt
/// variable is logged at start-up too.
#[test]
fn validate_and_startup_name_near_misses_and_what_was_meant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = generated_ca(dir.path());
    let transforms = "  - name: allowlist\n    config:\n      domains: [\"*example.com\"]\n  \
                      - name: aws_auth\n    config:\n      credentials_provider: {type: \
                      workload_identity, region: us-east1}\n      allowed_regions: [US-EAST-1]\n      \
                      rules: [{host: \"*.amazonaws.com\"}]\n";
    let cfg = ConfigFile::new(&runnable(&ca, transforms));
    let file = cfg.arg();
    let env = [("IRON_PROXY_LOG_LEVL", "debug")];
    let r = run_env(&["validate", "-config", &file], &env);
    r.expect_code(0, "near misses are warnings")
        .expect_stdout("valid")
        .expect_stderr(&format!(
            "{file}:10:17: warning: transforms[0].config.domains[0]: \"*example.com\" matches \
             every host whose name ends in \"example.com\", such as badexample.com, not only \
             example.com and its subdomains; for those write \"*.example.com\""
        ))
        .expect_stderr(&format!(
            "{file}:13:63: warning: transforms[1].config.credentials_provider.region: \
             'us-east1': this is not the name of an AWS region"
        ))
        .expect_stderr("did you mean 'us-east-1'? The credential chain calls AWS (STS)")
        .expect_stderr(&format!(
            "{file}:14:25: warning: transforms[1].config.allowed_regions[0]: 'US-EAST-1': AWS \
             region names are lowercase; did you mean 'us-east-1'?"
        ))
        .expect_stderr(
            "IRON_PROXY_LOG_LEVL: warning: iron-proxy reads no variable of this name, so it \
             has no effect; did you mean IRON_LOG_LEVEL?",
        );
    // The proxy says the same when it starts (here it then stops: the judge has no key).
    let judge =
        "  - name: judge\n    config:\n      name: guard\n      prompt: \"Deny all.\"\n      \
                 rules: [{host: a.test}]\n      provider: {type: openai, model: m, api_key_env: \
                 IRON_TEST_UNSET_KEY}\n";
    let start = ConfigFile::new(&runnable(&ca, judge));
    run_env(&["-config", &start.arg()], &env)
        .expect_code(1, "run")
        .expect_stderr("configuration warning")
        .expect_stderr(
            "IRON_PROXY_LOG_LEVL: iron-proxy reads no variable of this name, so it has no \
             effect; did you mean IRON_LOG_LEVEL?",
        );
    // Errors: a server name used twice; a tab; a key without its colon.
    let server = "    - name: github\n      rules: [{host: mcp.test}]\n";
    for (text, want) in [
        (
            format!("mcp:\n  servers:\n{server}{server}{CA_BLOCK}"),
            ":5:13: mcp.servers[1].name: duplicate MCP server name 'github': mcp.servers[0] \
             (line 3, column 13) has it too"
                .to_string(),
        ),
        (
            format!("proxy:\n\thttp_listen: \":80\"\n{CA_BLOCK}"),
            ":2:1: invalid YAML: a tab character: YAML indents with spaces only".to_string(),
        ),
        (
            "tls\n  mode: sni-only\n".to_string(),
            ":1:1: invalid YAML: 'tls' has no ':' after its key".to_string(),
        ),
    ] {
        let cfg = ConfigFile::new(&text);
        let r = run(&["validate", "-config", &cfg.arg()]);
        r.expect_code(1, &want)
            .expect_stderr(&format!("{}{want}", cfg.arg()));
    }
}

#[test]
fn run_with_a_missing_ca_file_exits_1_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = (
        dir.path().join("missing-ca.crt"),
        dir.path().join("missing-ca.key"),
    );
    let ca = (
        ca.0.to_str().expect("UTF-8").to_string(),
        ca.1.to_str().expect("UTF-8").to_string(),
    );
    let cfg = ConfigFile::new(&runnable(
        &ca,
        "  - name: allowlist\n    config:\n      domains: [a.test]\n",
    ));
    run(&["-config", &cfg.arg()])
        .expect_code(1, "run with a missing CA")
        .expect_stderr("missing-ca.crt");
}

#[test]
fn startup_and_generate_ca_failures_print_the_os_reason_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, _) = generated_ca(dir.path());
    let nope = dir.path().join("nope.key");
    let nope = nope.to_str().expect("UTF-8").to_string();
    let cfg = ConfigFile::new(&runnable(
        &(cert, nope.clone()),
        "  - name: allowlist\n    config:\n      domains: [a.test]\n",
    ));
    let r = run(&["-config", &cfg.arg()]);
    r.expect_code(1, "run with a missing CA key")
        .expect_stderr(&format!(
            "error: tls.ca_key: reading {nope}: No such file or directory"
        ))
        .expect_stderr("; not starting");
    assert_eq!(r.stderr.matches("No such file").count(), 1, "{r}");
    // /proc refuses new directories, even to root.
    let r = run(&["generate-ca", "-outdir", "/proc/nope"]);
    r.expect_code(1, "generate-ca into /proc")
        .expect_stderr("iron-proxy generate-ca: creating /proc/nope: No such file or directory");
    assert_eq!(r.stderr.matches("No such file").count(), 1, "{r}");
}

#[test]
fn validate_and_startup_refuse_a_bad_ca_without_printing_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let garbage = "not-pem-KEY-MATERIAL-MUST-NOT-BE-PRINTED\n";
    let ca = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
    std::fs::write(&ca.0, garbage).expect("writing ca.crt");
    std::fs::write(&ca.1, garbage).expect("writing ca.key");
    let ca = (
        ca.0.to_str().expect("UTF-8").to_string(),
        ca.1.to_str().expect("UTF-8").to_string(),
    );
    let cfg = ConfigFile::new(&runnable(
        &ca,
        "  - name: allowlist\n    config:\n      domains: [a.test]\n",
    ));
    // Documented (docs/man/iron-proxy.1, validate): both forms load the CA pair as the
    // proxy does, and refuse one that does not load.
    for strict in [false, true] {
        let mut args = vec!["validate", "-config"];
        let arg = cfg.arg();
        args.push(&arg);
        if strict {
            args.push("-strict");
        }
        let r = run(&args);
        r.expect_code(1, "validate of a garbage CA")
            .expect_stderr(&format!(
                "error: tls.ca_cert: {}: no PEM certificate found",
                ca.0
            ));
        assert!(!r.stderr.contains("KEY-MATERIAL"), "{r}");
    }
    let r = run(&["-config", &cfg.arg()]);
    r.expect_code(1, "run with a garbage CA")
        .expect_stderr(&format!(
            "error: tls.ca_cert: {}: no PEM certificate found",
            ca.0
        ));
    assert!(!r.stderr.contains("KEY-MATERIAL"), "{r}");
}

/// Every line of `r`'s stderr (the unit's log file), parsed as a JSON object.
fn json_lines(r: &Run) -> Vec<serde_json::Map<String, serde_json::Value>> {
    r.stderr
        .lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => panic!("a line of the log file is not a JSON object: {l:?}\n{r}"),
        })
        .collect()
}

/// Under the packaged unit (stdout the journal, stderr the log file) the
/// log file stays JSON lines, every line of it, and the journal says why
/// the proxy did not start: `validate` (ExecStartPre) writes its warnings
/// and errors to the journal only; the proxy's reasons to stop, before the
/// logger is up (a config error, a CA that does not load) and after (a
/// transform that cannot start), go to the journal as plain lines and to
/// the file as JSON records of the logger's shape.
#[test]
fn under_the_unit_the_journal_says_why_and_the_log_file_stays_json_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = generated_ca(dir.path());
    // validate: a warning (an unset variable), and an error.
    let secret = "  - name: secrets\n    config:\n      secrets:\n        - source: {type: env, var: IRON_CLI_TEST_UNSET_VAR}\n          inject: {header: X-Key}\n";
    let warned = ConfigFile::new(&runnable(&ca, secret));
    let r = run_as_unit(&["validate", "-config", &warned.arg()], &[]);
    r.expect_code(0, "validate with a warning")
        .expect_stdout("warning")
        .expect_stdout("IRON_CLI_TEST_UNSET_VAR")
        .expect_stdout(": valid");
    assert_eq!(r.stderr, "", "nothing for the log file\n{r}");
    let broken = ConfigFile::new("transforms: [oops\n");
    let r = run_as_unit(&["validate", "-config", &broken.arg()], &[]);
    r.expect_code(1, "validate of a broken config")
        .expect_stdout("proxy.yaml:")
        .expect_stdout("invalid (1 error(s))");
    assert_eq!(r.stderr, "", "nothing for the log file\n{r}");

    // The proxy, before its logger is up: the config, then the CA.
    let garbage = dir.path().join("garbage.crt");
    std::fs::write(&garbage, "not PEM\n").expect("writing garbage.crt");
    let garbage = garbage.to_str().expect("UTF-8").to_string();
    let bad_ca = ConfigFile::new(&runnable(
        &(garbage.clone(), ca.1.clone()),
        "  - name: allowlist\n    config:\n      domains: [a.test]\n",
    ));
    let judge = "  - name: judge\n    config:\n      name: guard\n      prompt: \"Deny all.\"\n      rules: [{host: a.test}]\n      provider: {type: openai, model: m, api_key_env: IRON_TEST_UNSET_KEY}\n";
    let no_start = ConfigFile::new(&runnable(&ca, judge));
    for (cfg, why) in [
        (&broken, "proxy.yaml:".to_string()),
        (
            &bad_ca,
            format!("tls.ca_cert: {garbage}: no PEM certificate found"),
        ),
        // After the logger is up: its lines are JSON too.
        (
            &no_start,
            "provider.api_key_env names IRON_TEST_UNSET_KEY, which is not set".to_string(),
        ),
    ] {
        let r = run_as_unit(&["-config", &cfg.arg()], &[]);
        r.expect_code(1, "run that cannot start")
            .expect_stdout(&why);
        let records = json_lines(&r);
        let said = |needle: &str| {
            records.iter().any(|m| {
                m.get("level").and_then(|v| v.as_str()) == Some("error")
                    && m.get("msg")
                        .and_then(|v| v.as_str())
                        .is_some_and(|msg| msg.contains(needle))
            })
        };
        assert!(
            said(&why),
            "no error record with {why:?} in the log file\n{r}"
        );
        assert!(
            records
                .iter()
                .all(|m| m.contains_key("time") && m.contains_key("msg")),
            "{r}"
        );
        // From a terminal, as it always was: plain lines on stderr.
        let t = run(&["-config", &cfg.arg()]);
        t.expect_code(1, "run from a terminal").expect_stderr(&why);
        assert!(
            t.stderr
                .lines()
                .any(|l| !l.starts_with('{') && l.contains(&why)),
            "a plain line on stderr\n{t}"
        );
    }
    // A JOURNAL_STREAM that names another stream (inherited) changes nothing.
    let r = run_env(&["-config", &broken.arg()], &[("JOURNAL_STREAM", "1:2")]);
    r.expect_code(1, "inherited JOURNAL_STREAM")
        .expect_stderr("proxy.yaml:");
    assert_eq!(r.stdout, "", "{r}");
}

/// Runs `iron-proxy ARGS` with stdout a pipe whose read end is already closed
/// (`iron-proxy summary LOG | head -1`, a script that stops reading); returns how
/// it ended and its stderr.
fn into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    let (read, write) = nix::unistd::pipe().expect("pipe");
    drop(read);
    let err = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(err.reopen().expect("stderr file")))
        .spawn()
        .expect("spawning iron-proxy");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().expect("waiting for iron-proxy") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("iron-proxy {args:?} did not end");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stderr = std::fs::read_to_string(err.path()).unwrap_or_default();
    (status, stderr)
}

/// Such commands end as Unix tools do, killed by SIGPIPE, not with a panic and
/// its backtrace on stderr.
#[test]
fn one_shot_commands_end_quietly_when_the_reader_is_gone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("proxy.yaml");
    std::fs::write(
        &config,
        "tls:\n  mode: sni-only\ntransforms:\n  - name: allowlist\n    config:\n      domains: [api.test]\n",
    )
    .expect("writing the config");
    let log = dir.path().join("audit.log");
    std::fs::write(
        &log,
        r#"{"time":"2026-12-02T12:00:00Z","action":"allow","host":"api.test","method":"GET","path":"/a","status_code":200}
"#,
    )
    .expect("writing the log");
    let config = config.to_str().expect("utf-8 path");
    let log = log.to_str().expect("utf-8 path");
    for args in [
        &["version"][..],
        &["validate", "-config", config],
        &["summary", "-log-file", log],
    ] {
        let (status, stderr) = into_closed_pipe(args);
        assert!(
            !stderr.contains("panicked"),
            "iron-proxy {args:?} panicked on a closed pipe:\n{stderr}"
        );
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGPIPE),
            "iron-proxy {args:?}: {status}, stderr:\n{stderr}"
        );
    }
}

/// How a stream of the child is set up for [`with_failing_streams`].
#[derive(Clone, Copy, Debug)]
enum Broken {
    /// `/dev/full`: every write fails with ENOSPC.
    Full,
    /// Not open at all (the parent closed it).
    Closed,
}

/// Runs `iron-proxy ARGS` with stderr (and, with `stdout_too`, stdout) broken
/// as `how`; returns how it ended. Killed (by PID) after 30 s.
fn with_failing_streams(args: &[&str], how: Broken, stdout_too: bool) -> std::process::ExitStatus {
    use std::os::unix::process::CommandExt as _;
    let full = || Stdio::from(std::fs::File::create("/dev/full").expect("/dev/full"));
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    match how {
        Broken::Full => {
            cmd.stderr(full());
            if stdout_too {
                cmd.stdout(full());
            }
        }
        Broken::Closed => {
            let closed_out = stdout_too;
            // SAFETY: close() is async-signal-safe; the child runs nothing else
            // before exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::close(2);
                    if closed_out {
                        libc::close(1);
                    }
                    Ok(())
                });
            }
        }
    }
    let mut child = cmd.spawn().expect("spawning iron-proxy");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().expect("waiting for iron-proxy") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("iron-proxy {args:?} with {how:?} streams did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A start-up error (and any other line for the terminal) printed to a stderr that fails
/// (`2>/dev/full`) or is closed is lost, but the exit code still says what happened: 1 for a
/// failure, 0 for a success, 2 for a usage error; before, `eprintln!` panicked and the process
/// exited 101. The same for stdout of one-shot commands (`validate`, `version`): a success whose
/// output could not be written is exit 1.
#[test]
fn failing_or_closed_output_streams_give_the_documented_exit_code_not_a_panic() {
    let valid = ConfigFile::new("tls:\n  mode: sni-only\ntransforms: []\n");
    let no_ca = ConfigFile::new(&runnable(
        &("/nonexistent/ca.crt".into(), "/nonexistent/ca.key".into()),
        "  - name: allowlist\n    config:\n      domains: [a.test]\n",
    ));
    let broken = ConfigFile::new("proxy:\n  no_such_field: 1\n");
    let (valid, no_ca, broken) = (valid.arg(), no_ca.arg(), broken.arg());
    let cases: [(&[&str], bool, i32, i32, &str); 6] = [
        // args, stdout broken too, exit code with /dev/full, when closed, what
        (
            &["-config", "/nonexistent/proxy.yaml"],
            false,
            1,
            1,
            "run without its config file",
        ),
        (
            &["-config", &broken],
            false,
            1,
            1,
            "run with an invalid config",
        ),
        (
            &["-config", &no_ca],
            false,
            1,
            1,
            "run whose CA cannot be loaded",
        ),
        (
            &["validate", "-config", &broken],
            false,
            1,
            1,
            "validate of an invalid config",
        ),
        (&["validate"], false, 2, 2, "validate without -config"),
        // A closed stdout takes writes as done (EBADF), as Rust's streams do.
        (
            &["validate", "-config", &valid],
            true,
            1,
            0,
            "validate's verdict",
        ),
    ];
    for (args, stdout_too, full_code, closed_code, what) in cases {
        for (how, want) in [(Broken::Full, full_code), (Broken::Closed, closed_code)] {
            let status = with_failing_streams(args, how, stdout_too);
            assert_eq!(
                status.code(),
                Some(want),
                "{what} with {how:?} streams: {status}"
            );
        }
    }
    let status = with_failing_streams(&["version"], Broken::Full, true);
    assert_eq!(status.code(), Some(1), "version into /dev/full: {status}");
}

/// `validate` builds every transform as start-up does, so what only a build finds is an
/// error in `validate` too, at the field at fault (file:line:col, field path), and worded as
/// start-up words it: here a gRPC client key file that holds no usable key (its content is
/// never printed) and a target the gRPC client cannot use. A file or variable that is not
/// there stays a warning (an error under `-strict`), reported once.
#[test]
fn validate_builds_the_transforms_and_refuses_what_startup_refuses() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = generated_ca(dir.path());
    let key = dir.path().join("client.key");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nKEY-MATERIAL-MUST-NOT-BE-PRINTED!\n-----END PRIVATE KEY-----\n",
    )
    .expect("writing client.key");
    let key = key.to_str().expect("UTF-8").to_string();
    // Line 8 (after the 7 lines of `runnable`'s head) is `- name: grpc`.
    let bad_key = format!(
        "  - name: grpc\n    config:\n      name: policy\n      target: \"localhost:9500\"\n      tls:\n        enabled: true\n        cert: \"{}\"\n        key: \"{key}\"\n",
        ca.0
    );
    let cfg = ConfigFile::new(&runnable(&ca, &bad_key));
    let r = run(&["validate", "-config", &cfg.arg()]);
    r.expect_code(1, "validate of an unusable client key")
        .expect_stderr(&format!(
            "proxy.yaml:15:14: error: transforms[0].config.tls.key: grpc transform 'policy': tls.key {key}: not a readable PEM private key (a malformed or unterminated PEM section)\n"
        ))
        .expect_stderr("invalid (1 error(s))");
    assert!(!r.stderr.contains("KEY-MATERIAL"), "{r}");
    let started = run(&["-config", &cfg.arg()]);
    started
        .expect_code(1, "run with an unusable client key")
        .expect_stderr(&format!(
            "grpc transform 'policy': tls.key {key}: not a readable PEM private key (a malformed or unterminated PEM section)\n"
        ));
    assert!(!started.stderr.contains("KEY-MATERIAL"), "{started}");

    let bad_target =
        "  - name: grpc\n    config:\n      name: policy\n      target: \"http://[policy\"\n";
    let cfg = ConfigFile::new(&runnable(&ca, bad_target));
    run(&["validate", "-config", &cfg.arg()])
        .expect_code(1, "validate of an unusable target")
        .expect_stderr(
            "proxy.yaml:11:15: error: transforms[0].config.target: grpc transform 'policy': invalid target",
        );
    run(&["-config", &cfg.arg()])
        .expect_code(1, "run with an unusable target")
        .expect_stderr("grpc transform 'policy': invalid target");

    // What is missing on this machine: one warning each, no build error on top.
    let missing = format!(
        "{bad_key}  - name: judge\n    config:\n      name: guard\n      prompt: \"Deny all.\"\n      rules: [{{host: a.test}}]\n      provider: {{type: openai, model: m, api_key_env: IRON_CLI_UNSET_JUDGE_KEY}}\n"
    )
    .replace(&key, "/nonexistent/client.key");
    let cfg = ConfigFile::new(&runnable(&ca, &missing));
    let r = run(&["validate", "-config", &cfg.arg()]);
    r.expect_code(0, "validate with a missing file and an unset variable");
    // (The third line is the lint about the missing allowlist.)
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains(".config."))
        .collect();
    assert_eq!(lines.len(), 2, "{r}");
    assert!(
        lines[0].contains("warning: transforms[0].config.tls.key: file /nonexistent/client.key does not exist")
            && lines[1].contains("warning: transforms[1].config.provider.api_key_env: environment variable IRON_CLI_UNSET_JUDGE_KEY is not set")
            && !r.stderr.contains("error"),
        "{r}"
    );
    run(&["validate", "-strict", "-config", &cfg.arg()])
        .expect_code(1, "the same under -strict")
        .expect_stderr("invalid under -strict (2 problem(s))");
    // Set, the variable lets the judge build; the key is checked as start-up checks it.
    run_env(
        &["validate", "-config", &cfg.arg()],
        &[("IRON_CLI_UNSET_JUDGE_KEY", "sk-test")],
    )
    .expect_code(0, "with the judge's key set");
}

/// `validate` builds without side effects: no connection to any backend a transform names
/// (the gRPC server, an OAuth2 token endpoint, the judge's provider, a secret store), even
/// with every variable set. A listener on loopback stands for all of them and must see
/// nothing.
#[test]
fn validate_connects_to_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a loopback port");
    listener
        .set_nonblocking(true)
        .expect("a non-blocking listener");
    let addr = listener.local_addr().expect("its address");
    let transforms = format!(
        "  - name: grpc\n    config:\n      name: policy\n      target: \"{addr}\"\n  \
         - name: oauth_token\n    config:\n      tokens:\n        - grant: client_credentials\n          token_endpoint: \"http://{addr}/token\"\n          client_id: {{type: env, var: IRON_CLI_OAUTH_ID}}\n          client_secret: {{type: env, var: IRON_CLI_OAUTH_SECRET}}\n          rules: [{{host: api.test}}]\n  \
         - name: judge\n    config:\n      name: guard\n      prompt: \"Deny all.\"\n      rules: [{{host: a.test}}]\n      provider: {{type: openai, model: m, api_key_env: IRON_CLI_JUDGE_KEY, base_url: \"http://{addr}/v1\"}}\n  \
         - name: secrets\n    config:\n      secrets:\n        - source: {{type: 1password_connect, secret_ref: \"op://vault/item/field\", host_env: IRON_CLI_OP_HOST, token_env: IRON_CLI_OP_TOKEN}}\n          inject: {{header: X-Key}}\n"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = generated_ca(dir.path());
    let cfg = ConfigFile::new(&runnable(&ca, &transforms));
    let host = format!("http://{addr}");
    let env = [
        ("IRON_CLI_OAUTH_ID", "id"),
        ("IRON_CLI_OAUTH_SECRET", "secret"),
        ("IRON_CLI_JUDGE_KEY", "sk-test"),
        ("IRON_CLI_OP_HOST", host.as_str()),
        ("IRON_CLI_OP_TOKEN", "token"),
    ];
    run_env(&["validate", "-strict", "-config", &cfg.arg()], &env)
        .expect_code(0, "validate of backends on loopback");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("validate connected to {addr}: {other:?}"),
    }
}
