//! Property tests of what `oauth_token` reads from a token endpoint (and
//! `gcp_auth` from Google's STS and metadata server, through the same
//! [`token_answer`]): any answer is a token, a refusal or a typed error,
//! never a panic; a valid answer reads back as the token sent; `expires_in`
//! of any size or sign is a bounded lifetime the clock can add, and a
//! positive one never means "does not expire"; a token it accepts can be
//! injected; and a refusal that echoes what the proxy sent (the client
//! secret in the form or the Basic header, `token_endpoint_headers`) shows
//! none of it.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::value::RawValue;

use super::{expires_in, token_answer, Cached, OAuthToken, MAX_EXPIRES_IN, STUB_TOKEN};
use crate::backend_answers::{
    answer, bytes, has_control, holds_part_of, number, quoted, said, string, value,
};
use crate::config::TransformConfig;
use crate::pipeline::PhaseOutcome;
use crate::transforms::test_support::{request, run, sources};

/// Access tokens as endpoints mint them: opaque, JWT-like, with the
/// characters RFC 6750's `b64token` allows.
fn access_token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._~+/-]{1,64}=*",
        "ey[A-Za-z0-9_-]{10,40}\\.[A-Za-z0-9_-]{10,40}\\.[A-Za-z0-9_-]{10,40}",
    ]
}

/// A token endpoint's answer around the valid shape.
fn token_response() -> impl Strategy<Value = Vec<u8>> {
    answer(vec![
        (
            "access_token",
            prop_oneof![3 => access_token().prop_map(|t| quoted(&t)), 1 => string()].boxed(),
        ),
        (
            "expires_in",
            prop_oneof![3 => number(), 1 => number().prop_map(|n| quoted(&n)), 1 => string()]
                .boxed(),
        ),
        (
            "token_type",
            prop_oneof![Just(quoted("Bearer")), string()].boxed(),
        ),
        ("refresh_token", string().boxed()),
        ("scope", string().boxed()),
        ("error", string().boxed()),
        ("error_description", string().boxed()),
        ("id_token", value().boxed()),
    ])
}

fn status() -> impl Strategy<Value = StatusCode> {
    prop_oneof![
        3 => Just(StatusCode::OK),
        1 => (200u16..600).prop_map(|s| StatusCode::from_u16(s).expect("status")),
    ]
}

/// Whether a JSON number's text is above zero (read from its digits: `1e-400`
/// is above zero though no f64 holds it).
fn positive(number: &str) -> bool {
    let mantissa = number.split(['e', 'E']).next().unwrap_or("");
    !mantissa.starts_with('-') && mantissa.bytes().any(|b| (b'1'..=b'9').contains(&b))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_answer_is_a_token_a_refusal_or_an_error(
        status in status(),
        body in prop_oneof![bytes(), token_response()],
    ) {
        match token_answer(status, &body) {
            Ok(Ok(t)) => {
                prop_assert!(status.is_success());
                prop_assert!(!t.access_token.is_empty() && t.access_token.as_str() != STUB_TOKEN);
                prop_assert!(
                    http::HeaderValue::from_str(&format!("Bearer {}", t.access_token.as_str())).is_ok(),
                    "a token that cannot be sent: {:?}", t.access_token.as_str()
                );
                prop_assert!(t.expires_in.is_none_or(|s| s <= MAX_EXPIRES_IN));
                prop_assert!(
                    t.refresh_token.as_ref().is_none_or(|r| !r.is_empty()),
                    "an empty refresh token would replace the one held"
                );
                let cached = Cached::new(&t);
                let _ = cached.usable();
            }
            Ok(Err(refusal)) => prop_assert_eq!(refusal.status, status),
            Err(_) => {}
        }
    }

    #[test]
    fn a_valid_answer_reads_back_as_the_token_sent(
        access in access_token(),
        lifetime in prop::option::of(0u64..10_000_000),
        refresh in prop::option::of("[A-Za-z0-9._-]{1,40}"),
        as_string in any::<bool>(),
    ) {
        prop_assume!(access != STUB_TOKEN);
        let mut fields = vec![
            (quoted("access_token"), quoted(&access)),
            (quoted("token_type"), quoted("Bearer")),
        ];
        if let Some(l) = lifetime {
            let n = l.to_string();
            fields.push((quoted("expires_in"), if as_string { quoted(&n) } else { n }));
        }
        if let Some(r) = &refresh {
            fields.push((quoted("refresh_token"), quoted(r)));
        }
        let body = crate::backend_answers::object(&fields);
        let Ok(Ok(t)) = token_answer(StatusCode::OK, body.as_bytes()) else {
            return Err(TestCaseError::fail(format!("not read: {body}")));
        };
        prop_assert_eq!(t.access_token.as_str(), access.as_str());
        prop_assert_eq!(t.expires_in, lifetime.map(|l| l.min(MAX_EXPIRES_IN)));
        prop_assert_eq!(t.refresh_token.as_ref().map(|r| r.as_str()), refresh.as_deref());
    }

    #[test]
    fn expires_in_is_a_bounded_lifetime_and_positive_when_the_number_is(
        n in number(),
        quote in any::<bool>(),
    ) {
        let text = if quote { quoted(&n) } else { n.clone() };
        let raw: Box<RawValue> = serde_json::from_str(&text).expect("valid JSON");
        let got = expires_in(&raw);
        prop_assert!(got.is_some(), "{} not read", n);
        let got = got.unwrap_or_default();
        prop_assert!(got <= MAX_EXPIRES_IN);
        if positive(&n) {
            prop_assert!(got >= 1, "{} read as {}: does not expire", n, got);
        } else if n.starts_with('-') && positive(&n[1..]) {
            prop_assert_eq!(got, 1, "{} is already expired", n);
        }
    }
}

