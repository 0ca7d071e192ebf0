//! `iron-proxy validate` on files as editors and yaml.v3 users write them: a byte order
//! mark, merge keys, standard tags and an upper-case log level are accepted; findings name
//! the file, line and column of their field; an empty file and an unknown tag are errors.

use std::process::Command;
use std::time::Duration;

use iron_proxy_tests::{paths, process};

/// Runs `iron-proxy validate -config <file holding text>`: exit code, stdout, stderr, file.
fn validate(text: &str) -> (i32, String, String, String) {
    validate_with(text, &[], &[])
}

/// [`validate`] with `flags` after `validate` and `env` added to an environment without the
/// `IRON_*` overrides the config's fields stand for here (and `TOKIO_WORKER_THREADS`).
pub(super) fn validate_with(
    text: &str,
    flags: &[&str],
    env: &[(&str, &str)],
) -> (i32, String, String, String) {
    let dir = paths::scratch_dir("validate");
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, text).expect("writing the config");
    let mut cmd = Command::new(paths::iron_proxy_bin());
    cmd.arg("validate").args(flags).arg("-config").arg(&file);
    for var in [
        "IRON_MANAGEMENT_LISTEN",
        "IRON_TLS_CA_CERT",
        "IRON_TLS_CA_KEY",
        "TOKIO_WORKER_THREADS",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = process::run_with_timeout("iron-proxy validate", &mut cmd, Duration::from_secs(30));
    (
        out.exit,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        file.display().to_string(),
    )
}

/// Written on Windows for the Go proxy: a byte order mark, an anchor merged into a second
/// entry, a `!!str` tag, `INFO`; the management API on every interface, and a judge after
/// the secrets it would see.
const WINDOWS_CONFIG: &str = "\u{feff}# shared settings
tls:
  mode: sni-only
management:
  listen: \":19092\"
  api_key_env: IRON_E2E_VALIDATE_KEY
log:
  level: INFO
transforms:
  - name: allowlist
    config:
      domains: [\"api.test\"]
  - name: secrets
    config:
      secrets:
        - &token
          source: {type: env, var: IRON_E2E_VALIDATE_SECRET}
          replace: {proxy_value: !!str 12345, match_headers: [Authorization]}
          rules: [{host: api.test}]
        - <<: *token
          replace: {proxy_value: other}
  - name: judge
    config:
      name: late
      prompt: \"Deny all.\"
      rules: [{host: api.test}]
      provider: {type: openai, model: m, api_key_env: IRON_E2E_VALIDATE_SECRET}
";

#[test]
fn validate_accepts_what_yaml_v3_accepts_and_locates_its_warnings() {
    let (exit, stdout, stderr, file) = validate(WINDOWS_CONFIG);
    assert_eq!(exit, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(stdout.trim(), format!("{file}: valid"));
    // Unset variables are warnings too, located the same way.
    assert!(
        stderr.contains(&format!(
            "{file}:6:16: warning: management.api_key_env: environment variable \
             IRON_E2E_VALIDATE_KEY is not set"
        )),
        "{stderr}"
    );
    // sni-only (chosen here so no CA files are needed): the secrets and the judge never
    // see an HTTPS request, each flagged at its entry.
    for at in [
        "13:5: warning: transforms[1]: tls.mode is sni-only: HTTPS connections pass \
                through undecrypted, so secrets never acts on them",
        "22:5: warning: transforms[2]: tls.mode is sni-only: HTTPS connections pass \
                through undecrypted, so judge never acts on them",
    ] {
        assert!(stderr.contains(&format!("{file}:{at}")), "{stderr}");
    }
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("is not set") && !l.contains("tls.mode is sni-only"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].starts_with(&format!(
            "{file}:22:5: warning: transforms[2]: judge \"late\" runs after transforms[1] (secrets)"
        )),
        "{stderr}"
    );
    assert!(
        warnings[1].starts_with(&format!(
            "{file}:5:11: warning: management.listen: the management API listens on every \
             interface (:19092) over plain HTTP: the bearer token from $IRON_E2E_VALIDATE_KEY \
             crosses the network unencrypted"
        )) && warnings[1].contains("set management.listen to \"127.0.0.1:19092\""),
        "{stderr}"
    );

    // On loopback the management API is not flagged.
    let (exit, _, stderr, _) =
        validate(&WINDOWS_CONFIG.replace("\":19092\"", "\"127.0.0.1:19092\""));
    assert_eq!(exit, 0, "{stderr}");
    assert!(!stderr.contains("warning: management.listen"), "{stderr}");
}

#[test]
fn validate_refuses_an_empty_file_and_an_unknown_tag_where_they_are() {
    for text in ["", "\n# nothing here yet\n\n"] {
        let (exit, stdout, stderr, file) = validate(text);
        assert_eq!(exit, 1, "{text:?}: {stdout}{stderr}");
        assert_eq!(
            stderr.lines().collect::<Vec<_>>(),
            [
                format!("{file}: config file is empty"),
                format!("{file}: invalid (1 error(s))")
            ],
            "{text:?}"
        );
    }
    let (exit, _, stderr, file) = validate("tls: !vault {mode: sni-only}\n");
    assert_eq!(exit, 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{file}:1:6: invalid YAML: unknown tag '!vault' (supported:"
        )),
        "{stderr}"
    );
}

