//! An answer that comes while the client is still uploading (the proxy's refusal, an upstream
//! that answers before reading the body, an upstream that cannot be reached) reaches the
//! client as that answer, over HTTP/2 as over HTTP/1.1. Over HTTP/2 the proxy used to reset
//! the stream once it had answered, and curl 7 (libcurl before 8, so git too) fails a
//! transfer whose stream is reset while it is still uploading, whatever the reset's code:
//! curl said "Stream error in the HTTP/2 framing layer" and showed no status, git "RPC
//! failed; curl 92" and then "Everything up-to-date". The proxy now reads the rest of the
//! upload before it ends its answer (`body::BodyPark`), and sends a small early answer's head
//! together with its body (`body::gather_small`). An upload of unknown length goes through
//! whole, as chunks to the origin, over both protocols.

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
    let px = Px::start_for(&net, via, TRANSFORMS);
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
        // The origin sends the 401's head, then its body 0.1 s later. curl gives up its
        // HTTP/2 upload on seeing the head and ends the stream short of its content-length,
        // which h2 resets at once (PROTOCOL_ERROR, curl 92): the body would be lost. The
        // proxy holds a small early answer's head until its body is there (up to 0.5 s,
        // `body::gather_small`); without that this case fails every time.
        (
            "https://up.test/early/slow",
            401,
            "answered before the upload",
        ),
        // The name does not resolve: the proxy answers 502.
        ("https://gone.test/upload", 502, "gone.test"),
    ];
    for (round, version) in ["--http2", "--http1.1"].into_iter().enumerate() {
        for (url, status, says) in cases {
            let mut cmd = px.command(via, &["up.test", "gone.test"], "curl");
            cmd.args(["-sS", version, "--cacert"])
                .arg(px.client_ca())
                .arg("-T")
                .arg(&file)
                .args(["-w", "\n%{http_code}", url]);
            if via == Via::Connect {
                cmd.args(["-x", &px.proxy_url()]);
            }
            let out = run(&mut cmd);
            let stdout = String::from_utf8_lossy(&out.stdout);
            let path = url.split_once(".test").map_or("", |(_, p)| p);
            let status_text = status.to_string();
            if (out.exit, stdout.lines().last()) != (0, Some(status_text.as_str())) {
                // What the proxy made of it: the record may trail the client by a moment.
                std::thread::sleep(Duration::from_secs(1));
                let audit = px.audit();
                let recs: Vec<String> = audit
                    .iter()
                    .filter(|a| a.path() == Some(path))
                    .map(|a| a.to_string())
                    .collect();
                panic!(
                    "{version} {url}: the client gets the answer {status} and exits 0:\n{}\nrecords of {path} so far:\n{}",
                    text(&out),
                    recs.join("\n")
                );
            }
            assert!(stdout.contains(says), "{version} {url}:\n{}", text(&out));
            // This round's record (the client may exit before the proxy writes it).
            let rec = wait_until(Duration::from_secs(10), "the request's record", || {
                let audit = px.audit();
                let recs: Vec<&AuditRecord> =
                    audit.iter().filter(|a| a.path() == Some(path)).collect();
                recs.get(round).map(|r| (*r).clone())
            });
            assert_eq!(rec.status_code(), Some(status), "{rec}");
        }
    }
    // Each case was audited once per protocol.
    for (url, _, _) in cases {
        let path = url.split_once(".test").map_or("", |(_, p)| p);
        let n = px.audit().iter().filter(|a| a.path() == Some(path)).count();
        assert_eq!(n, 2, "{url}: one record per request");
    }

    // An upload of unknown length (curl reading a pipe: DATA frames and no content-length
    // over HTTP/2, chunks over HTTP/1.1) reaches the origin whole, as chunks: more than the
    // HTTP/2 windows hold, so the client waits for the proxy's window updates on the way.
    let sum = ok(run(Command::new("sha256sum").arg(&file)));
    let sha256 = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    for (version, spoken) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let mut cmd = px.command(via, &["up.test"], "sh");
        cmd.args(["-c", r#"exec curl "$@" < "$0""#])
            .arg(&file)
            .args(["-sS", "--fail-with-body", version, "--cacert"])
            .arg(px.client_ca())
            .args(["-T", "-", "-w", "\n%{http_version}"])
            .arg("https://up.test/echo/streamed");
        if via == Via::Connect {
            cmd.args(["-x", &px.proxy_url()]);
        }
        let out = ok(run(&mut cmd));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let (body, used) = stdout.rsplit_once('\n').unwrap_or_default();
        assert_eq!(used, spoken, "{version}: {}", text(&out));
        let echo: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("{version}: the origin's echo ({e}):\n{}", text(&out)));
        assert_eq!(echo["len"], UPLOAD, "{version}: {echo}");
        assert_eq!(
            echo["sha256"].as_str(),
            Some(sha256.as_str()),
            "{version}: {echo}"
        );
        assert_eq!(echo["transfer_encoding"], "chunked", "{version}: {echo}");
        assert_eq!(echo["content_length"], Value::Null, "{version}: {echo}");
    }

    // httpx over HTTP/2 (it used to wait for flow-control credit until its read timed out),
    // and undici's HTTP/2 (it fails a response that ends while it is still uploading).
    let proxy = match via {
        Via::Connect => px.proxy_url(),
        Via::HttpsListen | Via::Transparent { .. } => String::new(),
    };
    let mut cmd = px.command(via, &["up.test"], paths::venv_python());
    cmd.arg("-c").arg(HTTPX).arg(px.client_ca()).arg(&proxy);
    let out = ok(run(&mut cmd));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "/private/httpx HTTP/2 403 Blocked by iron-proxy policy\n/early/httpx HTTP/2 401 answered before the upload",
        "{}",
        text(&out)
    );
    let mut cmd = px.command(via, &["up.test"], "node");
    cmd.arg("-e")
        .arg(UNDICI)
        .arg(&proxy)
        .env("NODE_EXTRA_CA_CERTS", px.client_ca())
        .env("NODE_PATH", paths::node_modules())
        .env("NODE_NO_WARNINGS", "1");
    let out = ok(run(&mut cmd));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "403 Blocked by iron-proxy policy",
        "{}",
        text(&out)
    );
    for path in ["/private/upload", "/private/httpx", "/private/undici"] {
        origin.assert_never(path);
    }
}

