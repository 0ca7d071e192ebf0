//! Raw HTTP/2 frames for tests that play a misbehaving peer by hand (one
//! that never answers a PING, one that goes silent mid-response).

use tokio::io::{AsyncRead, AsyncReadExt as _};

pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PING: u8 = 0x6;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
/// `SETTINGS_MAX_CONCURRENT_STREAMS`, the most streams the peer may open.
pub(crate) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
/// `SETTINGS_INITIAL_WINDOW_SIZE`, the stream receive window.
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
/// `SETTINGS_MAX_HEADER_LIST_SIZE`, the largest header list the sender takes.
pub(crate) const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
/// The window every stream and the connection start with (RFC 9113 §6.9.2).
pub(crate) const DEFAULT_WINDOW: u32 = 65_535;
/// The ACK flag of SETTINGS and PING.
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
/// The END_STREAM flag of HEADERS and DATA.
pub(crate) const END_STREAM: u8 = 0x1;

/// One frame as read: type, flags, stream id, payload.
pub(crate) struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// A SETTINGS frame's value for `id`, if it carries one.
    pub(crate) fn setting(&self, id: u16) -> Option<u32> {
        self.payload.chunks_exact(6).find_map(|e| {
            (u16::from_be_bytes([e[0], e[1]]) == id)
                .then(|| u32::from_be_bytes([e[2], e[3], e[4], e[5]]))
        })
    }

    /// A WINDOW_UPDATE frame's increment.
    pub(crate) fn increment(&self) -> Option<u32> {
        let b: [u8; 4] = self.payload.get(..4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b) & 0x7fff_ffff)
    }
}

/// Reads one frame; None at end of stream.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(io: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    io.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream,
        payload,
    })
}

/// Encodes one frame.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_be_bytes();
    let mut f = vec![len[1], len[2], len[3], kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
