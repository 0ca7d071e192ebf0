use std::io::Write as _;

use super::test_streams::{brotli_stored, gzip};
use super::*;

const HELLO_ZST: &[u8] = include_bytes!("../../transforms/body_capture/fixtures/hello.zst");
const FRAMES_ZST: &[u8] = include_bytes!("../../transforms/body_capture/fixtures/frames.zst");
const GZIP_ZST: &[u8] = include_bytes!("../../transforms/body_capture/fixtures/gzip-zstd.zst");
const BOMB_ZST: &[u8] = include_bytes!("../../transforms/body_capture/fixtures/bomb.zst");
const WINDOW_ZST: &[u8] = include_bytes!("../../transforms/body_capture/fixtures/window31.zst");

fn decoder(codings: &[&str]) -> Result<Decoder, DecodeError> {
    Decoder::new(&codings.iter().map(|c| c.to_string()).collect::<Vec<_>>())
}

/// `body` decoded, fed `chunk` bytes at a time; every step within [`STEP`].
fn decode_in(codings: &[&str], body: &[u8], chunk: usize) -> Result<Vec<u8>, DecodeError> {
    let mut d = decoder(codings)?;
    let mut chunks = body.chunks(chunk);
    let mut out = Vec::new();
    loop {
        match d.pull()? {
            Step::Data(b) => {
                assert!(!b.is_empty() && b.len() <= STEP, "{} bytes", b.len());
                out.extend_from_slice(&b);
            }
            Step::NeedInput => match chunks.next() {
                Some(c) => d.push(c),
                None => d.end_input(),
            },
            Step::End => return Ok(out),
        }
    }
}

