use super::*;
use crate::config::{McpServer, McpTool};
use crate::mcp::jsonrpc;
use crate::rules::Scope;
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::VecDeque;

/// A body that yields the given chunks.
struct Chunks(VecDeque<Bytes>);
impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

fn policy() -> Arc<ServerPolicy> {
    Arc::new(ServerPolicy::new(&McpServer {
        name: "s".into(),
        rules: Scope(vec![]),
        tools: vec![McpTool {
            name: "search".into(),
            when: vec![],
        }],
    }))
}

fn run(chunks: Vec<Vec<u8>>, want: Want, limit: usize) -> (Result<Vec<u8>, String>, Value) {
    let log = Arc::new(McpLog::new("s"));
    let body = crate::body::boxed(Chunks(chunks.into_iter().map(Bytes::from).collect()));
    let f = SseFilter::new(body, want, policy(), log.clone(), limit);
    let out = futures_lite(f);
    (out, log.to_value())
}

fn futures_lite(f: SseFilter) -> Result<Vec<u8>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        f.collect()
            .await
            .map(|c| c.to_bytes().to_vec())
            .map_err(|e| e.to_string())
    })
}

const STREAM: &str = "event: message\r\nid: 1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\r\n\r\n: keep-alive\n\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\n\
data: \"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"rm_rf\"}]}}\n\nretry: 10\r\revent: note\rdata: after\n\n";

#[test]
fn filters_the_awaited_answer_and_passes_everything_else() {
    let (out, log) = run(vec![STREAM.into()], Want::ids(&[json!(7)]), 0);
    let out = String::from_utf8(out.expect("stream")).expect("utf8");
    let expect = STREAM.replace(
        "id: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\n\
data: \"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"rm_rf\"}]}}\n\n",
        "id: 2\ndata: {\"id\":7,\"jsonrpc\":\"2.0\",\"result\":{\"tools\":[{\"name\":\"search\"}]}}\n\n",
    );
    assert_eq!(out, expect);
    assert_eq!(log["messages"][0]["tools_removed"], json!(["rm_rf"]));
}

#[test]
fn an_oversized_pending_event_fails_the_stream() {
    let big = format!("data: {}", "x".repeat(100));
    let (out, log) = run(vec![big.into()], Want::Shape, 64);
    assert!(out.expect_err("limit").contains("exceeds 64"));
    assert_eq!(log["messages"][0]["decision"], "deny");
}

