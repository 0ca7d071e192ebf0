//! The `zstd` content coding (RFC 8878, window limit per RFC 9659) as one more
//! streaming layer of [`super::decode`], on `ruzstd` (pure Rust).
//!
//! A body may hold several frames, and skippable frames between them; each
//! frame's content size and checksum, when it declares them, are checked. A
//! frame whose window is larger than [`MAX_WINDOW`] is refused from its
//! header, before anything is allocated for it: RFC 9659 forbids HTTP
//! encoders larger windows and lets decoders refuse them (browsers do). The
//! decoder holds back one window of decoded bytes while a frame is being
//! decoded, so reading `n` bytes costs at most `n` plus the window plus one
//! block (128 KiB) of work and memory, whatever the frame declares as its
//! content size.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, FrameHeaderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The largest window decoded: 8 MiB (RFC 9659 §3).
pub const MAX_WINDOW: u64 = 8 << 20;

/// What is wrong with a zstd body.
#[derive(Debug, thiserror::Error)]
pub enum ZstdError {
    #[error("zstd frame {frame} declares a {requested}-byte window, more than the {MAX_WINDOW} bytes (8 MiB) HTTP allows (RFC 9659)")]
    WindowTooLarge { frame: usize, requested: u64 },
    #[error("zstd frame {frame}: {detail}")]
    Corrupt { frame: usize, detail: String },
    #[error(
        "zstd skippable frame {frame} is cut short ({declared} bytes declared, {got} present)"
    )]
    SkippableCut {
        frame: usize,
        declared: u32,
        got: u64,
    },
    #[error("zstd frame {frame} declares {declared} bytes of content but holds {decoded}")]
    ContentSize {
        frame: usize,
        declared: u64,
        decoded: u64,
    },
    #[error(
        "zstd frame {frame}: checksum mismatch (declared {declared:08x}, decoded {decoded:08x})"
    )]
    Checksum {
        frame: usize,
        declared: u32,
        decoded: u32,
    },
}

impl From<ZstdError> for io::Error {
    fn from(e: ZstdError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Decodes the zstd frames of `source`, as far as it is read.
pub struct ZstdDecoder<R> {
    source: R,
    frame: FrameDecoder,
    /// Frames started so far (1-based in errors; skippable ones included).
    frames: usize,
    /// Inside a frame whose decoded bytes are not all read yet.
    in_frame: bool,
    /// Bytes of the current frame handed out so far.
    out: u64,
}

impl<R: BufRead> ZstdDecoder<R> {
    /// A decoder over `source`; nothing is read until the first `read`.
    pub fn new(source: R) -> Self {
        let mut frame = FrameDecoder::new();
        frame.set_max_window_size(MAX_WINDOW);
        ZstdDecoder {
            source,
            frame,
            frames: 0,
            in_frame: false,
            out: 0,
        }
    }

    /// Reads the next frame's header; false at the end of the input.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            self.frames += 1;
            let frame = self.frames;
            match self.frame.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let got = io::copy(
                        &mut (&mut self.source).take(u64::from(length)),
                        &mut io::sink(),
                    )?;
                    if got < u64::from(length) {
                        return Err(ZstdError::SkippableCut {
                            frame,
                            declared: length,
                            got,
                        }
                        .into());
                    }
                }
                Err(e) => return Err(header_error(e, frame).into()),
            }
        }
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> io::Error {
        corrupt(self.frames, e).into()
    }

    fn check_end(&self) -> io::Result<()> {
        Ok(check_end(&self.frame, self.frames, self.out)?)
    }
}

/// What is wrong with frame number `frame` whose header ruzstd refused.
pub(crate) fn header_error(e: FrameDecoderError, frame: usize) -> ZstdError {
    match e {
        FrameDecoderError::WindowSizeTooBig { requested, .. }
        | FrameDecoderError::FrameHeaderError(FrameHeaderError::WindowTooBig { got: requested }) => {
            ZstdError::WindowTooLarge { frame, requested }
        }
        FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::BadMagicNumber(magic)) => {
            corrupt(
                frame,
                format_args!("no zstd magic number (found {magic:#010x})"),
            )
        }
        e => corrupt(frame, e),
    }
}

/// Frame number `frame` is corrupt, as ruzstd's `e` says.
pub(crate) fn corrupt(frame: usize, e: impl std::fmt::Display) -> ZstdError {
    // The library's messages can be long (Debug of nested errors): keep
    // the start, enough to say what is wrong.
    let detail: String = e.to_string().chars().take(200).collect();
    ZstdError::Corrupt { frame, detail }
}

/// At the end of frame number `frame`, which held `out` bytes: its content
/// size and checksum, when it declares them, must match what it held (`0`
/// is also "not declared" to ruzstd).
pub(crate) fn check_end(decoder: &FrameDecoder, frame: usize, out: u64) -> Result<(), ZstdError> {
    let declared = decoder.content_size();
    if declared != 0 && declared != out {
        return Err(ZstdError::ContentSize {
            frame,
            declared,
            decoded: out,
        });
    }
    if let (Some(declared), Some(decoded)) = (
        decoder.get_checksum_from_data(),
        decoder.get_calculated_checksum(),
    ) {
        if declared != decoded {
            return Err(ZstdError::Checksum {
                frame,
                declared,
                decoded,
            });
        }
    }
    Ok(())
}

impl<R: BufRead> Read for ZstdDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
                self.out = 0;
            }
            // Decode one block at a time until some bytes can be handed out:
            // all of them once the frame is done, else those beyond the window.
            while self.frame.can_collect() == 0 && !self.frame.is_finished() {
                self.frame
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBlocks(1))
                    .map_err(|e| self.corrupt(e))?;
            }
            if self.frame.can_collect() > 0 {
                let n = self.frame.read(buf).map_err(|e| self.corrupt(e))?;
                self.out += n as u64;
                return Ok(n);
            }
            // Finished and every decoded byte handed out.
            self.check_end()?;
            self.in_frame = false;
        }
    }
}