/// A gzip member with a name, a comment and an extra field in its header.
fn gzip_with_fields(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::GzBuilder::new()
        .filename("reflected.json")
        .comment("made for a test")
        .extra(vec![1, 2, 3, 4])
        .write(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

const TEXT: &[u8] = b"{\"headers\":{\"authorization\":\"Bearer sk-real-key-1234567890\"}}\n";

#[test]
fn every_coding_decodes_whatever_the_chunking() {
    let mut two_members = gzip(b"first member, ");
    two_members.extend(gzip(TEXT));
    let cases: Vec<(Vec<&str>, Vec<u8>, Vec<u8>)> = vec![
        (vec!["gzip"], gzip(TEXT), TEXT.to_vec()),
        (vec!["x-gzip"], gzip_with_fields(TEXT), TEXT.to_vec()),
        (
            vec!["gzip"],
            two_members,
            [&b"first member, "[..], TEXT].concat(),
        ),
        (vec!["deflate"], zlib(TEXT), TEXT.to_vec()),
        (vec!["deflate"], raw_deflate(TEXT), TEXT.to_vec()),
        (vec!["br"], brotli_stored(TEXT), TEXT.to_vec()),
        (
            vec!["zstd"],
            HELLO_ZST.to_vec(),
            b"hello compressed world".to_vec(),
        ),
        (
            vec!["zstd"],
            FRAMES_ZST.to_vec(),
            b"hello compressed world".to_vec(),
        ),
        (
            vec!["gzip", "zstd"],
            GZIP_ZST.to_vec(),
            b"hello compressed world".to_vec(),
        ),
        (
            vec!["br", "gzip"],
            gzip(&brotli_stored(TEXT)),
            TEXT.to_vec(),
        ),
    ];
    for (codings, body, want) in &cases {
        for chunk in [1, 2, 3, 7, 64, body.len()] {
            let got = decode_in(codings, body, chunk)
                .unwrap_or_else(|e| panic!("{codings:?} in {chunk}-byte chunks: {e}"));
            assert_eq!(got, *want, "{codings:?} in {chunk}-byte chunks");
        }
    }
}

#[test]
fn one_small_chunk_never_inflates_into_one_large_buffer() {
    // 256 MiB of zeros in 8 KiB of zstd, and 64 MiB of zeros in ~64 KiB of
    // gzip, each pushed whole: every step is at most STEP bytes.
    let zeros = vec![0u8; 64 << 20];
    for (coding, body) in [("zstd", BOMB_ZST.to_vec()), ("gzip", gzip(&zeros))] {
        let mut d = decoder(&[coding]).expect("decoder");
        d.push(&body);
        let mut total = 0usize;
        for _ in 0..64 {
            match d.pull().expect("decodes") {
                Step::Data(b) => {
                    assert!(b.len() <= STEP, "{coding}: {} bytes in one step", b.len());
                    total += b.len();
                }
                other => panic!("{coding}: {other:?} while output is pending"),
            }
        }
        assert!(total > STEP, "{coding}: {total}");
    }
}

#[test]
fn a_cut_or_corrupt_stream_is_an_error_naming_the_coding() {
    let gz = gzip(TEXT);
    let cut = decode_in(&["gzip"], &gz[..gz.len() - 3], 5).expect_err("cut");
    assert!(matches!(cut, DecodeError::Truncated("gzip")), "{cut}");
    let mut bad_crc = gz.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 1;
    let e = decode_in(&["gzip"], &bad_crc, 5).expect_err("crc");
    assert!(e.to_string().contains("CRC-32"), "{e}");
    let e = decode_in(&["gzip"], b"not gzip at all", 5).expect_err("magic");
    assert!(e.to_string().contains("not a gzip header"), "{e}");
    let e = decode_in(&["deflate"], b"\x78\x9c\xff\xff\xff\xff", 2).expect_err("deflate");
    assert!(e.to_string().contains("deflate"), "{e}");
    let e = decode_in(&["br"], &[0xff; 16], 4).expect_err("br");
    assert!(
        matches!(e, DecodeError::Brotli | DecodeError::Truncated("br")),
        "{e}"
    );
    let e = decode_in(&["zstd"], WINDOW_ZST, 4).expect_err("window");
    assert!(e.to_string().contains("8 MiB"), "{e}");
    let zst = &HELLO_ZST[..HELLO_ZST.len() - 2];
    let e = decode_in(&["zstd"], zst, 4).expect_err("cut zstd");
    assert!(matches!(e, DecodeError::Truncated("zstd")), "{e}");
}

#[test]
fn unknown_codings_and_too_many_layers_are_refused_up_front() {
    assert!(matches!(decoder(&["compress"]), Err(DecodeError::Unsupported(c)) if c == "compress"));
    assert!(matches!(
        decoder(&["gzip"; MAX_LAYERS + 1]),
        Err(DecodeError::TooManyLayers(5))
    ));
}

#[test]
fn an_empty_body_with_a_coding_decodes_to_nothing() {
    for c in ["gzip", "deflate", "br", "zstd"] {
        assert_eq!(decode_in(&[c], b"", 1).expect(c), b"");
    }
}

#[test]
fn a_layer_reading_far_more_than_it_makes_is_refused() {
    let bomb = super::test_streams::empty_member_bomb(200_000);
    assert!(bomb.len() < 64 * 1024, "{} bytes of body", bomb.len());
    let e = decode_in(&["gzip", "gzip"], &bomb, 16 * 1024).expect_err("refused");
    assert!(
        matches!(e, DecodeError::Expansion { coding: "gzip", .. }),
        "{e}"
    );
    // A real stacked coding, and a single layer of empty members (its input
    // is the body itself, bounded by the body's own limits), decode.
    let real = gzip(&gzip(&b"stacked ".repeat(100_000)));
    assert_eq!(
        decode_in(&["gzip", "gzip"], &real, 4096).expect("decodes"),
        b"stacked ".repeat(100_000)
    );
    let single: Vec<u8> = (0..1000).flat_map(|_| gzip(b"")).collect();
    assert_eq!(decode_in(&["gzip"], &single, 4096).expect("decodes"), b"");
}