/// httpx, HTTP/2 only: an upload the proxy refuses and one the origin answers early.
/// Arguments: the CA file, the CONNECT proxy URL (empty: none).
const HTTPX: &str = r#"
import os, sys, httpx
ca, proxy = sys.argv[1], sys.argv[2] or None
with httpx.Client(http1=False, http2=True, verify=ca, proxy=proxy, timeout=20) as c:
    for p in ["/private/httpx", "/early/httpx"]:
        r = c.post("https://up.test" + p, content=os.urandom(3 << 20))
        print(p, r.http_version, r.status_code, r.text.splitlines()[0].split(":")[0])
"#;

/// undici with HTTP/2 allowed: an upload the proxy refuses. Argument: the CONNECT proxy URL
/// (empty: none). (An upload the origin answers early is left out: undici fails it when the
/// upstream connection lets go of the upload only after the answer has ended.)
const UNDICI: &str = r#"
const undici = require("undici");
const proxy = process.argv[1];
const dispatcher = proxy
  ? new undici.ProxyAgent({ uri: proxy, allowH2: true })
  : new undici.Agent({ allowH2: true });
(async () => {
  const body = require("crypto").randomBytes(3 << 20);
  const r = await undici.fetch("https://up.test/private/undici", { dispatcher, method: "POST", body });
  console.log(r.status, (await r.text()).split(":")[0]);
  await dispatcher.close();
})().catch((e) => {
  const c = [];
  for (let x = e; x; x = x.cause) c.push(String(x));
  console.error(c.join(" <- "));
  process.exit(1);
});
"#;

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

#[test]
fn an_answer_before_the_upload_ends_reaches_the_client_under_transparent_interception() {
    require_root!();
    early_answers(TRANSPARENT);
}
