//! The re-signer against AWS's documented examples (S3 "Signature
//! calculations for the Authorization header: transferring payload in
//! multiple chunks", with and without a trailing header; the same values the
//! AWS SDK for Rust tests its own encoder with), fed in every kind of piece,
//! and on malformed framing.

use std::time::{Duration, UNIX_EPOCH};

use proptest::prelude::*;

use super::*;

/// AWS's example secret key.
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// 20130524T000000Z.
const AT: u64 = 1_369_353_600;
/// The examples' seed signatures (of the request's headers).
const SEED: &str = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const SEED_TRAILER: &str = "106e2a8a18243abcf37539882f36619c00e2dfc72633413f02d3b74544bfeb8e";
/// A placeholder key's signature, as the workload sent it.
const PLACEHOLDER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn signer(seed: &str) -> ChunkSigner {
    ChunkSigner::new(
        SECRET,
        UNIX_EPOCH + Duration::from_secs(AT),
        "us-east-1",
        "s3",
        seed.into(),
    )
}

/// The examples' object: 65 KiB of `a`, in a 64 KiB and a 1 KiB chunk.
fn object() -> Vec<u8> {
    vec![b'a'; 65 * 1024]
}

/// An aws-chunked body of `object()` with `signatures` (chunk 1, 2, final,
/// and the trailer's when `trailer`).
fn framed(signatures: &[&str], trailer: bool) -> Vec<u8> {
    let data = object();
    let mut b = Vec::new();
    b.extend_from_slice(format!("10000;chunk-signature={}\r\n", signatures[0]).as_bytes());
    b.extend_from_slice(&data[..65536]);
    b.extend_from_slice(format!("\r\n400;chunk-signature={}\r\n", signatures[1]).as_bytes());
    b.extend_from_slice(&data[65536..]);
    b.extend_from_slice(format!("\r\n0;chunk-signature={}\r\n", signatures[2]).as_bytes());
    if trailer {
        b.extend_from_slice(
            format!(
                "x-amz-checksum-crc32c:sOO8/Q==\r\nx-amz-trailer-signature:{}\r\n",
                signatures[3]
            )
            .as_bytes(),
        );
    }
    b.extend_from_slice(b"\r\n");
    b
}

/// AWS's example, as the workload sent it (placeholder signatures) and as
/// the real key signs it.
fn example(trailer: bool) -> (Resigner, Vec<u8>, Vec<u8>) {
    let expected: &[&str] = if trailer {
        &[
            "b474d8862b1487a5145d686f57f013e54db672cee1c953b3010fb58501ef5aa2",
            "1c1344b170168f8e65b41376b44b20fe354e373826ccbbe2c1d40a8cae51e5c7",
            "2ca2aba2005185cf7159c6277faf83795951dd77a3a99e6e65d5c9f85863f992",
            "d81f82fc3505edab99d459891051a732e8730629a2e4a59689829ca17fe2e435",
        ]
    } else {
        &[
            "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
            "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
            "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
        ]
    };
    let seed = if trailer { SEED_TRAILER } else { SEED };
    let resigner = Resigner::new(signer(seed), trailer, Some(65 * 1024));
    (
        resigner,
        framed(&[PLACEHOLDER; 4], trailer),
        framed(expected, trailer),
    )
}

/// Feeds `input` cut at `cuts` (offsets) and returns the output.
fn run(mut r: Resigner, input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, ChunkedError> {
    let mut out = VecDeque::new();
    let mut at = 0;
    for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
        let cut = cut.clamp(at, input.len());
        r.feed(&input[at..cut], &mut out)?;
        at = cut;
    }
    r.finish()?;
    Ok(out.into_iter().flat_map(|b| b.to_vec()).collect())
}

#[test]
fn awss_example_signed_chunks() {
    let (r, input, expected) = example(false);
    let out = run(r, &input, &[]).expect("re-signed");
    assert_eq!(out.len(), input.len(), "the length is kept");
    assert!(out == expected, "{}", String::from_utf8_lossy(&out[..120]));
}

#[test]
fn awss_example_signed_chunks_with_a_trailer() {
    let (r, input, expected) = example(true);
    let out = run(r, &input, &[]).expect("re-signed");
    let tail = String::from_utf8_lossy(&out[out.len() - 200..]).into_owned();
    assert!(out == expected, "{tail}");
}

