//! Content codings (`Content-Encoding`: `gzip`/`x-gzip`, `deflate`, `br`,
//! `zstd`, or a list of them) undone as a body streams, for a reader that
//! must see the decoded bytes and forwards them (the `secrets` transform's
//! scrub of reflected credentials).
//!
//! Push in, pull out: the caller pushes the coded body's chunks
//! ([`Decoder::push`]) when [`Decoder::pull`] asks for input, and each
//! `pull` hands out at most [`STEP`] decoded bytes. One small input chunk
//! (a bomb of a few bytes) is never inflated into one large buffer: what a
//! coding holds internally is bounded by the coding itself (deflate's 32 KiB
//! window; brotli's window, 16 MiB at most; zstd's, [`MAX_WINDOW`], plus one
//! 128 KiB block), and the decoded bytes leave [`STEP`] at a time, as the
//! consumer reads them. A stacked list (`gzip, br`) is undone layer by
//! layer, an inner layer fed only as its reader asks for more.
//!
//! [`MAX_WINDOW`]: crate::transforms::body_capture::zstd::MAX_WINDOW

mod gzip;
#[cfg(test)]
pub(crate) mod test_streams;
mod zstd;

use bytes::Bytes;

/// The most decoded bytes one [`Decoder::pull`] hands out.
pub const STEP: usize = 32 * 1024;

/// The most codings stacked in one `Content-Encoding` list that are undone.
pub const MAX_LAYERS: usize = 4;

/// How much more a layer over another may read from it than twice what it
/// hands on ([`expansion_checked`]).
pub const EXPANSION_SLACK: u64 = 1 << 20;

/// Checks a layer stacked over another: what it read of the layer below
/// (`consumed`) is at most twice what it made (`produced`), plus
/// [`EXPANSION_SLACK`]. A layer's input is the coded form of its output,
/// which real codings make smaller, not larger; a layer that reads and
/// makes nothing (empty gzip members, zstd skippable frames, empty stored
/// deflate blocks, each a few bytes the layer below inflates a thousandfold)
/// would otherwise make the decoder inflate gigabytes in one call, pinning
/// its thread, without a byte of output to bound it.
pub fn expansion_checked(
    coding: &'static str,
    consumed: u64,
    produced: u64,
) -> Result<(), DecodeError> {
    if consumed > produced.saturating_mul(2).saturating_add(EXPANSION_SLACK) {
        return Err(DecodeError::Expansion {
            coding,
            consumed,
            produced,
        });
    }
    Ok(())
}