/// Runs `iron-proxy generate-ca -outdir <dir>` (a fresh P-256 CA).
fn generate_ca(dir: &std::path::Path) {
    let out = process::run_with_timeout(
        "iron-proxy generate-ca",
        Command::new(paths::iron_proxy_bin())
            .arg("generate-ca")
            .arg("-outdir")
            .arg(dir),
        Duration::from_secs(30),
    );
    assert_eq!(out.exit, 0, "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_loads_the_ca_as_the_proxy_would() {
    let (a, b) = (
        paths::scratch_dir("validate-ca-a"),
        paths::scratch_dir("validate-ca-b"),
    );
    generate_ca(a.path());
    generate_ca(b.path());
    let config = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "tls:\n  ca_cert: \"{}\"\n  ca_key: \"{}\"\ntransforms:\n  - name: allowlist\n    \
             config:\n      domains: [\"api.test\"]\n",
            cert.display(),
            key.display()
        )
    };
    let (a_crt, a_key, b_key) = (
        a.path().join("ca.crt"),
        a.path().join("ca.key"),
        b.path().join("ca.key"),
    );
    let (exit, stdout, stderr, _) = validate(&config(&a_crt, &a_key));
    assert_eq!(exit, 0, "a matching pair: {stderr}");
    assert!(stdout.ends_with(": valid\n"), "{stdout}");

    // The key of another CA: the proxy would refuse to start, so validate fails.
    let (exit, stdout, stderr, file) = validate(&config(&a_crt, &b_key));
    assert_eq!(exit, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:3:11: error: tls.ca_key: {} does not match the public key of {}",
            b_key.display(),
            a_crt.display()
        )),
        "{stderr}"
    );
    assert!(!stdout.contains("valid"), "{stdout}");

    // Not a certificate at all.
    let garbage = a.path().join("garbage.crt");
    std::fs::write(&garbage, "garbage\n").expect("writing");
    let (exit, _, stderr, file) = validate(&config(&garbage, &a_key));
    assert_eq!(exit, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:2:12: error: tls.ca_cert: "))
            && stderr.contains("no PEM certificate found"),
        "{stderr}"
    );
}

/// `shared/spec/configs`, beside the repository.
fn spec_configs() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .map(|a| a.join("shared/spec/configs"))
        .find(|p| p.is_dir())
        .expect("shared/spec/configs beside the repository")
}

