//! Property tests of what Workload Identity Federation reads from its peers:
//! IAM Credentials' `generateAccessToken` answer (any shape: a token with a
//! lifetime the clock can add, or a typed error), its error text (which may
//! echo the federated token the request carried: never shown), and the
//! subject token read from a file or URL (an error never quotes it).

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use proptest::prelude::*;

use super::{generated, impersonate_account, token_in, MintError, Shape};
use crate::backend_answers::{
    answer, bytes, has_control, holds_part_of, quoted, string, text, value, Said,
};
use crate::secrets::http::HttpClient;
use crate::transforms::oauth_token::{Cached, STUB_TOKEN};

/// RFC 3339 times as a peer may write them: past, near, far, with offsets
/// and fractions, and text that is not a time.
fn expire_time() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => (-100_000i64..10_000_000, prop::sample::select(vec!["Z", "+00:00", "-07:30", "+14:00"]), prop::option::of(0u32..1_000_000_000))
            .prop_map(|(ahead, offset, nanos)| {
                let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(ahead);
                let t = t.replace_nanosecond(nanos.unwrap_or(0)).expect("nanos");
                let s = t.format(&time::format_description::well_known::Rfc3339).expect("format");
                quoted(&s.replace('Z', offset))
            }),
        1 => Just(quoted("9999-12-31T23:59:59.999999999Z")),
        1 => Just(quoted("0000-01-01T00:00:00Z")),
        1 => string(),
        1 => value(),
    ]
}

/// A `generateAccessToken` answer around the valid shape.
fn generate_access_token() -> impl Strategy<Value = Vec<u8>> {
    answer(vec![
        (
            "accessToken",
            prop_oneof![
                3 => "[A-Za-z0-9._-]{1,60}".prop_map(|t| quoted(&t)),
                1 => text().prop_map(|t| quoted(&t)),
                1 => string(),
            ]
            .boxed(),
        ),
        ("expireTime", expire_time().boxed()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_generate_access_token_answer_is_a_usable_token_or_an_error(
        body in prop_oneof![bytes(), generate_access_token()],
        lifetime in 600u64..=43_200,
    ) {
        if let Ok(t) = generated(&body, lifetime) {
            prop_assert!(!t.access_token.is_empty() && t.access_token.as_str() != STUB_TOKEN);
            prop_assert!(
                http::HeaderValue::from_str(&format!("Bearer {}", t.access_token.as_str())).is_ok(),
                "a token that cannot be sent: {:?}", t.access_token.as_str()
            );
            prop_assert!(t.expires_in.is_some_and(|s| s >= 1));
            let _ = Cached::new(&t).usable();
        }
    }

    #[test]
    fn a_subject_token_is_never_quoted_in_an_error(
        token in "[A-Za-z0-9._-]{12,60}",
        raw in prop_oneof![
            bytes(),
            text().prop_map(String::into_bytes),
        ],
        json in any::<bool>(),
    ) {
        // What the source held, with the token somewhere in it.
        let held = [raw.as_slice(), token.as_bytes(), &raw].concat();
        let shape = if json { Shape::Json("id_token") } else { Shape::Text };
        if let Err(MintError(e)) = token_in(&held, &shape, "the subject token url http://x/t") {
            prop_assert!(!holds_part_of(&e, &token), "{:?}", e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn an_impersonation_refusal_shows_no_federated_token(
        federated in "[A-Za-z0-9._~+/-]{12,60}",
        said in crate::backend_answers::said(),
        status in prop::sample::select(vec![400u16, 401, 403, 404, 429, 500, 503]),
        shape in 0..3usize,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let e = rt.block_on(refused_impersonation(&federated, &said, status, shape));
        prop_assert!(!holds_part_of(&e, &federated), "{:?}", e);
        prop_assert!(!has_control(&e), "{:?}", e);
    }
}

/// One impersonation against a loopback IAM that refuses it with `status`,
/// its error echoing `said` and the request's Authorization header.
async fn refused_impersonation(federated: &str, said: &Said, status: u16, shape: usize) -> String {
    let said = Arc::new(said.of(federated, federated));
    let addr = crate::test_http::serve_http1(hyper::service::service_fn(
        move |req: http::Request<hyper::body::Incoming>| {
            let said = said.clone();
            async move {
                let auth = req
                    .headers()
                    .get("authorization")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                let message = format!("{said} (request had {auth})");
                let body = match shape {
                    0 => serde_json::json!({"error": {"code": status, "message": message, "status": "PERMISSION_DENIED"}}),
                    1 => serde_json::json!({"error": {"status": message}}),
                    _ => serde_json::json!({"error": {"message": message}}),
                };
                let mut rsp = http::Response::new(Full::new(Bytes::from(body.to_string())));
                *rsp.status_mut() = StatusCode::from_u16(status).expect("status");
                Ok::<_, std::convert::Infallible>(rsp)
            }
        },
    ))
    .await;
    let url = format!(
        "http://{addr}/v1/projects/-/serviceAccounts/sa@p.iam.gserviceaccount.com:generateAccessToken"
    );
    let scopes = ["https://www.googleapis.com/auth/cloud-platform".to_string()];
    match impersonate_account(&HttpClient::new(), &url, federated, &scopes, 3600).await {
        Ok(_) => panic!("a refusal read as a token"),
        Err(MintError(e)) => e,
    }
}

/// As `oauth_token`'s: an access token with a control character is refused when minted, not
/// cached to fail every request until it expires.
#[test]
fn an_impersonated_token_that_cannot_be_sent_is_refused() {
    let e = generated(
        br#"{"accessToken":"ya29.a\nb","expireTime":"2999-01-01T00:00:00Z"}"#,
        3600,
    )
    .err()
    .map(|MintError(e)| e);
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("control character")),
        "{e:?}"
    );
}
