use super::*;

const SAMPLE: &str = r#"2026-06-01T00:00:00Z  INFO iron_proxy: ready version=0.1.0
{"time":"2026-06-01T00:00:01Z","level":"INFO","host":"registry.npmjs.org","method":"GET","path":"/react/-/react-18.2.0.tgz","action":"allow","status_code":200,"duration_ms":12,"request_transforms":[{"name":"allowlist","action":"continue"}]}
{"time":"2026-06-01T00:00:02Z","level":"INFO","host":"registry.npmjs.org","method":"GET","path":"/react","action":"allow","status_code":200,"duration_ms":12,"request_transforms":[{"name":"allowlist","action":"continue"}]}
{"time":"2026-06-01T00:00:03Z","level":"INFO","host":"evil.example","method":"POST","path":"/upload/a/b","action":"allow","status_code":200,"duration_ms":5,"request_transforms":[{"name":"allowlist","action":"continue","annotations":{"action":"warn","reason":"not_allowlisted"}}]}
{"time":"2026-06-01T00:00:04Z","level":"WARN","host":"blocked.example","method":"GET","path":"/","action":"reject","status_code":403,"duration_ms":1,"rejected_by":"allowlist","reason":"not_allowlisted","request_transforms":[{"name":"allowlist","action":"reject"}]}
{"time":"2026-06-01T00:00:05Z","level":"WARN","host":"fronted.example","method":"GET","path":"/","action":"reject","status_code":421,"duration_ms":1,"reason":"host_mismatch","request_transforms":[]}
{"time":"2026-06-01T00:00:06Z","level":"ERROR","host":"registry.npmjs.org","method":"GET","path":"/x","action":"error","status_code":502,"duration_ms":1,"reason":"connect_failed","request_transforms":[]}
{"time":"2026-06-01T00:00:07Z","level":"WARN","host":"10.1.2.3","method":"","path":"","action":"reject","status_code":403,"duration_ms":1,"reason":"not_allowlisted","request_transforms":[]}
not json at all {
{"msg":"a json line without action"}
"#;

fn sample(full: bool) -> Summary {
    let mut s = Summary::new(full);
    s.read(SAMPLE.as_bytes()).expect("reading from memory");
    s
}

#[test]
fn counts_per_host() {
    let s = sample(false);
    assert_eq!(s.records, 7);
    assert_eq!(s.skipped, 3);
    let npm = &s.hosts["registry.npmjs.org"].counts;
    assert_eq!(
        (npm.total, npm.allowed, npm.warned, npm.denied),
        (3, 2, 0, 0)
    );
    let evil = &s.hosts["evil.example"].counts;
    assert_eq!(
        (evil.total, evil.allowed, evil.warned, evil.denied),
        (1, 0, 1, 0)
    );
    let blocked = &s.hosts["blocked.example"].counts;
    assert_eq!((blocked.total, blocked.denied), (1, 1));
}

#[test]
fn markdown_table_and_details() {
    let md = sample(false).to_markdown(STEP_SUMMARY_LIMIT);
    assert!(
        md.contains("| HOST | TOTAL | ALLOWED | WARNED | DENIED |"),
        "{md}"
    );
    assert!(
        md.contains("| `registry.npmjs.org` | 3 | 2 | 0 | 0 |"),
        "{md}"
    );
    assert!(md.contains("| `evil.example` | 1 | 0 | 1 | 0 |"), "{md}");
    // No per-path breakdown unless asked for (spec: show-full-paths, default false).
    assert!(!md.contains("<details>"), "{md}");
    assert!(!md.contains("/upload"), "{md}");
    assert!(
        md.contains("_Request paths are not listed: set `show-full-paths: true`"),
        "{md}"
    );
    assert!(md.contains("1 request(s) failed upstream"), "{md}");
    // Hosts with warned/denied requests come first.
    let first = md.find("`evil.example`").expect("evil listed");
    let npm = md.find("`registry.npmjs.org`").expect("npm listed");
    assert!(
        first < npm,
        "warned hosts must sort before clean ones:\n{md}"
    );
}

#[test]
fn full_paths_in_a_collapsible_section() {
    let md = sample(true).to_markdown(STEP_SUMMARY_LIMIT);
    assert!(
        md.contains("<details><summary>Requests by path</summary>") && md.contains("</details>"),
        "{md}"
    );
    assert!(
        md.contains("| `registry.npmjs.org` | `/react/-/react-18.2.0.tgz` | 1 | 1 | 0 | 0 |"),
        "{md}"
    );
    assert!(md.contains("`/upload/a/b`"), "{md}");
    assert!(md.contains("| `10.1.2.3` | `(connection)` |"), "{md}");
    assert!(!md.contains("Request paths are not listed"), "{md}");
}

#[test]
fn untrusted_hosts_cannot_inject_markdown() {
    let mut s = Summary::new(true);
    let line = r#"{"host":"x|y`<img src=q>","path":"/a|b</details>","action":"reject","reason":"not_allowlisted"}"#;
    assert!(s.add_line(line));
    let md = s.to_markdown(STEP_SUMMARY_LIMIT);
    assert!(!md.contains("<img"), "{md}");
    assert!(!md.contains("a|b"), "{md}");
    assert_eq!(md.matches("</details>").count(), 1, "{md}");
    assert!(md.contains("`x%7Cy%60%3Cimg%20src=q%3E`"), "{md}");
    // Not a hostname: never suggested.
    assert!(!s.suggested_rules("log").contains("img"));
}

#[test]
fn stays_under_the_limit() {
    let mut s = Summary::new(true);
    for i in 0..40_000 {
        let line = format!(
            r#"{{"host":"h{i}.example.com","path":"/p/{i}/{}","action":"allow"}}"#,
            "x".repeat(40)
        );
        s.add_line(&line);
    }
    let md = s.to_markdown(STEP_SUMMARY_LIMIT);
    assert!(md.len() <= STEP_SUMMARY_LIMIT, "{} bytes", md.len());
    assert!(md.contains("not shown: the step summary is limited to 1 MiB"));
    let small = s.to_markdown(4096);
    assert!(small.len() <= 4096);
    assert!(small.contains("more host(s) not shown"), "{small}");
}

#[test]
fn empty_log() {
    let s = Summary::new(false);
    assert!(s
        .to_markdown(STEP_SUMMARY_LIMIT)
        .contains("No requests were recorded"));
}

#[test]
fn suggested_rules_cover_warned_and_denied() {
    let rules = sample(false).suggested_rules("/var/log/iron-proxy.log");
    assert!(rules.contains("  - \"evil.example\"\n"), "{rules}");
    assert!(rules.contains("  - \"blocked.example\"\n"), "{rules}");
    assert!(rules.contains("cidrs:\n  - \"10.1.2.3/32\"\n"), "{rules}");
    // Allowed hosts and non-allowlist refusals (domain fronting) are not suggested.
    assert!(!rules.contains("registry.npmjs.org"), "{rules}");
    assert!(!rules.contains("fronted.example"), "{rules}");
    let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules).expect("valid YAML");
    assert_eq!(parsed["domains"].as_sequence().map(Vec::len), Some(2));
}