#[test]
fn the_chunk_signatures_agree_with_aws_sigv4s_own_chunk_signing() {
    use aws_sigv4::sign::v4;
    let identity = aws_credential_types::Credentials::new("AKID", SECRET, None, None, "t").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("eu-west-1")
        .name("s3")
        .time(UNIX_EPOCH + Duration::from_secs(AT + 4321))
        .settings(())
        .build()
        .expect("params");
    let mut ours = ChunkSigner::new(
        SECRET,
        UNIX_EPOCH + Duration::from_secs(AT + 4321),
        "eu-west-1",
        "s3",
        SEED.into(),
    );
    let chunk = Bytes::from_static(b"some chunk data");
    let theirs = v4::sign_chunk(&chunk, SEED, &params)
        .expect("signed")
        .into_parts()
        .1;
    assert_eq!(ours.chunk(&chunk), theirs);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the body arrives, the same bytes go out.
    #[test]
    fn any_cuts(trailer: bool, mut cuts in proptest::collection::vec(0usize..66_900, 0..40)) {
        cuts.sort_unstable();
        let (r, input, expected) = example(trailer);
        let out = run(r, &input, &cuts).expect("re-signed");
        prop_assert!(out == expected);
    }
}

#[test]
fn byte_by_byte() {
    let (r, input, expected) = example(true);
    let cuts: Vec<usize> = (1..input.len()).collect();
    assert!(run(r, &input, &cuts).expect("re-signed") == expected);
}

/// A small body: `hello` in one chunk, then the final chunk and the end.
fn small(trailer_lines: &str) -> String {
    format!(
        "5;chunk-signature={PLACEHOLDER}\r\nhello\r\n0;chunk-signature={PLACEHOLDER}\r\n{trailer_lines}\r\n"
    )
}

fn refused(trailer: bool, declared: Option<u64>, input: &str) -> ChunkedError {
    let r = Resigner::new(signer(SEED), trailer, declared);
    // Whole, and byte by byte: the same refusal.
    let whole = run(r, input.as_bytes(), &[]).expect_err("refused");
    let r = Resigner::new(signer(SEED), trailer, declared);
    let cuts: Vec<usize> = (1..input.len()).collect();
    let bytewise = run(r, input.as_bytes(), &cuts).expect_err("refused");
    assert_eq!(whole, bytewise, "{input:?}");
    whole
}

#[test]
fn the_small_bodies_are_accepted() {
    let r = Resigner::new(signer(SEED), false, Some(5));
    assert!(run(r, small("").as_bytes(), &[]).is_ok());
    let r = Resigner::new(signer(SEED), true, None);
    let t = format!("x-amz-checksum-crc32:AAAAAA==\r\nX-Amz-Trailer-Signature:{PLACEHOLDER}\r\n");
    let out = run(r, small(&t).as_bytes(), &[]).expect("re-signed");
    assert_eq!(out.len(), small(&t).len());
    let text = String::from_utf8(out).expect("text");
    assert!(text.contains("x-amz-checksum-crc32:AAAAAA==\r\nX-Amz-Trailer-Signature:"));
    assert!(!text.contains(PLACEHOLDER), "{text}");
    // Upper-case hex sizes, as the AWS SDK for Rust writes them, kept as written.
    let r = Resigner::new(signer(SEED), false, None);
    let body = format!(
        "A;chunk-signature={PLACEHOLDER}\r\n0123456789\r\n0;chunk-signature={PLACEHOLDER}\r\n\r\n"
    );
    let out = run(r, body.as_bytes(), &[]).expect("re-signed");
    assert!(out.starts_with(b"A;chunk-signature="));
}

