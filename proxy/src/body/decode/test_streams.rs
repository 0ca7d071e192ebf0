//! Coded bodies made for tests (the decoder's, `body_capture`'s, the body
//! scrub's).

use std::io::Write as _;

/// `data` gzipped.
pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// A brotli stream holding `data` (1 to 65,536 bytes) in one uncompressed
/// meta-block (RFC 7932 §9.2).
pub(crate) fn brotli_stored(data: &[u8]) -> Vec<u8> {
    assert!(!data.is_empty() && data.len() <= 1 << 16);
    let mut bits: Vec<u8> = vec![0, 0, 0, 0]; // WBITS 16, ISLAST 0, MNIBBLES 4
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

/// `gzip, gzip` whose first-applied layer is `members` empty gzip members
/// (about 20 bytes each, decoding to nothing): the second gzip squeezes
/// them a thousandfold, so a few KB of body make megabytes for the first
/// layer to read without a byte of output. Found by session 48's review.
pub(crate) fn empty_member_bomb(members: usize) -> Vec<u8> {
    let one = gzip(b"");
    let mut inner = Vec::with_capacity(one.len() * members);
    for _ in 0..members {
        inner.extend_from_slice(&one);
    }
    gzip(&inner)
}
