use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

fn args(root: &Path) -> InitArgs {
    InitArgs {
        allow: vec!["api.openai.com".into(), "api.anthropic.com".into()],
        intercept_users: vec!["runner".into(), "1001".into()],
        config_dir: "/etc/iron-proxy".into(),
        root: Some(root.to_path_buf()),
        ready_timeout: 1,
        ..Default::default()
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn fresh_root_tree() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let report = run(&args(tmp.path())).expect("init runs");
    let etc = tmp.path().join("etc/iron-proxy");
    assert_eq!(mode(&etc.join("ca.key")), 0o600);
    assert!(read(&etc.join("ca.crt")).contains("BEGIN CERTIFICATE"));
    let yaml = read(&etc.join("proxy.yaml"));
    crate::config::parse(&yaml, "proxy.yaml", &|_| None).expect("generated config is valid");
    assert!(yaml.contains("- \"api.openai.com\""), "{yaml}");
    assert!(yaml.contains("intercept:\n  mode: ebpf\n"), "{yaml}");
    assert!(
        yaml.contains("  uids:\n    - \"runner\"\n    - 1001\n"),
        "{yaml}"
    );
    // Intercepting users: their DNS goes to the proxy's server (answers 127.0.0.1).
    assert!(yaml.contains("  dns: true\n"), "{yaml}");
    assert!(
        yaml.contains("dns:\n  listen: \"127.0.0.1:8053\"\n  proxy_ip: \"127.0.0.1\"\n"),
        "{yaml}"
    );
    assert!(
        yaml.contains(
            "management:\n  listen: \"127.0.0.1:9092\"\n  api_key_env: \"IRON_MANAGEMENT_API_KEY\""
        ),
        "{yaml}"
    );
    assert!(
        yaml.contains("metrics:\n  listen: \"127.0.0.1:9090\""),
        "{yaml}"
    );
    let env = etc.join("iron-proxy.env");
    assert_eq!(mode(&env), 0o600);
    let key = render::existing_api_key(&read(&env)).expect("key written");
    assert_eq!(key.len(), 64);
    // No packaged unit under the root: the full unit, pointing at the packaged paths.
    let unit = read(&tmp.path().join("etc/systemd/system/iron-proxy.service"));
    assert!(unit.starts_with(render::UNIT_MARKER), "{unit}");
    assert!(
        unit.contains("ExecStart=/usr/bin/iron-proxy -config /etc/iron-proxy/proxy.yaml"),
        "{unit}"
    );
    assert!(
        unit.contains("EnvironmentFile=-/etc/iron-proxy/iron-proxy.env"),
        "{unit}"
    );
    assert!(!unit.contains(&key), "secrets never go into the unit");
    assert!(
        report
            .steps
            .iter()
            .any(|s| s.contains("did not enable or start")),
        "{:?}",
        report.steps
    );
    assert!(
        report
            .verify
            .iter()
            .any(|v| v.contains("https://api.openai.com/")),
        "{:?}",
        report.verify
    );
}

#[test]
fn second_run_changes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run(&args(tmp.path())).expect("first run");
    let etc = tmp.path().join("etc/iron-proxy");
    let files = ["ca.crt", "ca.key", "proxy.yaml", "iron-proxy.env"].map(|f| etc.join(f));
    let before: Vec<_> = files
        .iter()
        .map(|f| {
            (
                read(f),
                std::fs::metadata(f).and_then(|m| m.modified()).ok(),
            )
        })
        .collect();
    let report = run(&args(tmp.path())).expect("second run");
    let after: Vec<_> = files
        .iter()
        .map(|f| {
            (
                read(f),
                std::fs::metadata(f).and_then(|m| m.modified()).ok(),
            )
        })
        .collect();
    assert_eq!(before, after, "a re-run must not touch unchanged files");
    assert!(
        report
            .steps
            .iter()
            .any(|s| s.starts_with("kept existing CA")),
        "{:?}",
        report.steps
    );
    assert!(
        report
            .steps
            .iter()
            .filter(|s| s.starts_with("created") || s.starts_with("updated"))
            .count()
            == 0,
        "{:?}",
        report.steps
    );
}

