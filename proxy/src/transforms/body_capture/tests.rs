use std::io::Write;

use super::*;
use crate::body::decode::test_streams::brotli_stored;
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
    run(&t, req(b"x".to_vec(), Some("compress")), &mut cx).await;
    assert!(cx.annotations_mut()["body_capture_error"]
        .as_str()
        .is_some_and(|e| e.contains("unsupported content-encoding \"compress\"")));
    let mut cx = flow("POST");
    run(&t, req(b"x".to_vec(), Some("zstd")), &mut cx).await;
    assert!(cx.annotations_mut()["body_capture_error"]
        .as_str()
        .is_some_and(|e| e.contains("zstd frame 1")));
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

/// Made by the zstd CLI (v1.5.4), see `fixtures/README.md`.
mod zstd_fixtures {
    pub const HELLO: &[u8] = include_bytes!("fixtures/hello.zst");
    pub const FRAMES: &[u8] = include_bytes!("fixtures/frames.zst");
    pub const GZIP_ZSTD: &[u8] = include_bytes!("fixtures/gzip-zstd.zst");
    pub const BOMB: &[u8] = include_bytes!("fixtures/bomb.zst");
    pub const WINDOW_2GIB: &[u8] = include_bytes!("fixtures/window31.zst");
}

#[tokio::test]
async fn zstd_bodies_are_captured_decoded() {
    let t = BodyCapture::new(&cfg(16_384));
    let mut cx = flow("POST");
    run(
        &t,
        req(zstd_fixtures::HELLO.to_vec(), Some("zstd")),
        &mut cx,
    )
    .await;
    let notes = cx.annotations_mut().clone();
    assert_eq!(
        cx.audit_extra["body_capture"],
        json!({"request_body": "hello compressed world"}),
        "{notes:?}"
    );
}

#[test]
fn zstd_frames_skippable_frames_and_stacked_codings_decode() {
    // Two frames with checksums and a skippable frame between them.
    assert_eq!(
        super::decode(zstd_fixtures::FRAMES, "zstd", 100).expect("frames"),
        b"hello compressed world"
    );
    // gzip applied first, then zstd.
    assert_eq!(
        super::decode(zstd_fixtures::GZIP_ZSTD, "gzip, zstd", 100).expect("stacked"),
        b"hello compressed world"
    );
    // And zstd inside gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(zstd_fixtures::HELLO).expect("gzip");
    let outer = gz.finish().expect("gzip");
    assert_eq!(
        super::decode(&outer, "zstd, gzip", 100).expect("stacked"),
        b"hello compressed world"
    );
}

#[test]
fn a_zstd_bomb_stops_at_the_cap() {
    // 256 MiB of zeros in 8 KiB (2 MiB window), cut in half: decoding it whole
    // would end in an error some 128 MiB in.
    let body = &zstd_fixtures::BOMB[..zstd_fixtures::BOMB.len() / 2];
    let out = super::decode(body, "zstd", 64 << 10).expect("stops at the cap");
    assert_eq!(out.len(), (64 << 10) + 1);
    assert!(out.iter().all(|&b| b == 0));
    // Stacked under gzip, the inner layer is read only as far as needed too.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body).expect("gzip");
    let outer = gz.finish().expect("gzip");
    let out = super::decode(&outer, "zstd, gzip", 64 << 10).expect("stops at the cap");
    assert_eq!(out.len(), (64 << 10) + 1);
}