proptest! {
    // Each case builds the transform and mints against a loopback endpoint.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn an_endpoint_refusal_shows_none_of_what_was_sent(
        secret in "[A-Za-z0-9+/=%&@!_.~-]{12,40}",
        header_value in "[A-Za-z0-9+/=_.~-]{12,40}",
        said in said(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let detail = rt.block_on(refused_mint(&secret, &header_value, &said));
        let sent = detail.sent.lock().expect("lock").clone();
        let error = detail.error;
        prop_assert!(!holds_part_of(&error, &secret), "the client secret in {:?}", error);
        prop_assert!(!holds_part_of(&error, &header_value), "the header's value in {:?}", error);
        for basic in sent.iter().filter_map(|a| a.strip_prefix("Basic ")) {
            // Past "c1:" (the client id, not a secret), every character depends on the secret.
            prop_assert!(!holds_part_of(&error, &basic[4..]), "the Basic header {:?} in {:?}", basic, error);
        }
        prop_assert!(!has_control(&error), "{:?}", error);
    }
}

/// What a refused mint recorded, and the Authorization headers the endpoint saw.
struct Refused {
    error: String,
    sent: Arc<Mutex<Vec<String>>>,
}

/// Runs one `client_credentials` mint against an endpoint on loopback that
/// refuses it (401) with `said` in `error_description`, after echoing the
/// request's Authorization header, its `X-Key` header and its form body.
async fn refused_mint(
    secret: &str,
    header_value: &str,
    said: &crate::backend_answers::Said,
) -> Refused {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let seen = sent.clone();
    let said = said.of(secret, header_value);
    let addr = crate::test_http::serve_http1(hyper::service::service_fn(
        move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            let said = said.clone();
            async move {
                let h = |n: &str| {
                    req.headers()
                        .get(n)
                        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                        .unwrap_or_default()
                };
                let (auth, key) = (h("authorization"), h("x-key"));
                seen.lock().expect("lock").push(auth.clone());
                let form = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let description = format!(
                    "{said} (Authorization: {auth}; X-Key: {key}; body: {})",
                    String::from_utf8_lossy(&form)
                );
                let body = serde_json::json!({"error": "invalid_client", "error_description": description});
                let mut rsp = http::Response::new(Full::new(Bytes::from(body.to_string())));
                *rsp.status_mut() = StatusCode::UNAUTHORIZED;
                Ok::<_, std::convert::Infallible>(rsp)
            }
        },
    ))
    .await;
    let yaml = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
         transforms:\n  - name: oauth_token\n    config:\n      tokens:\n\
         \x20       - grant: client_credentials\n\
         \x20         client_id: {{type: env, var: ID}}\n\
         \x20         client_secret: {{type: env, var: SECRET}}\n\
         \x20         token_endpoint: \"http://{addr}/token\"\n\
         \x20         token_endpoint_headers: {{X-Key: {{type: env, var: KEY}}}}\n\
         \x20         rules: [{{host: api.example.com}}]\n"
    );
    let cfg = crate::config::parse(&yaml, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::OauthToken(c)) = cfg.transforms.first() else {
        panic!("not oauth_token");
    };
    let env = [("ID", "c1"), ("SECRET", secret), ("KEY", header_value)];
    let t = OAuthToken::new(c, &sources(&env)).expect("build");
    let mut req = request("GET", "/v1/things", &[], None);
    let mut cx = crate::pipeline::test_flow("api.example.com", "GET", "/v1/things");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Reject(..)), "not refused");
    let error = trace
        .annotations
        .get("error")
        .and_then(|e| e.as_str())
        .expect("an error annotation")
        .to_string();
    Refused { error, sent }
}

