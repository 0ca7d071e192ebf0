//! The aws-chunked body of a signed streaming upload
//! (`x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`),
//! re-signed as it streams.
//!
//! The workload's SDK frames the object as
//! `<hex size>;chunk-signature=<sig>\r\n<data>\r\n` per chunk, a final
//! `0;chunk-signature=<sig>\r\n`, then (the `-TRAILER` form) trailer lines
//! `name:value\r\n` ending with `x-amz-trailer-signature:<sig>\r\n`, and an
//! empty line. Each signature chains from the previous one, starting at the
//! seed signature of the request's headers, and was made with the workload's
//! placeholder key. [`Resigner`] parses the framing from input cut anywhere
//! and writes it out unchanged except for the signatures, which
//! [`ChunkSigner`] computes again with the real key (AWS: "Signature
//! calculations for the Authorization header: transferring payload in
//! multiple chunks" and "... including trailing headers"). A signature is
//! always 64 hex digits, so the body keeps its length (`Content-Length`) and
//! its decoded length (`x-amz-decoded-content-length`, checked here).
//!
//! A chunk's signature precedes its data, so each chunk is held until its
//! data is complete (at most [`MAX_CHUNK`] bytes; SDKs send 64 KiB); nothing
//! else is buffered. Framing that does not parse fails the body: the
//! upstream never receives a complete request, so no object is stored with
//! the framing in it.

use std::collections::VecDeque;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The largest chunk held while its signature is computed. AWS SDKs send
/// 64 KiB chunks (the AWS CLI up to 8 MiB parts, chunked at 64 KiB).
pub const MAX_CHUNK: u64 = 16 * 1024 * 1024;
/// The longest chunk header or trailer line, without its CRLF.
const MAX_LINE: usize = 4096;
/// Hex digits of a SigV4 signature.
const SIGNATURE_LEN: usize = 64;
const CHUNK_SIGNATURE: &[u8] = b";chunk-signature=";
const TRAILER_SIGNATURE: &str = "x-amz-trailer-signature";
const CRLF: &[u8] = b"\r\n";
/// SHA-256 of nothing: the "previous headers" hash of every chunk's string to sign.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Why an aws-chunked body cannot be re-signed.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk header is not `<hex size>;chunk-signature=<64 hex digits>`.
    #[error("a chunk header is not <hex size>;chunk-signature=<64 hex digits>")]
    BadHeader,
    /// A chunk header or trailer line runs past [`MAX_LINE`] bytes.
    #[error("a chunk header or trailer line is longer than {MAX_LINE} bytes")]
    LongLine,
    /// A chunk is larger than [`MAX_CHUNK`].
    #[error("a chunk of {size} bytes is larger than the {MAX_CHUNK}-byte limit")]
    ChunkTooLarge {
        /// Its declared size.
        size: u64,
    },
    /// A chunk's data is not followed by CRLF.
    #[error("a chunk's data is not followed by CRLF")]
    MissingCrlf,
    /// The chunks do not add up to `x-amz-decoded-content-length`.
    #[error("the chunks hold {actual} bytes, x-amz-decoded-content-length says {declared}")]
    DecodedLength {
        /// Bytes of chunk data (so far, when over).
        actual: u64,
        /// The header's value.
        declared: u64,
    },
    /// The trailer section is not what the payload mode declares.
    #[error("malformed trailer: {0}")]
    BadTrailer(&'static str),
    /// Bytes follow the body's final empty line.
    #[error("data after the end of the aws-chunked body")]
    TrailingData,
    /// The body ended before its final chunk and empty line.
    #[error("the body ended before the end of its aws-chunked framing")]
    Truncated,
}

/// Computes chunk and trailer signatures with the real key, each chained
/// from the previous signature (the seed: the request's own signature).
/// Holds the derived signing key (zeroized on drop), never the secret.
pub struct ChunkSigner {
    key: Zeroizing<Vec<u8>>,
    /// `YYYYMMDDTHHMMSSZ`, the request's `X-Amz-Date`.
    amz_date: String,
    /// `YYYYMMDD/REGION/SERVICE/aws4_request`.
    scope: String,
    previous: String,
}

impl ChunkSigner {
    /// A signer for a request signed at `time` for `region` and `service`
    /// whose header signature is `seed`.
    pub fn new(secret: &str, time: SystemTime, region: &str, service: &str, seed: String) -> Self {
        let key = aws_sigv4::sign::v4::generate_signing_key(secret, time, region, service);
        let t = time::OffsetDateTime::from(time);
        let date = format!("{:04}{:02}{:02}", t.year(), u8::from(t.month()), t.day());
        ChunkSigner {
            key: Zeroizing::new(key.as_ref().to_vec()),
            amz_date: format!("{date}T{:02}{:02}{:02}Z", t.hour(), t.minute(), t.second()),
            scope: format!("{date}/{region}/{service}/aws4_request"),
            previous: seed,
        }
    }

