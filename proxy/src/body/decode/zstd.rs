//! `zstd` (RFC 8878) as a push decoder on `ruzstd`. ruzstd reads from an
//! `io::Read` and cannot resume a unit it was given only part of, so the
//! framing is read here: a frame header, one block (with the checksum after
//! the last), or a skippable frame goes to ruzstd only once it is all there.
//! A block is at most 128 KiB, so that is the most input held; the window
//! limit and the end-of-frame checks are `body_capture`'s ([`MAX_WINDOW`]).

use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

use super::{Codec, DecodeError};
use crate::transforms::body_capture::zstd::{check_end, corrupt, header_error, MAX_WINDOW};

/// The largest block (RFC 8878 §3.1.1.2.3: Block_Maximum_Size).
const MAX_BLOCK: usize = 128 * 1024;

const MAGIC: u32 = 0xFD2F_B528;

enum State {
    /// Before a frame (or at the end).
    Frame,
    /// Inside a skippable frame: bytes left to skip.
    Skip(u64),
    /// Inside a frame; whether it ends with a checksum.
    Blocks { checksum: bool },
}

pub(super) struct Zstd {
    frame: FrameDecoder,
    state: State,
    /// Frames started (1-based in errors; skippable ones included).
    frames: usize,
    /// Bytes of the current frame handed out.
    out: u64,
}

impl Zstd {
    pub(super) fn new() -> Self {
        let mut frame = FrameDecoder::new();
        frame.set_max_window_size(MAX_WINDOW);
        Zstd {
            frame,
            state: State::Frame,
            frames: 0,
            out: 0,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let b = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The length of the frame header at the start of `b` (RFC 8878 §3.1.1.1),
/// once its descriptor byte is there.
fn frame_header_len(b: &[u8]) -> Option<usize> {
    let fhd = *b.get(4)?;
    let single = fhd & 0x20 != 0;
    let dict = [0, 1, 2, 4][usize::from(fhd & 3)];
    let fcs = match fhd >> 6 {
        0 => usize::from(single),
        1 => 2,
        2 => 4,
        _ => 8,
    };
    Some(5 + usize::from(!single) + dict + fcs)
}

impl Codec for Zstd {
    fn name(&self) -> &'static str {
        "zstd"
    }

    fn step(
        &mut self,
        input: &[u8],
        end: bool,
        out: &mut [u8],
    ) -> Result<(usize, usize, bool), DecodeError> {
        let mut used = 0;
        loop {
            let rest = &input[used..];
            match self.state {
                State::Frame => {
                    if rest.is_empty() {
                        return Ok((used, 0, end));
                    }
                    let Some(magic) = u32_at(rest, 0) else {
                        return Ok((used, 0, false));
                    };
                    if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
                        let Some(len) = u32_at(rest, 4) else {
                            return Ok((used, 0, false));
                        };
                        self.frames += 1;
                        used += 8;
                        self.state = State::Skip(u64::from(len));
                        continue;
                    }
                    let frame = self.frames + 1;
                    if magic != MAGIC {
                        let e = corrupt(
                            frame,
                            format_args!("no zstd magic number (found {magic:#010x})"),
                        );
                        return Err(e.into());
                    }
                    let Some(n) = frame_header_len(rest).filter(|n| rest.len() >= *n) else {
                        return Ok((used, 0, false));
                    };
                    self.frames = frame;
                    self.frame
                        .reset(&mut &rest[..n])
                        .map_err(|e| header_error(e, frame))?;
                    used += n;
                    self.out = 0;
                    self.state = State::Blocks {
                        checksum: rest[4] & 0x04 != 0,
                    };
                }
                State::Skip(left) => {
                    if left == 0 {
                        self.state = State::Frame;
                        continue;
                    }
                    if rest.is_empty() {
                        return Ok((used, 0, false));
                    }
                    let n = (rest.len() as u64).min(left);
                    used += n as usize;
                    self.state = State::Skip(left - n);
                }
                State::Blocks { checksum } => {
                    // Hand out what is decoded first: all of it once the
                    // frame is done, else what lies beyond the window.
                    if self.frame.can_collect() > 0 {
                        let n = std::io::Read::read(&mut self.frame, out)
                            .map_err(|e| corrupt(self.frames, e))?;
                        self.out += n as u64;
                        return Ok((used, n, false));
                    }
                    if self.frame.is_finished() {
                        check_end(&self.frame, self.frames, self.out)?;
                        self.state = State::Frame;
                        continue;
                    }
                    let Some(h) = rest.get(..3) else {
                        return Ok((used, 0, false));
                    };
                    let h = u32::from(h[0]) | u32::from(h[1]) << 8 | u32::from(h[2]) << 16;
                    let (last, kind, size) = (h & 1 == 1, (h >> 1) & 3, (h >> 3) as usize);
                    if kind == 3 || size > MAX_BLOCK {
                        let what = if kind == 3 {
                            "a block of the reserved type"
                        } else {
                            "a block larger than 128 KiB"
                        };
                        return Err(corrupt(self.frames, what).into());
                    }
                    let body = if kind == 1 { 1 } else { size };
                    let need = 3 + body + if last && checksum { 4 } else { 0 };
                    if rest.len() < need {
                        return Ok((used, 0, false));
                    }
                    self.frame
                        .decode_blocks(&mut &rest[..need], BlockDecodingStrategy::UptoBlocks(1))
                        .map_err(|e| corrupt(self.frames, e))?;
                    used += need;
                }
            }
        }
    }
}