#[test]
fn a_rerun_keeps_the_edited_config_as_a_backup() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run(&args(tmp.path())).expect("first run");
    let config = tmp.path().join("etc/iron-proxy/proxy.yaml");
    let edited = format!("{}# my edit\n", read(&config));
    std::fs::write(&config, &edited).expect("edit");
    run(&args(tmp.path())).expect("second run");
    assert!(
        !read(&config).contains("# my edit"),
        "init rewrote its file"
    );
    assert_eq!(
        read(&tmp.path().join("etc/iron-proxy/proxy.yaml.bak")),
        edited,
        "the edit is kept"
    );
}

#[test]
fn drop_in_for_packaged_unit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let packaged = tmp.path().join("usr/lib/systemd/system/iron-proxy.service");
    std::fs::create_dir_all(packaged.parent().expect("parent")).expect("mkdir");
    std::fs::write(&packaged, render::PACKAGED_UNIT).expect("write unit");
    let mut a = args(tmp.path());
    a.config_dir = "/srv/iron".into();
    run(&a).expect("init runs");
    let drop_in = read(
        &tmp.path()
            .join("etc/systemd/system/iron-proxy.service.d/10-iron-proxy-init.conf"),
    );
    assert!(
        drop_in
            .contains("ExecStart=\nExecStart=/usr/bin/iron-proxy -config /srv/iron/proxy.yaml\n"),
        "{drop_in}"
    );
    assert!(
        drop_in.contains("EnvironmentFile=-/srv/iron/iron-proxy.env"),
        "{drop_in}"
    );
    assert!(!tmp
        .path()
        .join("etc/systemd/system/iron-proxy.service")
        .exists());
    assert!(read(&tmp.path().join("srv/iron/proxy.yaml")).contains("ca_cert: \"/srv/iron/ca.crt\""));
}

#[test]
fn foreign_files_need_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let etc = tmp.path().join("etc/iron-proxy");
    std::fs::create_dir_all(&etc).expect("mkdir");
    std::fs::write(
        etc.join("proxy.yaml"),
        "# hand written\nlog: {level: debug}\n",
    )
    .expect("write");
    let err = run(&args(tmp.path())).expect_err("refuses to replace a hand-written config");
    assert!(matches!(err, InitError::Foreign(_)), "{err}");
    let mut a = args(tmp.path());
    a.force = true;
    run(&a).expect("-force replaces it");
    assert!(read(&etc.join("proxy.yaml.bak")).contains("hand written"));
    assert!(read(&etc.join("proxy.yaml")).starts_with(render::CONFIG_MARKER));
    // The packaged default may be replaced without -force.
    std::fs::write(
        etc.join("proxy.yaml"),
        format!("{}\nlog: {{}}\n", render::PACKAGED_MARKER),
    )
    .expect("write");
    run(&args(tmp.path())).expect("packaged default is replaced");
}