/// Why a coded body cannot be decoded. Messages name the coding and the
/// fault, never the body's bytes.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A coding this module does not decode.
    #[error("unsupported content-encoding {0:?}")]
    Unsupported(String),
    /// More codings stacked than [`MAX_LAYERS`].
    #[error("{0} content codings stacked; at most {MAX_LAYERS} are decoded")]
    TooManyLayers(usize),
    /// A layer stacked over another read far more of it than it made
    /// ([`expansion_checked`]): a bomb made of empty members or frames.
    #[error("the {coding} layer read {consumed} bytes of the coding under it and made {produced}: not a real stacked coding")]
    Expansion {
        /// The layer's coding.
        coding: &'static str,
        /// Bytes it read from the layer below.
        consumed: u64,
        /// Bytes it made.
        produced: u64,
    },
    /// The body ended inside a coded stream.
    #[error("the {0} stream is cut short (the body ended inside it)")]
    Truncated(&'static str),
    /// Corrupt gzip framing (header, trailer, checksum).
    #[error(transparent)]
    Gzip(#[from] gzip::GzipError),
    /// Corrupt deflate data (zlib or raw).
    #[error("corrupt deflate data: {0}")]
    Deflate(String),
    /// Corrupt brotli data.
    #[error("corrupt brotli data")]
    Brotli,
    /// Corrupt or refused zstd data.
    #[error(transparent)]
    Zstd(#[from] crate::transforms::body_capture::zstd::ZstdError),
}

/// What [`Decoder::pull`] has.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Decoded bytes (at most [`STEP`]).
    Data(Bytes),
    /// Nothing more without more input: [`Decoder::push`] the next chunk, or
    /// [`Decoder::end_input`] at the end of the body.
    NeedInput,
    /// The decoded body is complete.
    End,
}

/// One coding's decoder, fed slices of its input.
trait Codec: Send + Sync {
    /// The coding's name, for errors.
    fn name(&self) -> &'static str;

    /// Decodes from the start of `input` into `out`; `end`: no input will
    /// follow `input`. Returns the bytes of `input` consumed, the bytes of
    /// `out` written, and whether the coded stream is complete. `(0, 0,
    /// false)` asks for more input: a codec may leave a unit it cannot
    /// finish (a header, a block) unconsumed until more is there.
    fn step(
        &mut self,
        input: &[u8],
        end: bool,
        out: &mut [u8],
    ) -> Result<(usize, usize, bool), DecodeError>;
}

/// One layer: a codec and the input it has not consumed yet.
struct Layer {
    codec: Box<dyn Codec>,
    input: Vec<u8>,
    /// Bytes at the front of `input` already consumed.
    taken: usize,
    /// No more input will come.
    ended: bool,
    /// Whether any input came at all.
    fed: bool,
    done: bool,
    /// Input bytes consumed and output bytes made, over the body.
    consumed: u64,
    produced: u64,
}

impl Layer {
    fn add(&mut self, data: &[u8]) {
        if self.taken > 0 {
            self.input.drain(..self.taken);
            self.taken = 0;
        }
        self.input.extend_from_slice(data);
        self.fed |= !data.is_empty();
    }
}

/// A streaming decoder for a list of codings.
pub struct Decoder {
    /// The last coding applied first: `layers[0]` takes the body.
    layers: Vec<Layer>,
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder for `codings`, in the order they were applied (as
    /// `Content-Encoding` lists them; `identity` left out).
    pub fn new(codings: &[String]) -> Result<Decoder, DecodeError> {
        if codings.len() > MAX_LAYERS {
            return Err(DecodeError::TooManyLayers(codings.len()));
        }
        let mut layers = Vec::with_capacity(codings.len());
        for c in codings.iter().rev() {
            let codec: Box<dyn Codec> = match c.as_str() {
                "gzip" | "x-gzip" => Box::new(gzip::Gzip::new()),
                "deflate" => Box::new(Deflate::new()),
                "br" => Box::new(Brotli::new()),
                "zstd" => Box::new(zstd::Zstd::new()),
                other => return Err(DecodeError::Unsupported(other.to_string())),
            };
            layers.push(Layer {
                codec,
                input: Vec::new(),
                taken: 0,
                ended: false,
                fed: false,
                done: false,
                consumed: 0,
                produced: 0,
            });
        }
        Ok(Decoder {
            layers,
            scratch: vec![0; STEP],
        })
    }

    /// The next chunk of the coded body.
    pub fn push(&mut self, chunk: &[u8]) {
        if let Some(l) = self.layers.first_mut() {
            l.add(chunk);
        }
    }

    /// The coded body ended.
    pub fn end_input(&mut self) {
        if let Some(l) = self.layers.first_mut() {
            l.ended = true;
        }
    }

    /// Decoded bytes, or what is needed to get more.
    pub fn pull(&mut self) -> Result<Step, DecodeError> {
        let n = self.layers.len();
        pull(&mut self.layers, n, &mut self.scratch)
    }
}

/// The next output of the first `n` layers (the last of them is read).
fn pull(layers: &mut [Layer], n: usize, scratch: &mut [u8]) -> Result<Step, DecodeError> {
    let Some((layer, below)) = layers[..n].split_last_mut() else {
        return Ok(Step::End);
    };
    loop {
        if layer.done {
            return Ok(Step::End);
        }
        let input = &layer.input[layer.taken..];
        if layer.ended && !layer.fed {
            // An empty body with a coding named: nothing to decode.
            layer.done = true;
            return Ok(Step::End);
        }
        let (used, made, done) = layer.codec.step(input, layer.ended, scratch)?;
        layer.taken += used;
        layer.consumed += used as u64;
        layer.produced += made as u64;
        if !below.is_empty() {
            expansion_checked(layer.codec.name(), layer.consumed, layer.produced)?;
        }
        if done {
            // Bytes after the end of the stream are dropped, never forwarded.
            layer.done = true;
        }
        if made > 0 {
            return Ok(Step::Data(Bytes::copy_from_slice(&scratch[..made])));
        }
        if done {
            return Ok(Step::End);
        }
        if used > 0 {
            continue;
        }
        if layer.ended {
            return Err(DecodeError::Truncated(layer.codec.name()));
        }
        if below.is_empty() {
            return Ok(Step::NeedInput);
        }
        let m = below.len();
        match pull(below, m, scratch)? {
            Step::Data(d) => layer.add(&d),
            Step::NeedInput => return Ok(Step::NeedInput),
            Step::End => layer.ended = true,
        }
    }
}

/// `deflate`: zlib (RFC 1950, what RFC 9110 means), or raw deflate (RFC
/// 1951) as some servers send it, told apart by the first two bytes as
/// `body_capture` does.
struct Deflate {
    inflate: Option<flate2::Decompress>,
}

impl Deflate {
    fn new() -> Self {
        Deflate { inflate: None }
    }
}

/// A zlib header: CM 8 and a check sum of 31.
fn zlib_header(head: &[u8]) -> bool {
    head.len() >= 2
        && head[0] & 0x0F == 8
        && (u16::from(head[0]) << 8 | u16::from(head[1])) % 31 == 0
}

/// Runs `inflate` over `input` into `out`: (consumed, written, ended).
fn inflate_step(
    inflate: &mut flate2::Decompress,
    input: &[u8],
    out: &mut [u8],
) -> Result<(usize, usize, bool), DecodeError> {
    let (in0, out0) = (inflate.total_in(), inflate.total_out());
    let status = inflate
        .decompress(input, out, flate2::FlushDecompress::None)
        .map_err(|e| DecodeError::Deflate(e.to_string()))?;
    Ok((
        (inflate.total_in() - in0) as usize,
        (inflate.total_out() - out0) as usize,
        status == flate2::Status::StreamEnd,
    ))
}

impl Codec for Deflate {
    fn name(&self) -> &'static str {
        "deflate"
    }

    fn step(
        &mut self,
        input: &[u8],
        end: bool,
        out: &mut [u8],
    ) -> Result<(usize, usize, bool), DecodeError> {
        let inflate = match &mut self.inflate {
            Some(i) => i,
            None if input.len() < 2 && !end => return Ok((0, 0, false)),
            None => self
                .inflate
                .insert(flate2::Decompress::new(zlib_header(input))),
        };
        inflate_step(inflate, input, out)
    }
}

/// `br` (RFC 7932).
struct Brotli {
    state: brotli_decompressor::BrotliState<
        brotli_decompressor::StandardAlloc,
        brotli_decompressor::StandardAlloc,
        brotli_decompressor::StandardAlloc,
    >,
}

impl Brotli {
    fn new() -> Self {
        use brotli_decompressor::StandardAlloc;
        Brotli {
            state: brotli_decompressor::BrotliState::new(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            ),
        }
    }
}

impl Codec for Brotli {
    fn name(&self) -> &'static str {
        "br"
    }

    fn step(
        &mut self,
        input: &[u8],
        _end: bool,
        out: &mut [u8],
    ) -> Result<(usize, usize, bool), DecodeError> {
        use brotli_decompressor::BrotliResult;
        let (mut avail_in, mut in_at) = (input.len(), 0);
        let (mut avail_out, mut out_at, mut total) = (out.len(), 0, 0);
        let r = brotli_decompressor::BrotliDecompressStream(
            &mut avail_in,
            &mut in_at,
            input,
            &mut avail_out,
            &mut out_at,
            out,
            &mut total,
            &mut self.state,
        );
        match r {
            BrotliResult::ResultFailure => Err(DecodeError::Brotli),
            BrotliResult::ResultSuccess => Ok((in_at, out_at, true)),
            BrotliResult::NeedsMoreInput | BrotliResult::NeedsMoreOutput => {
                Ok((in_at, out_at, false))
            }
        }
    }
}

#[cfg(test)]
mod tests;
