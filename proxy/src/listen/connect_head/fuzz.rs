//! Property tests of the tunnel's first-request reader: every byte a client
//! sent is handed on (to the tunnel or to hyper), whatever it sent and
//! however it arrived, and a CONNECT read here is one hyper reads the same
//! way: this path skips hyper, so it must not accept a head hyper refuses
//! or name another target than hyper would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, Uri};
use hyper::body::Incoming;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{read, FirstRequest, HEAD_MAX, READ_MAX};

/// What `read` made of `input`, which arrives in the given pieces (the first
/// already read by the tunnel's sniff) and then ends; and the bytes it left
/// unread.
fn first_request(input: &[u8], cuts: &[prop::sample::Index]) -> (FirstRequest, Vec<u8>) {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(input.len() + 1)).collect();
    at.sort_unstable();
    let first_len = at.first().copied().unwrap_or(0).max(1).min(input.len());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, mut server) = tokio::io::duplex(256 * 1024);
        let (first, rest) = input.split_at(first_len);
        let mut pieces = Vec::new();
        let mut from = 0;
        for &a in at.iter().skip(1) {
            let a = a.saturating_sub(first_len).min(rest.len());
            if a > from {
                pieces.push(rest[from..a].to_vec());
                from = a;
            }
        }
        pieces.push(rest[from..].to_vec());
        let writer = tokio::spawn(async move {
            for p in pieces {
                client.write_all(&p).await.expect("write");
                tokio::task::yield_now().await;
            }
            client.shutdown().await.expect("shutdown");
            client
        });
        // Nothing here waits on the clock: the input always ends.
        let got = read(&mut server, first.to_vec(), Duration::from_secs(600)).await;
        let mut unread = Vec::new();
        server.read_to_end(&mut unread).await.expect("unread");
        drop(writer.await);
        (got, unread)
    })
}

/// The method and target hyper's HTTP/1 server reads from `head`, if it
/// reads a request at all.
fn hyper_reads(head: &[u8]) -> Option<(Method, Uri)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        client.write_all(head).await.expect("write");
        let seen = Arc::new(Mutex::new(None));
        let svc = {
            let seen = seen.clone();
            hyper::service::service_fn(move |req: Request<Incoming>| {
                *seen.lock().expect("lock") = Some((req.method().clone(), req.uri().clone()));
                std::future::ready(Ok::<_, std::convert::Infallible>(Response::new(
                    http_body_util::Empty::<bytes::Bytes>::new(),
                )))
            })
        };
        let served = hyper::server::conn::http1::Builder::new()
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        // The head is all the client sends: hyper answers it (or refuses
        // it) and the connection ends; reading the answer lets it finish.
        let reader = tokio::spawn(async move {
            let mut answer = Vec::new();
            let _ = client.read_to_end(&mut answer).await;
        });
        let _ = served.await;
        reader.abort();
        let got = seen.lock().expect("lock").take();
        got
    })
}

/// The invariants of one read of `input`.
fn check(input: &[u8], cuts: &[prop::sample::Index]) -> Result<(), TestCaseError> {
    let (got, unread) = first_request(input, cuts);
    match got {
        FirstRequest::Other(read) => {
            prop_assert_eq!([read, unread].concat(), input, "bytes lost or reordered");
        }
        FirstRequest::Connect { target, head } => {
            prop_assert_eq!(&[head.clone(), unread].concat(), input, "bytes lost");
            let end = head
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| i + 4);
            prop_assert_eq!(end, Some(head.len()), "the head is not one whole head");
            let theirs = hyper_reads(&head);
            let text = String::from_utf8_lossy(&head);
            let Some((method, uri)) = theirs else {
                return Err(TestCaseError::fail(format!(
                    "read as CONNECT {target} here, refused by hyper: {text:?}"
                )));
            };
            prop_assert_eq!(method, Method::CONNECT, "{:?}", text);
            prop_assert_eq!(uri.authority(), Some(&target), "{:?}", text);
        }
        FirstRequest::Gone => {
            // Only a client that stopped before its head's end, and only
            // while it still looked like a CONNECT within the size read here.
            let looks =
                input.len() < 8 && b"CONNECT ".starts_with(input) || input.starts_with(b"CONNECT ");
            prop_assert!(looks, "a non-CONNECT was dropped: {:?}", input);
            // A head httparse (hyper's parser) reads as complete, whatever its line
            // endings, is answered: never dropped.
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let complete = matches!(
                httparse::Request::new(&mut headers).parse(input),
                Ok(httparse::Status::Complete(_))
            );
            prop_assert!(
                !complete && !input.windows(4).any(|w| w == b"\r\n\r\n"),
                "a whole head was dropped"
            );
            prop_assert!(
                input.len() <= HEAD_MAX + READ_MAX,
                "{} bytes dropped",
                input.len()
            );
        }
    }
    Ok(())
}