#[test]
fn ca_is_never_overwritten_without_force() {
    let tmp = tempfile::tempdir().expect("tempdir");
    run(&args(tmp.path())).expect("first run");
    let key = tmp.path().join("etc/iron-proxy/ca.key");
    let old = read(&key);
    std::fs::remove_file(tmp.path().join("etc/iron-proxy/ca.crt")).expect("rm");
    assert!(matches!(run(&args(tmp.path())), Err(InitError::HalfCa(_))));
    assert_eq!(read(&key), old);
    let mut a = args(tmp.path());
    a.force = true;
    run(&a).expect("-force regenerates");
    assert_ne!(read(&key), old);
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn egress_rules_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let rules = tmp.path().join("egress-rules.yaml");
    std::fs::write(
        &rules,
        "domains:\n  - \"registry.npmjs.org\"\n  - \"*.golang.org\"\ncidrs:\n  - \"10.0.0.0/8\"\nrules:\n  - domain: \"api.example.com\"\n    methods: [\"GET\"]\n    paths: [\"/v1/health\"]\n  - host: \"other.example.com\"\n    schemes: [https]\n",
    )
    .expect("write rules");
    let mut a = args(tmp.path());
    a.allow = vec!["github.com".into(), "".into()];
    a.egress_rules = Some(rules.clone());
    a.warn = true;
    let c = inputs(&a).expect("inputs");
    assert_eq!(
        c.domains,
        ["github.com", "registry.npmjs.org", "*.golang.org"]
    );
    let yaml = checked_config(&c).expect("valid config");
    assert!(yaml.contains("      warn: true\n"), "{yaml}");
    assert!(
        yaml.contains("{ host: \"api.example.com\", methods: [\"GET\"], paths: [\"/v1/health\"] }"),
        "{yaml}"
    );
    assert!(
        yaml.contains("{ host: \"other.example.com\", schemes: [\"https\"] }"),
        "{yaml}"
    );
    assert!(yaml.contains("cidrs:\n        - \"10.0.0.0/8\""), "{yaml}");

    std::fs::write(&rules, "domain:\n  - x.com\n").expect("write rules");
    let err = inputs(&a).expect_err("unknown key");
    assert!(err.to_string().contains("unknown field `domain`"), "{err}");
    std::fs::write(&rules, "rules:\n  - methods: [GET]\n").expect("write rules");
    assert!(inputs(&a)
        .expect_err("rule without host")
        .to_string()
        .contains("rules[0]"));
}

#[test]
fn needs_something_to_allow() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = args(tmp.path());
    a.allow.clear();
    assert!(matches!(run(&a), Err(InitError::NothingAllowed)));
    a.warn = true;
    let c = inputs(&a).expect("warn mode may start empty");
    checked_config(&c).expect("empty warn-mode allowlist is valid");
}

#[test]
fn dns_and_resolver() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = args(tmp.path());
    a.intercept_cgroups = vec!["/sys/fs/cgroup/ci.slice".into()];
    a.upstream_resolver = Some("8.8.8.8:53".into());
    let yaml = checked_config(&inputs(&a).expect("inputs")).expect("valid");
    assert!(yaml.contains("dns:\n  listen: \"127.0.0.1:8053\"\n  proxy_ip: \"127.0.0.1\"\n  upstream_resolver: \"8.8.8.8:53\""), "{yaml}");
    assert!(
        yaml.contains("  cgroups:\n    - \"/sys/fs/cgroup/ci.slice\"\n"),
        "{yaml}"
    );
    // Intercepting without a word about DNS: it is redirected (else all UDP is refused).
    assert!(yaml.contains("  dns: true\n"), "{yaml}");
    // Turned off explicitly: the workloads' DNS is refused like other UDP.
    a.intercept_dns = Some(false);
    let yaml = checked_config(&inputs(&a).expect("inputs")).expect("valid");
    assert!(yaml.contains("  dns: false\n"), "{yaml}");
    // Without interception no DNS server is made unless asked for.
    let mut plain = args(tmp.path());
    plain.intercept_users.clear();
    let yaml = checked_config(&inputs(&plain).expect("inputs")).expect("valid");
    assert!(!yaml.contains("dns:"), "{yaml}");
    plain.intercept_dns = Some(true);
    let yaml = checked_config(&inputs(&plain).expect("inputs")).expect("valid");
    assert!(
        yaml.contains("dns:\n  listen: \"127.0.0.1:8053\""),
        "{yaml}"
    );
}

#[test]
fn trust_under_root_copies_the_anchor() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = args(tmp.path());
    a.trust = true;
    let report = run(&a).expect("init runs");
    let anchor = tmp
        .path()
        .join("usr/local/share/ca-certificates/iron-proxy.crt");
    assert_eq!(
        read(&anchor),
        read(&tmp.path().join("etc/iron-proxy/ca.crt"))
    );
    assert!(
        report.steps.iter().any(|s| s.contains("trust anchor")),
        "{:?}",
        report.steps
    );
}

#[test]
fn relative_config_dir_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = args(tmp.path());
    a.config_dir = "etc".into();
    assert!(matches!(run(&a), Err(InitError::Usage(_))));
}