/// The body's frames until its error, and the error.
fn until_error(chunks: Vec<Vec<u8>>, want: Want) -> (String, BoxError, Value) {
    let log = Arc::new(McpLog::new("s"));
    let body = crate::body::boxed(Chunks(chunks.into_iter().map(Bytes::from).collect()));
    let mut f = SseFilter::new(body, want, policy(), log.clone(), 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut out = Vec::new();
    let e = rt.block_on(async {
        loop {
            match f.frame().await {
                Some(Ok(frame)) => out.extend_from_slice(&frame.into_data().expect("data")),
                Some(Err(e)) => break e,
                None => panic!(
                    "the stream ended cleanly: {}",
                    String::from_utf8_lossy(&out)
                ),
            }
        }
    });
    assert!(
        http_body::Body::is_end_stream(&f),
        "nothing follows the error"
    );
    (String::from_utf8(out).expect("utf8"), e, log.to_value())
}

#[test]
fn an_answer_that_is_not_json_ends_the_stream_with_an_error_for_the_client() {
    // QA case c: the Python SDK's parser reads NaN; serde_json does not.
    let nan = "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\",\"inputSchema\":{\"default\":NaN}}]}}\n\n";
    let first = "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\n";
    for bad in [
        nan.as_bytes().to_vec(),
        b"data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm\xff\"}]}}\n\n".to_vec(),
        b"data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]".to_vec(),
    ] {
        let chunks = vec![first.into(), bad.clone(), "data: later\n\n".into()];
        let bad = String::from_utf8_lossy(&bad);
        let (out, e, log) = until_error(chunks, Want::ids(&[json!(7)]));
        assert!(!out.contains("rm"), "{bad}: {out}");
        assert!(out.starts_with(first), "events before it pass: {out}");
        assert!(!out.contains("later"), "nothing after it passes: {out}");
        let error = out[first.len()..]
            .strip_prefix("event: message\ndata: ")
            .expect("an error event");
        let v: Value = serde_json::from_str(error.trim_end()).expect("json");
        assert_eq!(v["id"], 7, "{v}");
        assert_eq!(v["error"]["code"], jsonrpc::INTERNAL_ERROR, "{v}");
        let refused = e.downcast_ref::<BodyRefused>().expect("a BodyRefused");
        assert_eq!(refused.reason, "mcp_unfilterable_response");
        assert_eq!(log["messages"][0]["decision"], "deny", "{log}");
    }
    // On a GET stream there is no id to answer: the stream is cut.
    let (out, _, _) = until_error(vec![nan.into()], Want::Shape);
    assert_eq!(out, "");
}

#[test]
fn events_clients_skip_pass_as_they_are() {
    let s = "event: other\ndata: NaN\n\nid: 3\ndata:\n\n: note\n\ndata: {\"id\":7,\"result\":{\"tools\":[]}}\n\n";
    let (out, _) = run(vec![s.into()], Want::ids(&[json!(7)]), 0);
    assert_eq!(out.expect("stream"), s.as_bytes());
}

#[test]
fn every_answer_of_the_stream_is_filtered_not_just_the_first() {
    // QA case d: a second answer with the same id, and one with id "7".
    let a = "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"search\"}]}}\n\n";
    let b =
        "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"search\"},{\"name\":\"rm_rf\"}]}}\n\n";
    let c = "data: {\"id\":\"7\",\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]}}\n\n";
    let (out, log) = run(
        vec![a.into(), b.into(), c.into()],
        Want::ids(&[json!(7)]),
        0,
    );
    let out = String::from_utf8(out.expect("stream")).expect("utf8");
    assert!(!out.contains("rm_rf"), "{out}");
    assert_eq!(out.matches("search").count(), 2, "{out}");
    assert_eq!(log["messages"][1]["tools_removed"], json!(["rm_rf"]));
    assert_eq!(log["messages"][2]["tools_removed"], json!(["rm_rf"]));
}

#[test]
fn a_bom_opening_the_stream_does_not_hide_the_first_event() {
    // WHATWG decoders (the TypeScript SDK's) drop it and dispatch the event.
    let s = "\u{feff}data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]}}\n\n";
    let (out, _) = run(vec![s.into()], Want::ids(&[json!(7)]), 0);
    let out = String::from_utf8(out.expect("stream")).expect("utf8");
    assert!(!out.contains("rm_rf"), "{out}");
}

#[test]
fn an_unterminated_last_event_is_judged_too() {
    let s = "data: {\"id\":7,\"result\":{\"tools\":[{\"name\":\"rm_rf\"}]}}";
    let (out, _) = run(vec![s.into()], Want::ids(&[json!(7)]), 0);
    let out = String::from_utf8(out.expect("stream")).expect("utf8");
    assert!(!out.contains("rm_rf"), "{out}");
}

proptest! {
    /// Whatever the server sends that holds no tools/list answer comes out byte for
    /// byte, however it is cut.
    #[test]
    fn other_streams_pass_unchanged(
        bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        cut in 0usize..300,
    ) {
        let cut = cut.min(bytes.len());
        let chunks = vec![bytes[..cut].to_vec(), bytes[cut..].to_vec()];
        let (out, _) = run(chunks, Want::Shape, 0);
        prop_assert_eq!(out.expect("stream"), bytes);
    }

    /// However the bytes are cut into chunks, the output is the same.
    #[test]
    fn chunking_does_not_matter(cuts in proptest::collection::vec(0..STREAM.len(), 0..12)) {
        let whole = run(vec![STREAM.into()], Want::ids(&[json!(7)]), 0).0.expect("whole");
        let mut cuts = cuts;
        cuts.sort_unstable();
        cuts.dedup();
        let mut chunks = Vec::new();
        let mut last = 0;
        for c in cuts.into_iter().chain([STREAM.len()]) {
            chunks.push(STREAM.as_bytes()[last..c].to_vec());
            last = c;
        }
        let (out, _) = run(chunks, Want::ids(&[json!(7)]), 0);
        prop_assert_eq!(out.expect("chunked"), whole);
    }
}
