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
    let br = brotli_stored(&text);
    for (body, enc) in [(gz, "gzip"), (zl, "deflate"), (br, "br")] {
        let t = BodyCapture::new(&cfg(16_384));
        let mut cx = flow("POST");
        run(&t, req(body, Some(enc)), &mut cx).await;
        let notes = cx.annotations_mut().clone();
        assert_eq!(
            cx.audit_extra["body_capture"]["request_body"], "hello compressed world",
            "{enc}: {notes:?}"
        );
    }
}

#[test]
fn raw_deflate_and_stacked_codings_decode() {
    let text = b"hello compressed world".to_vec();
    let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    raw.write_all(&text).expect("deflate");
    let raw = raw.finish().expect("deflate");
    assert_eq!(
        super::decode(&raw, "deflate", 100).expect("raw deflate"),
        text
    );
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&raw).expect("gzip");
    let stacked = gz.finish().expect("gzip");
    assert_eq!(
        super::decode(&stacked, "deflate, gzip", 100).expect("stacked"),
        text
    );
}

#[test]
fn every_layer_is_decoded_only_as_far_as_the_cap() {
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(data).expect("gzip");
        gz.finish().expect("gzip")
    }
    // 4 MiB that does not compress, gzipped twice; the outer stream is cut in
    // half, so undoing the outer layer whole ends in an error 2 MiB in.
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    let noise: Vec<u8> = (0..4 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let mut body = gzip(&gzip(&noise));
    body.truncate(body.len() / 2);
    // Each layer is read only as far as the next needs: decoding stops one byte
    // past the cap, long before the cut.
    let out = super::decode(&body, "gzip, gzip", 64 << 10).expect("stops at the cap");
    assert_eq!(out, noise[..(64 << 10) + 1]);
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
fn reads_a_prefix_of_plain_bodies_and_buffers_encoded_ones() {
    let t = BodyCapture::new(&cfg(16));
    let (parts, _) = Request::new(()).into_parts();
    assert_eq!(t.request_body_prefix(&flow("POST"), &parts), Some(17));
    assert!(!t.wants_request_body(&flow("POST"), &parts));
    assert_eq!(t.request_body_prefix(&flow("GET"), &parts), None);
    assert!(!t.wants_request_body(&flow("GET"), &parts));
    let (gz, _) = Request::builder()
        .header("content-encoding", "gzip")
        .body(())
        .expect("request")
        .into_parts();
    assert!(t.wants_request_body(&flow("POST"), &gz));
    assert_eq!(t.request_body_prefix(&flow("POST"), &gz), None);
    let (id, _) = Request::builder()
        .header("content-encoding", "identity")
        .body(())
        .expect("request")
        .into_parts();
    assert_eq!(t.request_body_prefix(&flow("POST"), &id), Some(17));
}

/// A brotli stream holding `data` in one uncompressed meta-block (RFC 7932 §9.2).
fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    let mut bits: Vec<u8> = vec![0]; // WBITS = 16
    bits.push(0); // ISLAST = 0
    bits.extend([0, 0]); // MNIBBLES = 4
    let mlen = data.len() - 1;
    bits.extend((0..16).map(|i| ((mlen >> i) & 1) as u8));
    bits.push(1); // ISUNCOMPRESSED
    let mut out = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        out[i / 8] |= b << (i % 8);
    }
    out.extend_from_slice(data);
    out.push(0b11); // ISLAST, ISLASTEMPTY
    out
}