/// Found by the expires_in property: a positive lifetime under a second was rounded down to
/// 0, "does not expire", and the token kept for ever.
#[test]
fn a_lifetime_under_a_second_is_this_request_only_not_for_ever() {
    let read = |json: &str| {
        let raw: Box<RawValue> = serde_json::from_str(json).expect("valid JSON");
        expires_in(&raw)
    };
    assert_eq!(read("0.5"), Some(1));
    assert_eq!(read(r#""0.2""#), Some(1));
    assert_eq!(
        read("1e-400"),
        Some(1),
        "above zero, though no f64 holds it"
    );
    assert_eq!(read("-1e-400"), Some(1), "already expired");
    assert_eq!(read("0.0"), Some(0));
    assert_eq!(read("-0"), Some(0));
    assert_eq!(read("1.5"), Some(1));
}

/// Found by the answer property: an access token with a control character was taken, cached,
/// and every request then refused ("not a valid header value") until it expired, or for ever
/// without `expires_in`. It is refused when minted.
#[test]
fn an_access_token_that_cannot_be_sent_is_refused_when_minted() {
    for token in ["\\u0000", "abc\\ndef", "tok\\u007f"] {
        let body = format!(r#"{{"access_token":"{token}","expires_in":3600}}"#);
        match token_answer(StatusCode::OK, body.as_bytes()) {
            Err(super::MintError(e)) => assert!(e.contains("control character"), "{e}"),
            Ok(Ok(_)) => panic!("{token} taken as a token"),
            Ok(Err(_)) => panic!("{token} read as a refusal"),
        }
    }
}

/// Found by the answer property: an empty `refresh_token` in an answer replaced the one held,
/// and the next exchange sent `refresh_token=` (golang.org/x/oauth2 keeps the old one).
#[tokio::test]
async fn an_empty_refresh_token_in_an_answer_keeps_the_one_held() {
    let forms = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = forms.clone();
    let addr = crate::test_http::serve_http1(hyper::service::service_fn(
        move |req: http::Request<hyper::body::Incoming>| {
            let seen = seen.clone();
            async move {
                let form = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                seen.lock()
                    .expect("lock")
                    .push(String::from_utf8_lossy(&form).into_owned());
                // Expires at once: every request mints.
                let body = r#"{"access_token":"at-1","expires_in":1,"refresh_token":""}"#;
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
            }
        },
    ))
    .await;
    let yaml = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
         transforms:\n  - name: oauth_token\n    config:\n      tokens:\n\
         \x20       - grant: refresh_token\n\
         \x20         refresh_token: {{type: env, var: REFRESH}}\n\
         \x20         client_id: {{type: env, var: ID}}\n\
         \x20         token_endpoint: \"http://{addr}/token\"\n\
         \x20         rules: [{{host: api.example.com}}]\n"
    );
    let cfg = crate::config::parse(&yaml, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::OauthToken(c)) = cfg.transforms.first() else {
        panic!("not oauth_token");
    };
    let env = [("REFRESH", "rt-original-1234"), ("ID", "c1")];
    let t = OAuthToken::new(c, &sources(&env)).expect("build");
    let pipeline = crate::pipeline::Pipeline::new(vec![Arc::new(t)]);
    for _ in 0..2 {
        let mut req = request("GET", "/v1/things", &[], None);
        let mut cx = crate::pipeline::test_flow("api.example.com", "GET", "/v1/things");
        let outcome = pipeline
            .on_request(&mut req, &mut cx, &mut Vec::new())
            .await;
        assert!(matches!(outcome, PhaseOutcome::Continue), "not minted");
    }
    let forms = forms.lock().expect("lock").clone();
    assert_eq!(forms.len(), 2, "{forms:?}");
    for form in &forms {
        assert!(form.contains("refresh_token=rt-original-1234"), "{form}");
    }
}