#[test]
fn a_binary_the_unit_hides_is_named() {
    for (bin, hidden) in [
        ("/home/ci/iron-proxy", Some("/home")),
        ("/root/iron-proxy", Some("/root")),
        ("/tmp/iron-proxy_1.0/iron-proxy", Some("/tmp")),
        ("/var/tmp/x/iron-proxy", Some("/var/tmp")),
        ("/usr/local/bin/iron-proxy", None),
        ("/opt/iron-proxy/bin/iron-proxy", None),
        ("/tmpfoo/iron-proxy", None),
    ] {
        assert_eq!(super::hidden_from_the_unit(Path::new(bin)), hidden, "{bin}");
    }
}

/// The unit's non-comment lines.
fn settings(unit: &str) -> Vec<&str> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect()
}

#[test]
fn the_full_unit_is_the_packaged_one_with_the_paths_substituted() {
    assert_eq!(
        render::full_unit(render::PACKAGED_BIN, render::PACKAGED_CONFIG_DIR),
        format!("{}\n{}", render::UNIT_MARKER, render::PACKAGED_UNIT),
        "the packaged paths change nothing"
    );
    let unit = render::full_unit("/opt/ip/bin/iron-proxy", "/srv/iron/");
    for l in settings(&unit) {
        assert!(
            !l.contains(render::PACKAGED_CONFIG_DIR) && !l.contains(render::PACKAGED_BIN),
            "a packaged path left in {l:?}"
        );
    }
    assert!(
        unit.contains(
            "\nExecStartPre=/opt/ip/bin/iron-proxy validate -preflight -config /srv/iron/proxy.yaml\n"
        ),
        "{unit}"
    );
    assert!(
        unit.contains("\nEnvironmentFile=-/srv/iron/iron-proxy.env\n"),
        "{unit}"
    );
}