fn validate_file(file: &std::path::Path, strict: bool) -> (i32, String) {
    let mut cmd = Command::new(paths::iron_proxy_bin());
    cmd.arg("validate").arg("-config").arg(file);
    if strict {
        cmd.arg("-strict");
    }
    for var in [
        "IRON_MANAGEMENT_LISTEN",
        "IRON_TLS_CA_CERT",
        "IRON_TLS_CA_KEY",
    ] {
        cmd.env_remove(var);
    }
    let out = process::run_with_timeout("iron-proxy validate", &mut cmd, Duration::from_secs(30));
    (out.exit, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The binary's `validate` on every config of the spec as written (what an operator runs
/// on a copied example): valid, except the three whose bodies the docs elide with `...`.
/// A starting config without a CA is valid with a warning naming the CA fields, an error
/// under `-strict`, and the proxy does not start without it.
#[test]
fn every_spec_config_validates_as_written() {
    let dir = spec_configs();
    let mut files: Vec<_> = [dir.clone(), dir.join("embedded")]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).expect("spec configs"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 50, "{} spec configs", files.len());
    let mut refused = Vec::new();
    for file in &files {
        let (exit, stderr) = validate_file(file, false);
        if exit != 0 {
            let text = std::fs::read_to_string(file).expect("readable");
            assert!(text.contains("..."), "{}:\n{stderr}", file.display());
            refused.push(file.file_name().expect("name").to_owned());
        }
    }
    assert_eq!(refused.len(), 3, "{refused:?}");

    let starting = dir.join("ai-coding-agents-01-a-starting-config.yaml");
    let (exit, stderr) = validate_file(&starting, false);
    assert_eq!(exit, 0, "{stderr}");
    assert!(
        stderr.contains("warning: tls.ca_cert is not set; MITM mode (the default) needs the CA"),
        "{stderr}"
    );
    let (exit, stderr) = validate_file(&starting, true);
    assert_eq!(exit, 1, "{stderr}");
    assert!(stderr.contains("error: tls.ca_key is not set"), "{stderr}");

    let out = process::run_with_timeout(
        "iron-proxy without a CA",
        Command::new(paths::iron_proxy_bin())
            .arg("-config")
            .arg(&starting)
            .env_remove("IRON_TLS_CA_CERT")
            .env_remove("IRON_TLS_CA_KEY"),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.exit, 1, "{stderr}");
    assert!(
        stderr.contains("error: tls.ca_cert is not set") && stderr.contains("not starting"),
        "{stderr}"
    );
}

/// `validate` checks interception's users and cgroups on the machine it runs on, as it
/// checks files: one that is not there is a warning (interception would not start), an error
/// under `-strict`.
#[test]
fn validate_names_intercepted_users_and_cgroups_this_machine_lacks() {
    let text = "tls: {mode: sni-only}\ntransforms:\n  - name: allowlist\n    config:\n      \
                domains: [a.test]\ndns: {listen: \"127.0.0.1:8053\", proxy_ip: 127.0.0.1}\n\
                intercept:\n  uids: [root, nosuchuser-e2e, 4242]\n  cgroups: [\"/\", \
                no-such-e2e.slice]\n";
    let (exit, _, stderr, file) = validate(text);
    assert_eq!(exit, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:8:16: warning: intercept.uids[1]: user nosuchuser-e2e does not exist"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: intercept.cgroups[1]: cgroup ")
            && stderr.contains("no-such-e2e.slice does not exist (yet)"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("uids[0]") && !stderr.contains("uids[2]"),
        "{stderr}"
    );
    assert!(!stderr.contains("cgroups[0]"), "{stderr}");
}

/// `-config` is global (it may come before or after the command), so a command that reads no
/// config would take it and ignore it; it refuses it instead, with a usage error, in either
/// position, and its help does not offer it.
#[test]
fn commands_that_read_no_config_refuse_one() {
    for (args, says) in [
        (
            &["generate-ca", "-outdir", "/nonexistent"][..],
            "generate-ca",
        ),
        (&["summary"][..], "summary"),
        (&["init"][..], "init"),
    ] {
        for before in [false, true] {
            let mut cmd = Command::new(paths::iron_proxy_bin());
            if before {
                cmd.args(["-config", "/etc/iron-proxy/proxy.yaml"])
                    .args(args);
            } else {
                cmd.args(args)
                    .args(["-config", "/etc/iron-proxy/proxy.yaml"]);
            }
            let out = process::run_with_timeout("iron-proxy", &mut cmd, Duration::from_secs(30));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.exit, 2, "{args:?} (before: {before}): {stderr}");
            assert!(
                stderr.contains(&format!("-config is not used by {says}")),
                "{args:?} (before: {before}): {stderr}"
            );
        }
        let out = process::run_with_timeout(
            "iron-proxy",
            Command::new(paths::iron_proxy_bin()).args([args[0], "-help"]),
            Duration::from_secs(30),
        );
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.exit, 0, "{} -help: {help}", args[0]);
        assert!(
            help.contains("Usage: iron-proxy"),
            "{} -help: {help}",
            args[0]
        );
        assert!(
            !help.contains("-config,") && !help.contains("--config <FILE>"),
            "{} -help offers the -config it refuses:\n{help}",
            args[0]
        );
    }
}

