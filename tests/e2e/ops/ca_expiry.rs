//! A MITM CA that expires within 30 days is said in words, naming its file and the date,
//! before the proxy stops starting with it: by `validate` (a warning at `tls.ca_cert`, exit 0),
//! at start-up and on reload (a log line, and the reload answer's `warnings`), and by `init`
//! when it keeps an existing CA. A CA with longer left is not flagged.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use iron_proxy_tests::{paths, process, Proxy, TestCa};

use super::{management, policy, policy_file, API_KEY};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// `2026-12-20 14:03 UTC`, as the warnings write a date.
fn date(t: time::OffsetDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn tls(dir: &Path) -> String {
    format!(
        "tls:\n  ca_cert: \"{}\"\n  ca_key: \"{}\"\n",
        dir.join("ca.crt").display(),
        dir.join("ca.key").display()
    )
}

fn validate(text: &str) -> (i32, String, String, String) {
    super::validate::validate_with(text, &[], &[])
}

const ALLOW: &str = "transforms:\n  - name: allowlist\n    config:\n      domains: [a.test]\n";

#[test]
fn validate_warns_of_a_ca_that_expires_within_30_days() {
    let dir = paths::scratch_dir("ca-expiry-soon");
    let (_ca, not_after) = TestCa::expiring_in("soon", dir.path(), 10 * DAY);
    let (exit, stdout, stderr, file) = validate(&format!("{}{ALLOW}", tls(dir.path())));
    assert_eq!(exit, 0, "a warning, not an error:\n{stdout}{stderr}");
    assert_eq!(stdout, format!("{file}: valid\n"), "{stderr}");
    let want = format!(
        "{file}:2:12: warning: tls.ca_cert: the CA certificate {} expires on {} (in 9 days): ",
        dir.path().join("ca.crt").display(),
        date(not_after)
    );
    assert!(
        stderr.lines().any(|l| l.starts_with(&want)),
        "no line starting {want:?}:\n{stderr}"
    );

    // 40 days left: nothing to say.
    let later = paths::scratch_dir("ca-expiry-later");
    TestCa::expiring_in("later", later.path(), 40 * DAY);
    let (exit, stdout, stderr, _) = validate(&format!("{}{ALLOW}", tls(later.path())));
    assert_eq!(exit, 0, "{stdout}{stderr}");
    assert!(!stderr.contains("expires"), "{stderr}");
}

#[test]
fn the_proxy_warns_at_start_and_on_reload_of_a_ca_that_expires_soon() {
    let dir = paths::scratch_dir("ca-expiry-run");
    let (_ca, not_after) = TestCa::expiring_in("soon", dir.path(), 10 * DAY);
    let cert = dir.path().join("ca.crt").display().to_string();
    let said = format!("the CA certificate {cert} expires on {}", date(not_after));
    let mut px = Proxy::with(format!("{}{}", tls(dir.path()), policy(&["a.test"])).as_str())
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .start();
    let line = px.wait_for_log(|l| l.contains(&said));
    assert!(
        line.contains("\"level\":\"warn\"") && line.contains(&format!("\"ca_cert\":\"{cert}\"")),
        "{line}"
    );

    // A reload says it again, in its log and its answer.
    px.rewrite_config(format!("{}{}", tls(dir.path()), policy_file(&["a.test"])));
    let r = management(&px, "POST", "/v1/reload", Some(API_KEY));
    assert_eq!(r.status, 200, "{r}");
    let warnings = r.json()["warnings"].to_string();
    assert!(
        warnings.contains(&format!(": tls.ca_cert: {said}")),
        "{warnings}"
    );
    iron_proxy_tests::wait_until(Duration::from_secs(10), "the reload's warning line", || {
        let n = px.logs().iter().filter(|l| l.contains(&said)).count();
        (n >= 2).then_some(())
    });
}

#[test]
fn init_warns_when_it_keeps_a_ca_that_expires_soon() {
    let root = paths::scratch_dir("ca-expiry-init");
    let etc = root.path().join("etc/iron-proxy");
    let (_ca, not_after) = TestCa::expiring_in("soon", &etc, 10 * DAY);
    let out = process::run_with_timeout(
        "iron-proxy init",
        Command::new(paths::iron_proxy_bin())
            .arg("init")
            .arg("-root")
            .arg(root.path())
            .args(["-allow", "a.test", "-no-start"]),
        Duration::from_secs(30),
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.exit, 0, "{stdout}{stderr}");
    assert!(stdout.contains("kept existing CA"), "{stdout}");
    let want = format!(
        "iron-proxy init: warning: the CA certificate {} expires on {} (in 9 days)",
        etc.join("ca.crt").display(),
        date(not_after)
    );
    assert!(
        stderr.lines().any(|l| l.starts_with(&want)) && stderr.contains("-force"),
        "no line starting {want:?}:\n{stderr}"
    );
}