/// Header lines a CONNECT carries, and some it should not.
fn header_line() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9.-]{1,20}(:[0-9]{1,5})?".prop_map(|h| format!("Host: {h}")),
        Just("User-Agent: curl/8.5.0".to_string()),
        Just("Proxy-Connection: Keep-Alive".to_string()),
        Just("Proxy-Authorization: Basic dXNlcjpwYXNz".to_string()),
        Just("Content-Length: 0".to_string()),
        "[0-9]{1,3}".prop_map(|n| format!("Content-Length: {n}")),
        Just("Transfer-Encoding: chunked".to_string()),
        ("[A-Za-z][A-Za-z0-9-]{0,15}", "[ -~]{0,30}").prop_map(|(n, v)| format!("{n}: {v}")),
    ]
}

/// Request targets: authority form mostly, the odd other form.
fn target() -> impl Strategy<Value = String> {
    let port = prop_oneof![
        Just(String::new()),
        "[0-9]{1,6}".prop_map(|p| format!(":{p}"))
    ];
    let host = prop_oneof![
        "[a-zA-Z0-9]([a-zA-Z0-9.-]{0,30}[a-zA-Z0-9])?",
        any::<[u8; 4]>().prop_map(|a| std::net::Ipv4Addr::from(a).to_string()),
        any::<[u8; 16]>().prop_map(|a| format!("[{}]", std::net::Ipv6Addr::from(a))),
        "[!-~]{1,20}",
    ];
    prop_oneof![
        8 => (host, port).prop_map(|(h, p)| format!("{h}{p}")),
        1 => Just("*".to_string()),
        1 => "http://[a-z.]{1,10}:[0-9]{1,4}/[a-z]{0,5}",
    ]
}

/// A head built from its parts: a CONNECT (mostly) with its header lines.
fn head() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![8 => Just("CONNECT"), 1 => Just("GET"), 1 => Just("connect")],
        target(),
        prop_oneof![
            Just("HTTP/1.1"),
            Just("HTTP/1.0"),
            Just("HTTP/2.0"),
            Just("HTTP/1.1 ")
        ],
        prop::collection::vec(header_line(), 0..6),
        // Lines end in CRLF, or (as httparse also reads) a bare LF.
        prop_oneof![4 => Just("\r\n"), 1 => Just("\n")],
    )
        .prop_map(|(method, target, version, headers, eol)| {
            let mut h = format!("{method} {target} {version}{eol}");
            for line in headers {
                h.push_str(&line);
                h.push_str(eol);
            }
            h.push_str(eol);
            h.into_bytes()
        })
}

/// One change to a head's bytes.
#[derive(Debug, Clone)]
enum Edit {
    Cut(prop::sample::Index),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    /// The bytes from one place to another again, right after.
    Repeat(prop::sample::Index, prop::sample::Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<prop::sample::Index>().prop_map(Edit::Cut),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (
            any::<prop::sample::Index>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                Just(b"\r\n".to_vec()),
                Just(b"\r\n\r\n".to_vec()),
                Just(b" ".to_vec()),
                Just(b"\n".to_vec()),
                Just(b"\0".to_vec()),
            ]
        )
            .prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<prop::sample::Index>(), any::<prop::sample::Index>())
            .prop_map(|(a, b)| Edit::Repeat(a, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, e: &Edit) {
    let len = bytes.len();
    match e {
        Edit::Cut(i) => bytes.truncate(i.index(len + 1)),
        Edit::Set(i, b) if len > 0 => bytes[i.index(len)] = *b,
        Edit::Set(..) => {}
        Edit::Insert(i, b) => {
            let at = i.index(len + 1);
            bytes.splice(at..at, b.iter().copied());
        }
        Edit::Repeat(a, b) => {
            let (x, y) = (a.index(len + 1), b.index(len + 1));
            let (from, to) = (x.min(y), x.max(y));
            let part = bytes[from..to].to_vec();
            bytes.splice(to..to, part);
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_are_handed_on_whole(
        input in prop::collection::vec(any::<u8>(), 1..600),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        check(&input, &cuts)?;
    }

    #[test]
    fn a_built_head_is_read_as_hyper_reads_it(
        head in head(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        check(&head, &cuts)?;
    }

    #[test]
    fn an_edited_head_is_read_as_hyper_reads_it_or_handed_on(
        head in head(),
        edits in prop::collection::vec(edit(), 1..4),
        tail in prop::collection::vec(any::<u8>(), 0..2),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut bytes = head;
        for e in &edits {
            apply(&mut bytes, e);
        }
        bytes.extend_from_slice(&tail);
        prop_assume!(!bytes.is_empty());
        check(&bytes, &cuts)?;
    }
}
