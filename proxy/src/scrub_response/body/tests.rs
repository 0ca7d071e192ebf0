use http_body_util::BodyExt as _;

use super::*;
use crate::audit::{AuditRecord, Mode};
use crate::body::decode::test_streams::gzip;
use crate::config::SecretsConfig;
use crate::pipeline::{test_flow, PhaseOutcome, Pipeline};
use crate::secrets::{SecretValue, Sources};
use crate::transforms::secrets::Secrets;

const KEY: &str = "sk-live-reflected/key+42";

/// KEY's mask: same length.
fn masked() -> String {
    format!("[redacted]{}", "*".repeat(KEY.len() - 10))
}

/// Frames handed out one by one.
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl http_body::Body for Frames {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

/// A body of `data` (each its own frame), then `trailers` if any.
fn frames(data: &[&[u8]], trailers: Option<http::HeaderMap>) -> Body {
    let mut f: std::collections::VecDeque<Frame<Bytes>> = data
        .iter()
        .map(|d| Frame::data(Bytes::copy_from_slice(d)))
        .collect();
    if let Some(t) = trailers {
        f.push_back(Frame::trailers(t));
    }
    body::boxed(Frames(f))
}

struct Run {
    rsp: Response<Body>,
    record: AuditRecord,
    outcome: PhaseOutcome,
}

/// The response phase of a pipeline of one `secrets` transform over `rsp`,
/// for a `method` request it gave `values` (`scrub`: its
/// `scrub_response_bodies`).
async fn respond(method: &str, values: &[&str], scrub: bool, mut rsp: Response<Body>) -> Run {
    let t =
        Secrets::new(&SecretsConfig::default(), &Sources::new(Default::default())).expect("built");
    let p = Pipeline::new(vec![std::sync::Arc::new(t)]);
    let mut cx = test_flow("api.test", method, "/echo");
    for v in values {
        cx.note_secret_value(&SecretValue::new(v.to_string()), "secrets", scrub);
    }
    let mut record = AuditRecord::new(Mode::Https, "127.0.0.1:1".into());
    let outcome = p
        .on_response(&mut rsp, &mut cx, &mut record.response_transforms)
        .await;
    record.late.append(&mut cx.late_audit);
    Run {
        rsp,
        record,
        outcome,
    }
}

/// The body read to its end (or its error) and the record as written then.
async fn read(
    run: Run,
) -> (
    http::response::Parts,
    Result<Vec<u8>, BoxError>,
    AuditRecord,
) {
    let (parts, body) = run.rsp.into_parts();
    let got = body.collect().await.map(|c| c.to_bytes().to_vec());
    let mut record = run.record;
    record.settle_late();
    (parts, got, record)
}

fn annotation(r: &AuditRecord, key: &str) -> Option<Value> {
    r.response_transforms
        .iter()
        .find(|t| t.name == "secrets")
        .and_then(|t| t.annotations.get(key).cloned())
}

#[tokio::test]
async fn an_identity_body_keeps_its_length_and_the_record_counts() {
    let text = format!("{{\"echo\":\"Bearer {KEY}\",\"again\":\"{KEY}\"}}");
    let mut rsp = Response::new(frames(
        &[&text.as_bytes()[..20], &text.as_bytes()[20..]],
        None,
    ));
    rsp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(text.len()));
    let run = respond("GET", &[KEY], true, rsp).await;
    assert!(matches!(run.outcome, PhaseOutcome::Continue));
    let (parts, got, rec) = read(run).await;
    let got = String::from_utf8(got.expect("body")).expect("utf-8");
    assert_eq!(
        got,
        format!("{{\"echo\":\"Bearer {0}\",\"again\":\"{0}\"}}", masked())
    );
    assert_eq!(
        parts.headers[CONTENT_LENGTH],
        text.len().to_string().as_str()
    );
    assert_eq!(
        annotation(&rec, "response_body_redacted"),
        Some(Value::from(2))
    );
    assert_eq!(annotation(&rec, "response_body_decoded"), None);
}

#[tokio::test]
async fn a_gzip_body_is_decoded_scrubbed_and_sent_as_identity() {
    let text = format!("{{\"authorization\":\"Bearer {KEY}\"}}\n").repeat(50);
    let coded = gzip(text.as_bytes());
    let pieces: Vec<&[u8]> = coded.chunks(7).collect();
    let mut rsp = Response::new(frames(&pieces, None));
    let h = rsp.headers_mut();
    h.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    h.insert(CONTENT_LENGTH, HeaderValue::from(coded.len()));
    h.insert(ETAG, HeaderValue::from_static("\"v1\""));
    let (parts, got, rec) = read(respond("POST", &[KEY], true, rsp).await).await;
    let got = String::from_utf8(got.expect("body")).expect("utf-8");
    assert_eq!(got, text.replace(KEY, &masked()));
    assert!(parts.headers.get(CONTENT_ENCODING).is_none());
    assert!(parts.headers.get(CONTENT_LENGTH).is_none());
    assert_eq!(parts.headers[ETAG], "W/\"v1\"");
    assert_eq!(
        annotation(&rec, "response_body_redacted"),
        Some(Value::from(50))
    );
    assert_eq!(
        annotation(&rec, "response_body_decoded"),
        Some(serde_json::json!(["gzip"]))
    );
}

