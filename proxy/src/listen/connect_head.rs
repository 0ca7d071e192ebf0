//! The first request on a tunnel connection, read without hyper when it is
//! a plain CONNECT.
//!
//! Most tunnel clients (curl, Python, Go, Node, git) open each connection
//! with one CONNECT and wait for the answer before starting TLS. Reading
//! that head here, instead of serving the connection with hyper and taking
//! it back through an upgrade, leaves the tunnel on the bare TCP stream:
//! no hyper connection, upgrade channel or boxed stream per connection, and
//! the TLS served inside runs on the same stream type as `https_listen`'s.
//! Anything else (another method, an unusual or oversized head, bytes sent
//! after the head before our answer) goes to hyper with the bytes read so
//! far put back, exactly as before.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The longest CONNECT head read here; a longer one goes to hyper.
const HEAD_MAX: usize = 16 * 1024;
/// Headers a CONNECT head may have here; one with more goes to hyper, whose
/// limit is [`super::H1_MAX_HEADERS`].
const HEADERS_MAX: usize = 100;
/// The most one read takes.
const READ_MAX: usize = 4096;
/// What a CONNECT request starts with.
const CONNECT: &[u8] = b"CONNECT ";

/// A tunnel client's first request, as far as it was read.
#[derive(Debug, PartialEq, Eq)]
pub enum FirstRequest {
    /// A complete CONNECT head with nothing after it.
    Connect {
        /// The request target, authority form (`host:port`).
        target: http::uri::Authority,
        /// The head's bytes.
        head: Vec<u8>,
    },
    /// Anything else: the bytes read so far, for hyper.
    Other(Vec<u8>),
    /// The client closed, failed or went silent before its head was complete.
    Gone,
}

/// Reads the first request's head, starting from the `first` bytes already
/// read, for at most `timeout` (hyper's header read timeout).
pub async fn read<I>(io: &mut I, first: Vec<u8>, timeout: Duration) -> FirstRequest
where
    I: AsyncRead + Unpin,
{
    let read = async {
        let mut buf = first;
        loop {
            if !CONNECT.starts_with(&buf[..buf.len().min(CONNECT.len())]) {
                return FirstRequest::Other(buf);
            }
            if let Some(end) = head_end(&buf) {
                return if end == buf.len() {
                    parse(buf)
                } else {
                    FirstRequest::Other(buf)
                };
            }
            if bare_lf_end(&buf) {
                // A head whose lines end in a bare LF, which hyper (httparse)
                // reads: it answers at once. Waiting here for CRLF CRLF held
                // the client until the read timeout, then dropped it
                // unanswered and unrecorded (session 47's review).
                return FirstRequest::Other(buf);
            }
            if buf.len() > HEAD_MAX {
                return FirstRequest::Other(buf);
            }
            // Straight into `buf`, at most 4 KiB a read: a buffer on the
            // stack here was kept in every tunnel connection's future (the
            // largest of its states) for the connection's life.
            buf.reserve(READ_MAX);
            match (&mut *io).take(READ_MAX as u64).read_buf(&mut buf).await {
                Ok(0) | Err(_) => return FirstRequest::Gone,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(FirstRequest::Gone)
}

/// Where the head ends (just past its blank line), if it does.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Whether `buf` holds a blank line ended by a bare LF (`\n\n` or
/// `\n\r\n` without CRLF CRLF): the end of a head as httparse reads it.
fn bare_lf_end(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

/// A complete head: a CONNECT with an authority-form target and no body,
/// or anything else for hyper to answer.
fn parse(head: Vec<u8>) -> FirstRequest {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let target = match req.parse(&head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => req.path,
        _ => None,
    };
    let framed = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
    });
    let authority = target
        .filter(|_| req.method == Some("CONNECT") && !framed)
        .and_then(|t| t.parse::<http::Uri>().ok())
        .filter(|u| u.scheme().is_none() && u.path_and_query().is_none())
        .and_then(|u| u.authority().cloned());
    match authority {
        Some(target) => FirstRequest::Connect { target, head },
        None => FirstRequest::Other(head),
    }
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;

    async fn first(parts: &[&[u8]]) -> FirstRequest {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let (head, rest) = parts.split_first().expect("parts");
        let rest: Vec<Vec<u8>> = rest.iter().map(|p| p.to_vec()).collect();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for p in rest {
                client.write_all(&p).await.expect("write");
                tokio::task::yield_now().await;
            }
            client
        });
        let got = read(&mut server, head.to_vec(), Duration::from_millis(200)).await;
        drop(writer.await);
        got
    }

    fn connect(target: &str, head: &[u8]) -> FirstRequest {
        FirstRequest::Connect {
            target: target.parse().expect("authority"),
            head: head.to_vec(),
        }
    }

    #[tokio::test]
    async fn a_connect_head_in_pieces_is_read_whole() {
        let head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: curl\r\n\r\n";
        assert_eq!(first(&[head]).await, connect("example.com:443", head));
        assert_eq!(
            first(&[
                b"CONN",
                b"ECT example.com:443 HTTP/1.1\r\n",
                b"Host: x\r\n\r\n"
            ])
            .await,
            connect(
                "example.com:443",
                b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
        );
        let v6 = b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n";
        assert_eq!(first(&[v6]).await, connect("[2001:db8::1]:8443", v6));
    }

    #[tokio::test]
    async fn anything_else_goes_to_hyper_with_every_byte_read() {
        for bytes in [
            &b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n"[..],
            b"CONNECT example.com:443 HTTP/1.1\r\n\r\n\x16\x03\x01", // TLS sent before our answer
            b"CONNECT http://example.com:443/ HTTP/1.1\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"CONNECT exa mple.com:443 HTTP/1.1\r\n\r\n",
            b"CONNECT  HTTP/1.1\r\n\r\n",
            b"CONNECTX example.com:443 HTTP/1.1\r\n\r\n",
            // Lines ended by a bare LF, which hyper reads (session 47's review: held
            // until the read timeout, then dropped unanswered).
            b"CONNECT example.com:443 HTTP/1.1\nHost: x\n\n",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: x\n\r\n",
        ] {
            assert_eq!(
                first(&[bytes]).await,
                FirstRequest::Other(bytes.to_vec()),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        let mut huge = b"CONNECT example.com:443 HTTP/1.1\r\nX-Pad: ".to_vec();
        huge.resize(HEAD_MAX + 10, b'a');
        match first(&[&huge[..20], &huge[20..]]).await {
            FirstRequest::Other(b) => assert_eq!(b, huge),
            other => panic!("{other:?}"),
        }
        let mut many = b"CONNECT example.com:443 HTTP/1.1\r\n".to_vec();
        for i in 0..=HEADERS_MAX {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(first(&[&many]).await, FirstRequest::Other(many.clone()));
    }

    #[tokio::test]
    async fn a_client_that_closes_or_stalls_mid_head_is_gone() {
        let partial = b"CONNECT example.com:443 HTT".to_vec();
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let closed = read(&mut server, partial.clone(), Duration::from_secs(5)).await;
        assert_eq!(closed, FirstRequest::Gone);
        let (_client, mut server) = tokio::io::duplex(1024);
        let stalled = read(&mut server, partial, Duration::from_millis(50)).await;
        assert_eq!(stalled, FirstRequest::Gone);
    }
}