    /// The signature of the next chunk, `data` (empty for the final chunk).
    pub fn chunk(&mut self, data: &[u8]) -> String {
        let hash = format!("{EMPTY_SHA256}\n{}", hex::encode(Sha256::digest(data)));
        self.sign("AWS4-HMAC-SHA256-PAYLOAD", &hash)
    }

    /// The trailer signature over `trailers` (name, value), canonicalised as
    /// the AWS SDKs do: `lowercase-name:trimmed-value\n`, sorted by name.
    pub fn trailer(&mut self, trailers: &[(String, String)]) -> String {
        let mut sorted: Vec<_> = trailers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim()))
            .collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let mut canonical = Vec::new();
        for (name, value) in sorted {
            canonical.extend_from_slice(name.as_bytes());
            canonical.push(b':');
            canonical.extend_from_slice(value.as_bytes());
            canonical.push(b'\n');
        }
        let hash = hex::encode(Sha256::digest(&canonical));
        self.sign("AWS4-HMAC-SHA256-TRAILER", &hash)
    }

    fn sign(&mut self, algorithm: &str, payload_hash: &str) -> String {
        let string_to_sign = format!(
            "{algorithm}\n{}\n{}\n{}\n{payload_hash}",
            self.amz_date, self.scope, self.previous
        );
        let signature =
            aws_sigv4::sign::v4::calculate_signature(&*self.key, string_to_sign.as_bytes());
        self.previous.clone_from(&signature);
        signature
    }
}

/// Where the parser is in the framing.
enum State {
    /// Expecting a chunk header line.
    Header,
    /// Expecting `size` bytes of data and CRLF; `size_text` is the header's
    /// size as written.
    Data { size: usize, size_text: Bytes },
    /// After the final chunk: trailer lines, then an empty line.
    Trailers,
    /// The empty line was seen: nothing may follow.
    Done,
}

/// Re-signs an aws-chunked body fed in pieces cut anywhere.
pub struct Resigner {
    signer: ChunkSigner,
    /// The `-TRAILER` form: trailer lines and a trailer signature follow the final chunk.
    with_trailer: bool,
    /// `x-amz-decoded-content-length`, when the request has one.
    declared: Option<u64>,
    decoded: u64,
    state: State,
    /// Input not yet written out.
    pending: BytesMut,
    /// Trailer lines seen, for the trailer signature.
    trailers: Vec<(String, String)>,
    trailer_signed: bool,
}

impl Resigner {
    /// A re-signer for a body whose payload mode has a trailer or not.
    pub fn new(signer: ChunkSigner, with_trailer: bool, declared: Option<u64>) -> Self {
        Resigner {
            signer,
            with_trailer,
            declared,
            decoded: 0,
            state: State::Header,
            pending: BytesMut::new(),
            trailers: Vec::new(),
            trailer_signed: false,
        }
    }

    /// Bytes taken in and not yet written out.
    pub fn held(&self) -> usize {
        self.pending.len()
    }

    /// Takes `input` and appends to `out` what can be written out so far.
    pub fn feed(&mut self, input: &[u8], out: &mut VecDeque<Bytes>) -> Result<(), ChunkedError> {
        self.pending.extend_from_slice(input);
        loop {
            match &self.state {
                State::Header => {
                    let Some(line) = self.line()? else {
                        return Ok(());
                    };
                    let (size, size_text) = chunk_header(&line)?;
                    self.decoded += size;
                    if let Some(declared) = self.declared.filter(|d| self.decoded > *d) {
                        return Err(ChunkedError::DecodedLength {
                            actual: self.decoded,
                            declared,
                        });
                    }
                    if size == 0 {
                        if let Some(declared) = self.declared.filter(|d| self.decoded != *d) {
                            return Err(ChunkedError::DecodedLength {
                                actual: self.decoded,
                                declared,
                            });
                        }
                        let signature = self.signer.chunk(&[]);
                        out.push_back(header(&size_text, &signature));
                        self.state = State::Trailers;
                    } else {
                        // MAX_CHUNK fits in usize (checked by chunk_header).
                        let size = usize::try_from(size).map_err(|_| ChunkedError::BadHeader)?;
                        self.state = State::Data { size, size_text };
                    }
                }
                State::Data { size, size_text } => {
                    let size = *size;
                    if self.pending.len() < size + CRLF.len() {
                        return Ok(());
                    }
                    let size_text = size_text.clone();
                    let data = self.pending.split_to(size).freeze();
                    if &self.pending[..CRLF.len()] != CRLF {
                        return Err(ChunkedError::MissingCrlf);
                    }
                    let crlf = self.pending.split_to(CRLF.len()).freeze();
                    let signature = self.signer.chunk(&data);
                    out.push_back(header(&size_text, &signature));
                    out.push_back(data);
                    out.push_back(crlf);
                    self.state = State::Header;
                }
                State::Trailers => {
                    let Some(line) = self.line()? else {
                        return Ok(());
                    };
                    if line.is_empty() {
                        if self.with_trailer && !self.trailer_signed {
                            return Err(ChunkedError::BadTrailer("no x-amz-trailer-signature"));
                        }
                        out.push_back(Bytes::from_static(CRLF));
                        self.state = State::Done;
                    } else {
                        out.push_back(self.trailer_line(&line)?);
                    }
                }
                State::Done => {
                    if !self.pending.is_empty() {
                        return Err(ChunkedError::TrailingData);
                    }
                    return Ok(());
                }
            }
        }
    }