#[test]
fn a_zstd_window_over_8_mib_is_refused_from_the_header() {
    // The CLI's --long=31: a 2 GiB window for a 17-byte content.
    let e = super::decode(zstd_fixtures::WINDOW_2GIB, "zstd", 100).expect_err("refused");
    assert!(
        e.contains("zstd") && e.contains("2147483648-byte window"),
        "{e}"
    );
    // A single-segment frame: the window is the declared content size, 1 TiB.
    let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD, 0xE0];
    frame.extend_from_slice(&(1u64 << 40).to_le_bytes());
    frame.extend_from_slice(&[0x29, 0, 0]); // last raw block of 5 bytes
    frame.extend_from_slice(b"hello");
    let e = super::decode(&frame, "zstd", 100).expect_err("refused");
    assert!(e.contains("1099511627776-byte window"), "{e}");
    // The largest window the format can say (3.75 TiB).
    let e = super::decode(&[0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xFF], "zstd", 100).expect_err("refused");
    assert!(e.contains("-byte window"), "{e}");
    // A small window but a huge declared content size is decoded as it comes
    // (nothing is sized by the declaration), and the lie is caught at the end.
    let mut frame = vec![0x28, 0xB5, 0x2F, 0xFD, 0xC0, 0x00];
    frame.extend_from_slice(&(1u64 << 62).to_le_bytes());
    frame.extend_from_slice(&[0x29, 0, 0]);
    frame.extend_from_slice(b"hello");
    assert_eq!(super::decode(&frame, "zstd", 3).expect("capped"), b"hell");
    let e = super::decode(&frame, "zstd", 100).expect_err("content size");
    assert!(e.contains("declares 4611686018427387904 bytes"), "{e}");
}

#[test]
fn corrupt_zstd_is_an_error_naming_it() {
    let mut bad = zstd_fixtures::HELLO.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xFF; // the checksum
    let e = super::decode(&bad, "zstd", 100).expect_err("checksum");
    assert!(e.contains("zstd frame 1: checksum mismatch"), "{e}");
    let e = super::decode(b"not zstd", "zstd", 100).expect_err("magic");
    assert!(e.contains("zstd frame 1: no zstd magic number"), "{e}");
    let mut trailing = zstd_fixtures::HELLO.to_vec();
    trailing.extend_from_slice(b"junk");
    let e = super::decode(&trailing, "zstd", 100).expect_err("trailing");
    assert!(e.contains("zstd frame 2: no zstd magic number"), "{e}");
    let cut = &zstd_fixtures::FRAMES[..zstd_fixtures::FRAMES.len() - 3];
    assert!(super::decode(cut, "zstd", 100).is_err());
    // A skippable frame longer than the body.
    let e =
        super::decode(b"\x50\x2a\x4d\x18\xff\x00\x00\x00ab", "zstd", 100).expect_err("skippable");
    assert!(e.contains("skippable frame 1 is cut short"), "{e}");
}

proptest::proptest! {
    /// Damaged zstd (bytes flipped, cut anywhere) is an error or decodes: never a panic.
    #[test]
    fn damaged_zstd_never_panics(
        which in 0usize..3,
        flips in proptest::collection::vec((0usize..4096, 1u8..=255), 1..4),
        cut in 0usize..4096,
    ) {
        let base = [zstd_fixtures::HELLO, zstd_fixtures::FRAMES, &zstd_fixtures::BOMB[..512]][which];
        let mut body = base.to_vec();
        for (at, x) in flips {
            let n = body.len();
            body[at % n] ^= x;
        }
        body.truncate(cut.max(1));
        let _ = super::decode(&body, "zstd", 4096);
    }
}

/// Found by session 48's review: a `Content-Encoding` of thousands of `br`
/// built a reader per coding, each over the next, and the first read
/// recursed through all of them (a stack overflow aborts the process); a
/// layer of empty gzip members over another inflated megabytes without
/// output, the cap never reached.
#[test]
fn too_many_codings_and_layers_that_make_nothing_are_refused() {
    let many = vec!["br"; 20_000].join(",");
    let e = decode(b"x", &many, 1024).expect_err("refused");
    assert!(e.contains("20000 content codings stacked"), "{e}");
    let bomb = crate::body::decode::test_streams::empty_member_bomb(200_000);
    let e = decode(&bomb, "gzip, gzip", 1 << 20).expect_err("refused");
    assert!(e.contains("the gzip layer read"), "{e}");
    let real = crate::body::decode::test_streams::gzip(&crate::body::decode::test_streams::gzip(
        &b"stacked ".repeat(100_000),
    ));
    assert_eq!(
        decode(&real, "gzip, gzip", 1 << 20).expect("decodes"),
        b"stacked ".repeat(100_000)
    );
}