/// A `gcp_auth` keyfile that is there is read as a mint would read it: one that would fail
/// every request at its first mint (not JSON, a field missing, a private key that does not
/// load, an unsupported type, an external account without its token source) is an error at
/// `keyfile_path`, naming the file and what is wrong, never quoting it. A keyfile that is
/// not there is the warning it was (it may be provisioned after validation).
#[test]
fn validate_reads_a_gcp_keyfile_as_a_mint_would() {
    let dir = paths::scratch_dir("validate-gcp");
    let pem = dir.path().join("key.pem");
    let made = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .output()
        .expect("running openssl");
    assert!(made.status.success(), "openssl genpkey: {made:?}");
    let key = std::fs::read_to_string(&pem).expect("reading the key");
    let account = |key: &str| {
        serde_json::json!({
            "type": "service_account",
            "client_email": "sa@p.iam.gserviceaccount.com",
            "private_key": key,
            "private_key_id": "k1",
        })
        .to_string()
    };
    let config = |keyfile: &std::path::Path| {
        format!(
            "tls:\n  mode: sni-only\ntransforms:\n  - name: gcp_auth\n    config:\n      \
             keyfile_path: \"{}\"\n      scopes: [\"https://www.googleapis.com/auth/cloud-platform\"]\n      \
             rules:\n        - host: \"api.test\"\n",
            keyfile.display()
        )
    };
    let sa = dir.path().join("sa.json");
    std::fs::write(&sa, account(&key)).expect("writing the keyfile");
    let (exit, stdout, stderr, _) = validate(&config(&sa));
    assert_eq!(exit, 0, "a service-account keyfile: {stderr}");
    assert!(stdout.ends_with(": valid\n"), "{stdout}");

    let secret_looking =
        "-----BEGIN PRIVATE KEY-----\nU2VjcmV0VGhhdE11c3ROb3RMZWFr\n-----END PRIVATE KEY-----\n";
    let cases = [
        (
            "not-json.json",
            "{\"type\": \"service_account\",\n  oops".to_string(),
            "the credentials are not valid JSON: line 2",
        ),
        (
            "no-key.json",
            serde_json::json!({"type": "service_account", "client_email": "a@b"}).to_string(),
            "the keyfile has no private_key",
        ),
        (
            "bad-key.json",
            account(secret_looking),
            "private_key is not a PEM RSA private key",
        ),
        (
            "user.json",
            serde_json::json!({"type": "impersonated_service_account"}).to_string(),
            "credentials of type \"impersonated_service_account\" are not supported",
        ),
        (
            "wif.json",
            serde_json::json!({"type": "external_account", "audience": "//iam.googleapis.com/x",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt"})
            .to_string(),
            "the external_account credentials have no credential_source",
        ),
    ];
    for (name, text, want) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &text).expect("writing the keyfile");
        let (exit, stdout, stderr, file) = validate(&config(&path));
        assert_eq!(exit, 1, "{name}: {stdout}{stderr}");
        assert!(
            stderr.contains(&format!(
                "{file}:6:21: error: transforms[0].config.keyfile_path: {}: {want}",
                path.display()
            )),
            "{name}: {stderr}"
        );
        assert!(
            !stderr.contains("U2VjcmV0"),
            "{name}: the key was quoted: {stderr}"
        );
    }

    // Not there: a warning, as before.
    let (exit, _, stderr, _) = validate(&config(&dir.path().join("later.json")));
    assert_eq!(exit, 0, "{stderr}");
    assert!(stderr.contains("later.json does not exist"), "{stderr}");
}

/// An `IRON_*` override whose value is not UTF-8 is an error naming the variable, not an
/// unset variable ignored without a word, and the value is not shown; a variable whose name
/// is not UTF-8 but starts with `IRON_` is warned about as any unknown one is.
#[test]
fn an_iron_variable_that_is_not_utf8_is_named() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = paths::scratch_dir("validate");
    let file = dir.path().join("proxy.yaml");
    std::fs::write(&file, "tls: {mode: sni-only}\n").expect("writing the config");
    let run = |var: &OsStr, value: &OsStr| {
        process::run_with_timeout(
            "iron-proxy validate",
            Command::new(paths::iron_proxy_bin())
                .arg("validate")
                .arg("-config")
                .arg(&file)
                .env_remove("IRON_MANAGEMENT_LISTEN")
                .env(var, value),
            Duration::from_secs(30),
        )
    };
    let out = run(
        OsStr::new("IRON_TLS_MODE"),
        OsStr::from_bytes(b"mitm\xffs3cret"),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.exit, 1, "{stderr}");
    assert!(
        stderr.contains("IRON_TLS_MODE: the value is not UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let out = run(OsStr::from_bytes(b"IRON_TLS_MOD\xff"), OsStr::new("mitm"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.exit, 0, "{stderr}");
    assert!(
        stderr.contains("IRON_TLS_MOD\u{fffd}: warning: iron-proxy reads no variable of this name"),
        "{stderr}"
    );
}
