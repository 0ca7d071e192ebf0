//! `gzip` / `x-gzip` (RFC 1952) as a push decoder: each member's header is
//! read once it is all there, its deflate data inflated as it comes, its
//! trailer (CRC-32 and length) checked; members may follow one another.

use super::{inflate_step, Codec, DecodeError};

/// The longest member header read (a file name or comment field can be
/// long; nothing legitimate is this long).
const MAX_HEADER: usize = 64 * 1024;

/// What is wrong with a gzip body.
#[derive(Debug, thiserror::Error)]
pub enum GzipError {
    /// The member does not start with the gzip magic and method 8.
    #[error("gzip member {member}: not a gzip header")]
    NotGzip {
        /// 1-based.
        member: usize,
    },
    /// Reserved header flags set (RFC 1952 §2.3.1: must be refused).
    #[error("gzip member {member}: reserved header flags {flags:#04x} set")]
    ReservedFlags {
        /// 1-based.
        member: usize,
        /// The flag byte.
        flags: u8,
    },
    /// A header longer than [`MAX_HEADER`].
    #[error("gzip member {member}: header longer than {MAX_HEADER} bytes")]
    HeaderTooLong {
        /// 1-based.
        member: usize,
    },
    /// The trailer's CRC-32 or length does not match the data.
    #[error("gzip member {member}: the trailer's CRC-32 or length does not match the data")]
    Trailer {
        /// 1-based.
        member: usize,
    },
}

enum State {
    /// Before a member's header (the first, or one after a trailer).
    Header,
    Body,
    Trailer,
    /// After a trailer: another member, or the end.
    Between,
}

pub(super) struct Gzip {
    state: State,
    inflate: flate2::Decompress,
    crc: flate2::Crc,
    members: usize,
}

impl Gzip {
    pub(super) fn new() -> Self {
        Gzip {
            state: State::Header,
            inflate: flate2::Decompress::new(false),
            crc: flate2::Crc::new(),
            members: 0,
        }
    }
}

/// The length of the gzip header at the start of `b`, once it is all there.
fn header_len(b: &[u8], member: usize) -> Result<Option<usize>, GzipError> {
    let magic = [0x1f, 0x8b, 8];
    if b.iter().zip(magic).any(|(x, m)| *x != m) {
        return Err(GzipError::NotGzip { member });
    }
    if b.len() < 10 {
        return Ok(None);
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        return Err(GzipError::ReservedFlags { member, flags });
    }
    let mut at = 10;
    if flags & 0x04 != 0 {
        // FEXTRA: a length, then that many bytes.
        let Some(len) = b.get(at..at + 2) else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes([len[0], len[1]]));
    }
    for field in [0x08, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & field != 0 {
            match b.get(at..).and_then(|r| r.iter().position(|&c| c == 0)) {
                Some(p) => at += p + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        at += 2; // FHCRC
    }
    Ok((b.len() >= at).then_some(at))
}

impl Codec for Gzip {
    fn name(&self) -> &'static str {
        "gzip"
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
                State::Between if rest.is_empty() => return Ok((used, 0, end)),
                State::Between => self.state = State::Header,
                State::Header => {
                    let member = self.members + 1;
                    match header_len(rest, member)? {
                        Some(n) => {
                            used += n;
                            self.members = member;
                            self.inflate.reset(false);
                            self.crc.reset();
                            self.state = State::Body;
                        }
                        None if rest.len() > MAX_HEADER => {
                            return Err(GzipError::HeaderTooLong { member }.into())
                        }
                        None => return Ok((used, 0, false)),
                    }
                }
                State::Body => {
                    let (u, made, ended) = inflate_step(&mut self.inflate, rest, out)?;
                    self.crc.update(&out[..made]);
                    used += u;
                    if ended {
                        self.state = State::Trailer;
                    }
                    if made > 0 || !ended {
                        return Ok((used, made, false));
                    }
                }
                State::Trailer => {
                    let Some(t) = rest.get(..8) else {
                        return Ok((used, 0, false));
                    };
                    let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                    let len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                    if crc != self.crc.sum() || len != self.crc.amount() {
                        return Err(GzipError::Trailer {
                            member: self.members,
                        }
                        .into());
                    }
                    used += 8;
                    self.state = State::Between;
                }
            }
        }
    }
}