    /// Checks that the body ended where its framing does.
    pub fn finish(&self) -> Result<(), ChunkedError> {
        match self.state {
            State::Done if self.pending.is_empty() => Ok(()),
            State::Done => Err(ChunkedError::TrailingData),
            _ => Err(ChunkedError::Truncated),
        }
    }

    /// The next line without its CRLF, if it is complete.
    fn line(&mut self) -> Result<Option<Bytes>, ChunkedError> {
        let window = &self.pending[..self.pending.len().min(MAX_LINE + CRLF.len())];
        match window.windows(CRLF.len()).position(|w| w == CRLF) {
            Some(end) => {
                let line = self.pending.split_to(end).freeze();
                let _crlf = self.pending.split_to(CRLF.len());
                Ok(Some(line))
            }
            None if window.len() >= MAX_LINE + CRLF.len() => Err(ChunkedError::LongLine),
            None => Ok(None),
        }
    }

    /// A trailer line as it goes out: unchanged, or the trailer signature
    /// computed again.
    fn trailer_line(&mut self, line: &[u8]) -> Result<Bytes, ChunkedError> {
        if !self.with_trailer {
            return Err(ChunkedError::BadTrailer(
                "trailer lines in a body whose payload mode has no trailer",
            ));
        }
        if self.trailer_signed {
            return Err(ChunkedError::BadTrailer(
                "a line after x-amz-trailer-signature",
            ));
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| ChunkedError::BadTrailer("a trailer line is not text"))?;
        let (name, value) = text
            .split_once(':')
            .ok_or(ChunkedError::BadTrailer("a trailer line is not name:value"))?;
        if name.is_empty() || !name.bytes().all(is_token) {
            return Err(ChunkedError::BadTrailer("a trailer name is not a token"));
        }
        if !name.eq_ignore_ascii_case(TRAILER_SIGNATURE) {
            self.trailers.push((name.to_string(), value.to_string()));
            let mut l = BytesMut::with_capacity(line.len() + CRLF.len());
            l.extend_from_slice(line);
            l.extend_from_slice(CRLF);
            return Ok(l.freeze());
        }
        if !is_signature(value.as_bytes()) {
            return Err(ChunkedError::BadTrailer(
                "x-amz-trailer-signature is not 64 hex digits",
            ));
        }
        self.trailer_signed = true;
        let signature = self.signer.trailer(&self.trailers);
        Ok(Bytes::from(format!("{name}:{signature}\r\n")))
    }
}

/// A chunk header's size and its text, from `<hex>;chunk-signature=<sig>`.
fn chunk_header(line: &[u8]) -> Result<(u64, Bytes), ChunkedError> {
    let semi = line
        .iter()
        .position(|b| *b == b';')
        .ok_or(ChunkedError::BadHeader)?;
    let (size_text, rest) = line.split_at(semi);
    let signature = rest
        .strip_prefix(CHUNK_SIGNATURE)
        .ok_or(ChunkedError::BadHeader)?;
    if size_text.is_empty()
        || size_text.len() > 16
        || !size_text.iter().all(u8::is_ascii_hexdigit)
        || !is_signature(signature)
    {
        return Err(ChunkedError::BadHeader);
    }
    // Hex digits only, at most 16: always a u64.
    let text = std::str::from_utf8(size_text).map_err(|_| ChunkedError::BadHeader)?;
    let size = u64::from_str_radix(text, 16).map_err(|_| ChunkedError::BadHeader)?;
    if size > MAX_CHUNK {
        return Err(ChunkedError::ChunkTooLarge { size });
    }
    Ok((size, Bytes::copy_from_slice(size_text)))
}

/// A chunk header line as it goes out.
fn header(size_text: &[u8], signature: &str) -> Bytes {
    let mut h = BytesMut::with_capacity(
        size_text.len() + CHUNK_SIGNATURE.len() + signature.len() + CRLF.len(),
    );
    h.extend_from_slice(size_text);
    h.extend_from_slice(CHUNK_SIGNATURE);
    h.extend_from_slice(signature.as_bytes());
    h.extend_from_slice(CRLF);
    h.freeze()
}

fn is_signature(s: &[u8]) -> bool {
    s.len() == SIGNATURE_LEN && s.iter().all(u8::is_ascii_hexdigit)
}

/// An RFC 9110 token character.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests;