#[test]
fn run_appends_to_step_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("audit.log");
    std::fs::write(&log, SAMPLE).expect("write log");
    let summary_file = dir.path().join("summary.md");
    std::fs::write(&summary_file, "previous step\n").expect("write summary");
    let rules = dir.path().join("egress-rules.yaml");
    // The variable is process-wide; this is the only test that sets it.
    std::env::set_var("GITHUB_STEP_SUMMARY", &summary_file);
    let n = run(&log, false, Some(&rules)).expect("summary runs");
    std::env::remove_var("GITHUB_STEP_SUMMARY");
    assert_eq!(n, 7);
    let text = std::fs::read_to_string(&summary_file).expect("read summary");
    assert!(
        text.starts_with("previous step\n## iron-proxy egress summary"),
        "{text}"
    );
    assert!(std::fs::read_to_string(&rules)
        .expect("rules")
        .contains("evil.example"));
    let missing = run(&dir.path().join("nope.log"), false, None);
    assert!(matches!(missing, Err(SummaryError::ReadLog { .. })));
}

/// A line longer than the cap is skipped as it is read (memory stays at
/// the cap: `--log-file` once grew to 4 GB reading a log with no newline)
/// and counted, the lines around it read as ever; the summary says how many
/// were skipped. A last line without a newline is read too.
#[test]
fn an_over_long_line_is_skipped_and_counted() {
    let record = SAMPLE.lines().nth(1).expect("a record line");
    let cap = record.len();
    let long = format!("{{\"pad\":\"{}\"}}", "x".repeat(cap));
    let log = format!("{record}\n{long}\n{record}\n{}\n{record}", "y".repeat(cap));
    let mut s = Summary::new(false);
    s.read_capped(std::io::BufReader::with_capacity(7, log.as_bytes()), cap)
        .expect("reading from memory");
    assert_eq!((s.records, s.oversized, s.skipped), (3, 1, 1));
    let md = s.to_markdown(STEP_SUMMARY_LIMIT);
    assert!(
        md.contains("_1 line(s) of the log were longer than 16 MiB and were skipped unparsed"),
        "{md}"
    );
    // A log with no newline at all: one over-long line, nothing kept.
    let mut s = Summary::new(false);
    let endless = std::io::Read::take(std::io::repeat(b'x'), 10_000);
    s.read_capped(std::io::BufReader::with_capacity(7, endless), 64)
        .expect("reading from memory");
    assert_eq!((s.records, s.oversized, s.skipped), (0, 1, 0));
    assert!(!sample(false)
        .to_markdown(STEP_SUMMARY_LIMIT)
        .contains("skipped unparsed"));
}

/// `--log-file` names a regular file: a FIFO is refused at once (it would
/// wait for a writer for ever), a device such as `/dev/zero` (endless) too,
/// each named by its type.
#[test]
fn a_log_that_is_not_a_regular_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("audit.log");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    for (path, kind) in [
        (fifo.as_path(), "a FIFO (named pipe)"),
        (Path::new("/dev/zero"), "a character device"),
    ] {
        let e = run(path, false, None).expect_err("not a regular file");
        assert!(matches!(e, SummaryError::ReadLog { .. }), "{e:?}");
        assert_eq!(
            crate::error_chain(&e),
            format!(
                "reading audit log {}: it is {kind}, not a regular file",
                path.display()
            )
        );
    }
}
