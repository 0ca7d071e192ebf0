//! Property test of the backend client's bound on what it reads: an answer
//! of any length, in chunks of any sizes, with or without a
//! `Content-Length`, is read whole when it fits the bound and refused,
//! never cut, when it does not.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Frame;
use proptest::prelude::*;

use super::{HttpClient, MAX_RESPONSE_BYTES};

/// A body sent as the chunks it was made of, each a frame of its own.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|c| Ok(Frame::data(c))))
    }
}

/// Serves one answer of `chunks` (with a `Content-Length` when `sized`) on
/// 127.0.0.1; returns its URL.
async fn answering(chunks: Vec<Vec<u8>>, sized: bool) -> String {
    let addr = crate::test_http::serve_http1(hyper::service::service_fn(move |_req| {
        let chunks = chunks.clone();
        async move {
            let len: usize = chunks.iter().map(Vec::len).sum();
            let mut rsp = Response::new(Chunks(chunks.into_iter().map(Bytes::from).collect()));
            if sized {
                rsp.headers_mut()
                    .insert(http::header::CONTENT_LENGTH, len.into());
            }
            Ok::<_, Infallible>(rsp)
        }
    }))
    .await;
    format!("http://{addr}/")
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn an_answer_is_read_whole_within_the_bound_and_refused_past_it(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..700), 0..8),
        max in 0usize..3000,
        sized in any::<bool>(),
    ) {
        let sent: Vec<u8> = chunks.concat();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let got = rt.block_on(async {
            let url = answering(chunks, sized).await;
            HttpClient::new().send_limited(get(&url), max).await
        });
        if sent.len() <= max {
            let got = got.map_err(|e| TestCaseError::fail(format!("{} of {max} bytes refused: {e}", sent.len())))?;
            prop_assert_eq!(got.body().as_slice(), sent.as_slice());
        } else {
            let e = got.err().ok_or_else(|| TestCaseError::fail(format!("{} bytes read past {max}", sent.len())))?;
            prop_assert!(e.contains(&format!("larger than {max} bytes")), "{}", e);
        }
    }
}

#[tokio::test]
async fn the_default_bound_is_a_mebibyte() {
    for (len, fits) in [(MAX_RESPONSE_BYTES, true), (MAX_RESPONSE_BYTES + 1, false)] {
        let url = answering(vec![vec![b'x'; len]], false).await;
        let got = HttpClient::new().send(get(&url)).await;
        assert_eq!(
            got.is_ok(),
            fits,
            "{len} bytes: {:?}",
            got.map(|(s, b)| (s, b.len()))
        );
    }
}