/// A directory with a space and `%` (a specifier in systemd), and a binary
/// in one: quoted and escaped as systemd reads them; `systemd-analyze
/// verify`, where installed, loads the result (it refuses an unquoted binary
/// path with a space, which it cannot find, and `%Z`, which is no specifier).
#[test]
fn paths_with_spaces_and_percent_are_quoted_in_the_unit_and_drop_in() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let tools = tmp.path().join("my tools %d");
    std::fs::create_dir_all(&tools).expect("mkdir");
    let bin = tools.join("iron-proxy");
    std::fs::copy("/bin/true", &bin).expect("an executable to name");
    let bin = bin.to_str().expect("UTF-8 temp path");
    let q = |s: &str| format!("\"{}\"", s.replace('%', "%%"));
    let config = "/srv/iron proxy 100%Z";
    let unit = render::full_unit(bin, config);
    let want_pre = format!(
        "\nExecStartPre={} validate -preflight -config \"/srv/iron proxy 100%%Z/proxy.yaml\"\n",
        q(bin)
    );
    assert!(unit.contains(&want_pre), "{want_pre}\n{unit}");
    assert!(
        unit.contains(&format!(
            "\nExecStart={} -config \"/srv/iron proxy 100%%Z/proxy.yaml\"\n",
            q(bin)
        )),
        "{unit}"
    );
    assert!(
        unit.contains("\nEnvironmentFile=-/srv/iron proxy 100%%Z/iron-proxy.env\n"),
        "{unit}"
    );
    let drop_in = render::drop_in(bin, config);
    assert!(drop_in.contains(&want_pre), "{want_pre}\n{drop_in}");
    assert!(
        drop_in.contains("\nEnvironmentFile=-/srv/iron proxy 100%%Z/iron-proxy.env\n"),
        "{drop_in}"
    );
    let analyze = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output();
    if !analyze.is_ok_and(|o| o.status.success()) {
        eprintln!("systemd-analyze is not installed: the rendered units are not verified");
        return;
    }
    // The drop-in after the unit, as systemd merges them.
    for (name, text) in [
        ("unit", unit.clone()),
        ("unit and drop-in", format!("{unit}{drop_in}")),
    ] {
        let path = tmp.path().join("iron-proxy.service");
        std::fs::write(&path, &text).expect("write unit");
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze verify");
        assert!(
            out.status.success(),
            "systemd-analyze verify refuses the {name}:\n{}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_config_dir_a_unit_cannot_hold_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut a = args(tmp.path());
    a.config_dir = "/srv/iron\nExecStartPre=/bin/false".into();
    let err = run(&a).expect_err("a newline in -config-dir");
    assert!(
        err.to_string().starts_with(
            "-config-dir \"/srv/iron\\nExecStartPre=/bin/false\": it holds a control character"
        ),
        "{err}"
    );
    assert!(
        std::fs::read_dir(tmp.path())
            .expect("read root")
            .next()
            .is_none(),
        "nothing written"
    );
    // A space and a percent sign are fine (quoted in the unit).
    a.config_dir = "/srv/iron proxy 100%".into();
    run(&a).expect("init runs");
    let unit = read(&tmp.path().join("etc/systemd/system/iron-proxy.service"));
    assert!(
        unit.contains(
            "ExecStart=/usr/bin/iron-proxy -config \"/srv/iron proxy 100%%/proxy.yaml\"\n"
        ),
        "{unit}"
    );
    let yaml = read(&tmp.path().join("srv/iron proxy 100%/proxy.yaml"));
    assert!(
        yaml.contains("ca_cert: \"/srv/iron proxy 100%/ca.crt\""),
        "{yaml}"
    );
}

/// Without the package (no packaged unit), init installs the package's
/// logrotate file for the log its unit appends to, where logrotate is
/// installed and has none yet; it never replaces one.
#[test]
fn a_tarball_install_gets_the_logrotate_file() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("etc/logrotate.d");
    let file = dir.join("iron-proxy");
    // No logrotate: nothing written, and the report says the log is not rotated.
    let report = run(&args(tmp.path())).expect("init runs");
    assert!(!dir.exists());
    assert!(
        report
            .steps
            .iter()
            .any(|s| s.contains("/var/log/iron-proxy.log is not rotated")),
        "{:?}",
        report.steps
    );
    std::fs::create_dir_all(&dir).expect("mkdir");
    let report = run(&args(tmp.path())).expect("init runs");
    let text = read(&file);
    assert_eq!(mode(&file), 0o644);
    assert!(text.starts_with(render::LOGROTATE_MARKER), "{text}");
    assert!(text.ends_with(render::PACKAGED_LOGROTATE), "{text}");
    assert!(text.contains("/var/log/iron-proxy.log {"), "{text}");
    assert!(text.contains("--signal=USR1 iron-proxy.service"), "{text}");
    let created = format!("created {}", file.display());
    assert!(
        report.steps.iter().any(|s| s.starts_with(&created)),
        "{:?}",
        report.steps
    );
    let report = run(&args(tmp.path())).expect("second run");
    assert!(
        report
            .steps
            .contains(&format!("unchanged {}", file.display())),
        "{:?}",
        report.steps
    );
    // The operator's own file stays as it is, and nothing is put beside it.
    std::fs::write(&file, "/var/log/iron-proxy.log { weekly }\n").expect("write");
    let report = run(&args(tmp.path())).expect("third run");
    assert_eq!(read(&file), "/var/log/iron-proxy.log { weekly }\n");
    assert_eq!(
        std::fs::read_dir(&dir).expect("read dir").count(),
        1,
        "only the operator's file"
    );
    let kept = format!("kept {}", file.display());
    assert!(
        report.steps.iter().any(|s| s.starts_with(&kept)),
        "{:?}",
        report.steps
    );
}

/// With the package, the package's own logrotate file is left to it.
#[test]
fn a_package_install_leaves_logrotate_to_the_package() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let packaged = tmp.path().join("usr/lib/systemd/system/iron-proxy.service");
    std::fs::create_dir_all(packaged.parent().expect("parent")).expect("mkdir");
    std::fs::write(&packaged, render::PACKAGED_UNIT).expect("write unit");
    let dir = tmp.path().join("etc/logrotate.d");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let report = run(&args(tmp.path())).expect("init runs");
    assert!(!dir.join("iron-proxy").exists());
    assert!(
        !report.steps.iter().any(|s| s.contains("logrotate")),
        "{:?}",
        report.steps
    );
}