#[test]
fn malformed_framing_is_refused() {
    let sig = PLACEHOLDER;
    for (input, want) in [
        // Chunk headers.
        (
            "5\r\nhello\r\n0\r\n\r\n".to_string(),
            ChunkedError::BadHeader,
        ),
        (
            format!("5;chunk-signature={}\r\nhello\r\n", &sig[..63]),
            ChunkedError::BadHeader,
        ),
        (
            format!("5;chunk-signature={sig}0\r\nhello\r\n"),
            ChunkedError::BadHeader,
        ),
        (
            format!("5;chunk-signature={}\r\n", "g".repeat(64)),
            ChunkedError::BadHeader,
        ),
        (
            format!("x5;chunk-signature={sig}\r\nhello\r\n"),
            ChunkedError::BadHeader,
        ),
        (
            format!(";chunk-signature={sig}\r\nhello\r\n"),
            ChunkedError::BadHeader,
        ),
        (
            format!("5;chunk-signature={sig};x=y\r\nhello\r\n"),
            ChunkedError::BadHeader,
        ),
        (
            format!("5;signature={sig}\r\nhello\r\n"),
            ChunkedError::BadHeader,
        ),
        (
            format!("1000001;chunk-signature={sig}\r\n"),
            ChunkedError::ChunkTooLarge { size: 0x1000001 },
        ),
        (
            format!("{};chunk-signature={sig}\r\n", "f".repeat(17)),
            ChunkedError::BadHeader,
        ),
        ("5".repeat(5000), ChunkedError::LongLine),
        // Data not followed by CRLF (a wrong size).
        (
            format!("4;chunk-signature={sig}\r\nhello\r\n"),
            ChunkedError::MissingCrlf,
        ),
        // Cut short: inside a header, inside data, before the final empty line.
        (format!("5;chunk-signature={sig}"), ChunkedError::Truncated),
        (
            format!("5;chunk-signature={sig}\r\nhel"),
            ChunkedError::Truncated,
        ),
        (
            format!("5;chunk-signature={sig}\r\nhello\r\n"),
            ChunkedError::Truncated,
        ),
        (
            format!("5;chunk-signature={sig}\r\nhello\r\n0;chunk-signature={sig}\r\n"),
            ChunkedError::Truncated,
        ),
        // More after the end.
        (format!("{}x", small("")), ChunkedError::TrailingData),
        (format!("{}\r\n", small("")), ChunkedError::TrailingData),
        // A trailer where the payload mode has none.
        (
            small("x-amz-checksum-crc32:AAAAAA==\r\n"),
            ChunkedError::BadTrailer("trailer lines in a body whose payload mode has no trailer"),
        ),
    ] {
        assert_eq!(refused(false, None, &input), want, "{input:?}");
    }
    for (lines, want) in [
        (
            "x-amz-checksum-crc32:AAAAAA==\r\n".to_string(),
            "no x-amz-trailer-signature",
        ),
        (
            format!("x-amz-trailer-signature:{sig}\r\nx-amz-checksum-crc32:AAAAAA==\r\n"),
            "a line after x-amz-trailer-signature",
        ),
        (
            format!("x-amz-trailer-signature: {sig}\r\n"),
            "x-amz-trailer-signature is not 64 hex digits",
        ),
        (
            format!("x-amz-trailer-signature:{}\r\n", &sig[1..]),
            "x-amz-trailer-signature is not 64 hex digits",
        ),
        (
            "no colon\r\n".to_string(),
            "a trailer line is not name:value",
        ),
        (
            "bad name:1\r\n".to_string(),
            "a trailer name is not a token",
        ),
        (":1\r\n".to_string(), "a trailer name is not a token"),
    ] {
        assert_eq!(
            refused(true, None, &small(&lines)),
            ChunkedError::BadTrailer(want),
            "{lines:?}"
        );
    }
}

#[test]
fn the_chunks_must_add_up_to_the_decoded_length() {
    assert_eq!(
        refused(false, Some(4), &small("")),
        ChunkedError::DecodedLength {
            actual: 5,
            declared: 4
        }
    );
    assert_eq!(
        refused(false, Some(6), &small("")),
        ChunkedError::DecodedLength {
            actual: 5,
            declared: 6
        }
    );
}

#[test]
fn a_chunk_is_held_only_until_its_data_is_complete() {
    let (mut r, input, _) = example(false);
    let mut out = VecDeque::new();
    r.feed(&input[..40_000], &mut out).expect("fed");
    assert!(
        out.is_empty(),
        "the first chunk's signature needs all its data"
    );
    // The 88-byte header line is parsed; the data waits.
    assert_eq!(r.held(), 40_000 - 88);
    r.feed(&input[40_000..66_000], &mut out).expect("fed");
    assert_eq!(out.len(), 3, "header, data and CRLF of the first chunk");
    // The second chunk's header is parsed, 288 bytes of its data wait.
    assert_eq!(r.held(), 288);
}
