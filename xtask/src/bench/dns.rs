//! A minimal DNS responder for the bench: answers A queries for every name
//! with the upstream's address and everything else with an empty NOERROR, so
//! iron-proxy (`dns.upstream_resolver`) resolves the upstream's name without
//! touching any system file. UDP only; one question per query.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::Result;
use tokio::net::UdpSocket;

/// Binds a loopback UDP port and serves on the current tokio runtime.
pub async fn start(answer: Ipv4Addr) -> Result<SocketAddr> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = sock.local_addr()?;
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                continue;
            };
            if let Some(reply) = respond(&buf[..n], answer) {
                let _ = sock.send_to(&reply, from).await;
            }
        }
    });
    Ok(addr)
}

/// The reply to one query, or None for a packet that is not a plain query.
fn respond(q: &[u8], answer: Ipv4Addr) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 || u16::from_be_bytes([q[4], q[5]]) != 1 {
        return None;
    }
    // Walk the question name to find QTYPE.
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let qtype = u16::from_be_bytes([*q.get(i)?, *q.get(i + 1)?]);
    let question_end = i + 4;
    if q.len() < question_end {
        return None;
    }
    let is_a = qtype == 1;
    let mut r = Vec::with_capacity(question_end + 16);
    r.extend_from_slice(&q[0..2]); // id
    r.push(0x84 | (q[2] & 0x01)); // QR, AA, RD copied
    r.push(0x80); // RA, NOERROR
    r.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..question_end]);
    if is_a {
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]); // name pointer, A, IN
        r.extend_from_slice(&300u32.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&answer.octets());
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_a_and_empty_aaaa() {
        // id 0x1234, RD, one question: a.b IN A
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(&[1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        let r = respond(&q, Ipv4Addr::new(127, 0, 0, 2)).expect("reply");
        assert_eq!(&r[0..2], &[0x12, 0x34]);
        assert_eq!(r[7], 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[127, 0, 0, 2]);
        let last = q.len() - 3;
        q[last] = 28; // AAAA
        let r = respond(&q, Ipv4Addr::new(127, 0, 0, 2)).expect("reply");
        assert_eq!(r[7], 0, "no answer");
        assert_eq!(r.len(), q.len());
        assert!(respond(&[0; 5], Ipv4Addr::LOCALHOST).is_none());
    }
}
