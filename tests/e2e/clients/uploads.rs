//! An answer that comes while the client is still uploading (the proxy's refusal, an upstream
//! that answers before reading the body, an upstream that cannot be reached) reaches the
//! client as that answer, over HTTP/2 as over HTTP/1.1. Over HTTP/2 the proxy used to reset
//! the stream once it had answered, and curl 7 (libcurl before 8, so git too) fails a
//! transfer whose stream is reset while it is still uploading, whatever the reset's code:
//! curl said "Stream error in the HTTP/2 framing layer" and showed no status, git "RPC
//! failed; curl 92" and then "Everything up-to-date". The proxy now reads the rest of the
//! upload after answering (`body::BodyPark`).

use super::*;

const TRANSFORMS: &str = r#"
  - name: allowlist
    config:
      rules:
        - host: "up.test"
          paths: ["/early/*", "/echo/*"]
        - host: "gone.test"
"#;

/// Upload size: far more than the proxy reads of a body it does not forward, and than the
/// HTTP/2 windows hold.
const UPLOAD: usize = 3 << 20;

fn early_answers(via: Via) {
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &["up.test"]);
    let px = Px::start(&net, TRANSFORMS);
    let work = tempfile::tempdir().expect("upload dir");
    let file = work.path().join("upload.bin");
    write(&file, &noise(UPLOAD, 3));

    let cases = [
        // The allowlist refuses the path: the proxy answers.
        (
            "https://up.test/private/upload",
            403,
            "Blocked by iron-proxy policy",
        ),
        // The origin answers 401 without reading the upload, and closes.
        (
            "https://up.test/early/upload",
            401,
            "answered before the upload",
        ),
        // The name does not resolve: the proxy answers 502.
        ("https://gone.test/upload", 502, "gone.test"),
    ];
    for version in ["--http2", "--http1.1"] {
        for (url, status, says) in cases {
            let mut cmd = px.command(via, &["up.test", "gone.test"], "curl");
            cmd.args(["-sS", version, "--cacert", px.ca(), "-T"])
                .arg(&file)
                .args(["-w", "\n%{http_code}", url]);
            if via == Via::Connect {
                cmd.args(["-x", &px.proxy_url()]);
            }
            let out = run(&mut cmd);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                (out.exit, stdout.lines().last()),
                (0, Some(status.to_string().as_str())),
                "{version} {url}: the client gets the answer:\n{}",
                text(&out)
            );
            assert!(stdout.contains(says), "{version} {url}:\n{}", text(&out));
            let path = url.split_once(".test").map_or("", |(_, p)| p);
            let rec = px.wait_for_audit(|a| a.path() == Some(path));
            assert_eq!(rec.status_code(), Some(status), "{rec}");
        }
    }
    // Each case was audited once per protocol.
    for (url, _, _) in cases {
        let path = url.split_once(".test").map_or("", |(_, p)| p);
        let n = px.audit().iter().filter(|a| a.path() == Some(path)).count();
        assert_eq!(n, 2, "{url}: one record per request");
    }
    origin.assert_never("/private/upload");
}

#[test]
fn an_answer_before_the_upload_ends_reaches_the_client_through_connect() {
    require_root!();
    early_answers(Via::Connect);
}

#[test]
fn an_answer_before_the_upload_ends_reaches_the_client_through_https_listen() {
    require_root!();
    early_answers(Via::HttpsListen);
}
