//! What a workload can make the proxy write to its audit log: the strings it chooses (a path,
//! a header value `annotate` records) are cut at the documented bound and the record says
//! which were; an ordinary record is written as it was.

use iron_proxy_tests::*;
use serde_json::json;

/// `annotate` records the User-Agent; the allowlist refuses every host, so each request is a
/// 403 with its record and no upstream is needed.
const CONFIG: &str = r#"
transforms:
  - name: annotate
    config:
      annotations:
        - rules:
            - host: "*"
          headers: ["user-agent"]
  - name: allowlist
    config:
      domains: ["allowed.test"]
"#;

/// The bound of `docs/audit-log.md` ("Bounded fields").
const MAX_FIELD_BYTES: usize = 4096;

/// A 60 KB path and a 60 KB User-Agent from curl: the record carries the first 4,096 bytes of
/// each, valid JSON, and `truncated` names both. Before, the record held all 120 KB: a workload
/// repeating the request filled the audit disk 200 times faster than ordinary requests do.
#[test]
fn a_long_path_and_header_are_cut_in_the_record_and_marked() {
    require_root!();
    let px = Proxy::with(CONFIG).start();
    let long_path = format!("/long/{}", "p".repeat(60_000));
    let long_agent = "a".repeat(60_000);
    let r = Curl::get(&format!("http://denied.test{long_path}"))
        .args(["-A", &long_agent])
        .via(&px)
        .run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path().is_some_and(|p| p.starts_with("/long/")));
    let path = rec.path().expect("path");
    assert_eq!(path.len(), MAX_FIELD_BYTES, "the path is cut to the bound");
    assert!(
        long_path.starts_with(path),
        "the path kept is the request's start"
    );
    let agent = rec
        .annotation("annotate", "header:User-Agent")
        .and_then(|v| v.as_str())
        .expect("the annotated User-Agent");
    assert_eq!(agent.len(), MAX_FIELD_BYTES, "{rec}");
    assert_eq!(
        rec.json()["truncated"],
        json!(["path", "request_transforms"]),
        "{rec}"
    );
    assert_eq!(rec.str("reason"), Some("not_allowlisted"), "{rec}");

    // An ordinary request's record is as it always was: no `truncated`, nothing cut.
    let r = Curl::get("http://denied.test/short/path")
        .args(["-A", "curl-e2e"])
        .via(&px)
        .run();
    assert_eq!(r.status, 403, "{r}");
    let rec = px.wait_for_audit(|a| a.path() == Some("/short/path"));
    assert!(rec.json().get("truncated").is_none(), "{rec}");
    assert_eq!(
        rec.annotation("annotate", "header:User-Agent"),
        Some(&json!("curl-e2e")),
        "{rec}"
    );
}