#[tokio::test]
async fn a_body_that_breaks_while_decoding_is_cut_as_refused() {
    let coded = gzip(format!("{KEY} {KEY}").as_bytes());
    let mut bad = coded.clone();
    bad.truncate(coded.len() - 12);
    bad.extend_from_slice(&[0xff; 12]);
    let mut rsp = Response::new(frames(&[&bad], None));
    rsp.headers_mut()
        .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    let (_, got, _) = read(respond("GET", &[KEY], true, rsp).await).await;
    let e = got.expect_err("cut");
    let refused = crate::find_in_chain::<BodyRefused>(e.as_ref()).expect("a refusal");
    assert_eq!(refused.reason, UNDECODABLE);
    assert!(!refused.detail.contains(KEY), "{}", refused.detail);
}

#[tokio::test]
async fn an_unknown_coding_or_a_coded_range_is_refused_before_the_head() {
    for (coding, status) in [("compress", 200), ("gzip", 206)] {
        let mut rsp = Response::new(body::full("whatever"));
        *rsp.status_mut() = StatusCode::from_u16(status).expect("status");
        rsp.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static(coding));
        let run = respond("GET", &[KEY], true, rsp).await;
        match run.outcome {
            PhaseOutcome::Fail(by, e) => {
                assert_eq!(by, "secrets");
                assert_eq!(e.reason, "response_body_unscrubbable");
                assert_eq!(e.status, StatusCode::BAD_GATEWAY);
            }
            _ => panic!("{coding} {status}: not refused"),
        }
    }
}

#[tokio::test]
async fn trailers_follow_the_released_bytes() {
    let mut t = http::HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static("0"));
    // The body ends in the start of the key, held back until the trailers.
    let rsp = Response::new(frames(&[b"tail sk-live-re"], Some(t)));
    let run = respond("GET", &[KEY], true, rsp).await;
    let mut body = run.rsp.into_body();
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(f) = body.frame().await {
        let f = f.expect("frame");
        match f.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    assert_eq!(data, b"tail sk-live-re");
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
}

#[tokio::test]
async fn nothing_is_wrapped_without_a_value_a_body_or_the_switch() {
    let cases: [(&str, &[&str], bool, u16); 5] = [
        ("GET", &[], true, 200),
        ("GET", &["short"], true, 200),
        ("HEAD", &[KEY], true, 200),
        ("GET", &[KEY], true, 204),
        ("GET", &[KEY], false, 200),
    ];
    for (method, values, scrub, status) in cases {
        let text = format!("echo {KEY}");
        let mut rsp = Response::new(body::full(text.clone()));
        *rsp.status_mut() = StatusCode::from_u16(status).expect("status");
        rsp.headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let run = respond(method, values, scrub, rsp).await;
        assert!(matches!(run.outcome, PhaseOutcome::Continue));
        // With the switch off, only the trailers' watch (no field unless one is changed).
        let watch = usize::from(!scrub);
        assert_eq!(
            run.record.late.len(),
            watch,
            "{method} {values:?} {scrub} {status}"
        );
        let (parts, got, rec) = read(run).await;
        assert_eq!(got.expect("body"), text.as_bytes(), "left as it was");
        assert_eq!(parts.headers[CONTENT_ENCODING], "gzip");
        // The trailers' watch keeps an entry, with nothing in it.
        assert!(
            rec.response_transforms
                .iter()
                .all(|t| t.annotations.is_empty()),
            "{rec:?}"
        );
    }
}

/// Trailers are scrubbed as headers are, with the body's scrub on or off: a gRPC error's
/// `grpc-message` quoting the key came back whole (credential audit, finding 1).
#[tokio::test]
async fn trailers_are_scrubbed_with_or_without_the_body() {
    for scrub in [true, false] {
        let mut t = http::HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("16"));
        t.insert(
            "grpc-message",
            HeaderValue::from_str(&format!("bad key {KEY}")).expect("value"),
        );
        let rsp = Response::new(frames(&[b"{}"], Some(t)));
        let run = respond("GET", &[KEY], scrub, rsp).await;
        let mut record = run.record;
        let mut body = run.rsp.into_body();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(f) = body.frame().await {
            match f.expect("frame").into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        let t = trailers.expect("trailers");
        assert_eq!(t["grpc-message"], "bad key [redacted]", "scrub {scrub}");
        assert_eq!(t["grpc-status"], "16");
        assert_eq!(data, b"{}");
        record.settle_late();
        assert_eq!(
            annotation(&record, "response_trailers_redacted"),
            Some(serde_json::json!(["grpc-message"])),
            "scrub {scrub}"
        );
    }
}
