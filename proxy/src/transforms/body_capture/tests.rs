use std::io::Write;

use super::*;
use crate::pipeline::{BufferedBody, Dest};

fn cfg(max: u64) -> BodyCaptureConfig {
    BodyCaptureConfig {
        max_request_body_bytes: max,
        rules: Scope(
            serde_yaml_ng::from_str("[{host: api.anthropic.com, methods: [POST]}]").expect("rules"),
        ),
    }
}

fn flow(method: &str) -> Flow {
    Flow::new(
        Dest {
            host: "api.anthropic.com".into(),
            ip: None,
            port: 443,
            tls: true,
        },
        method.into(),
        "/v1/messages".into(),
    )
}

fn req(body: Vec<u8>, encoding: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method("POST");
    if let Some(e) = encoding {
        b = b.header("content-encoding", e);
    }
    let mut r = b.body(crate::body::full(body.clone())).expect("request");
    r.extensions_mut().insert(BufferedBody(body.into()));
    r
}

async fn run(t: &BodyCapture, mut r: Request<Body>, cx: &mut Flow) {
    assert!(matches!(
        t.on_request(&mut r, cx).await,
        Ok(Verdict::Continue)
    ));
}

#[tokio::test]
async fn records_plain_body() {
    let t = BodyCapture::new(&cfg(16_384));
    let mut cx = flow("POST");
    run(&t, req(b"{\"prompt\":\"hi\"}".to_vec(), None), &mut cx).await;
    assert_eq!(
        cx.audit_extra["body_capture"],
        json!({"request_body": "{\"prompt\":\"hi\"}"})
    );
    assert_eq!(cx.annotations_mut()["truncated"], false);
}

#[tokio::test]
async fn truncates_on_char_boundary() {
    let t = BodyCapture::new(&cfg(5));
    let mut cx = flow("POST");
    run(&t, req("abcdé and more".as_bytes().to_vec(), None), &mut cx).await;
    // 'é' is 2 bytes at offsets 4..6: a 5-byte cut would split it.
    assert_eq!(
        cx.audit_extra["body_capture"],
        json!({"request_body": "abcd", "request_body_truncated": true})
    );
}

#[tokio::test]
async fn decodes_gzip_deflate_and_brotli() {
    let text = b"hello compressed world".to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&text).expect("gzip");
    let gz = gz.finish().expect("gzip");
    let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zl.write_all(&text).expect("zlib");
    let zl = zl.finish().expect("zlib");
    // A brotli stream of "hello compressed world", made with `brotli -c`.
    let br: Vec<u8> = vec![
        0x0b, 0x0a, 0x80, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x63, 0x6f, 0x6d, 0x70, 0x72, 0x65,
        0x73, 0x73, 0x65, 0x64, 0x20, 0x77, 0x6f, 0x72, 0x6c, 0x64, 0x03,
    ];
    for (body, enc) in [(gz, "gzip"), (zl, "deflate"), (br, "br")] {
        let t = BodyCapture::new(&cfg(16_384));
        let mut cx = flow("POST");
        run(&t, req(body, Some(enc)), &mut cx).await;
        assert_eq!(
            cx.audit_extra["body_capture"]["request_body"],
            "hello compressed world",
            "{enc}: {:?}",
            cx.annotations_mut()
        );
    }
}

#[tokio::test]
async fn undecodable_is_annotated_not_rejected() {
    let t = BodyCapture::new(&cfg(16_384));
    let mut cx = flow("POST");
    run(&t, req(b"not gzip".to_vec(), Some("gzip")), &mut cx).await;
    assert!(cx.audit_extra.is_empty());
    assert!(cx.annotations_mut()["body_capture_error"]
        .as_str()
        .is_some_and(|e| e.contains("gzip")));
    let mut cx = flow("POST");
    run(&t, req(b"x".to_vec(), Some("zstd")), &mut cx).await;
    assert!(cx.annotations_mut()["body_capture_error"]
        .as_str()
        .is_some_and(|e| e.contains("zstd")));
}

#[test]
fn buffers_only_matching_requests() {
    let t = BodyCapture::new(&cfg(16));
    let (parts, _) = Request::new(()).into_parts();
    assert!(t.wants_request_body(&flow("POST"), &parts));
    assert!(!t.wants_request_body(&flow("GET"), &parts));
}
