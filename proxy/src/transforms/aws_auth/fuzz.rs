//! Property tests of re-signing whatever SigV4 signature a workload sends:
//! its `Authorization` header or pre-signed URL parameters hold any text (a
//! URL's parameters any bytes, percent-encoded), and the transform signs the
//! request again or refuses it, never panics; a scope whose region or
//! service no header can carry is refused, and the refusal says which.

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

use super::tests::{transform, ENV};
use super::*;
use crate::pipeline::PhaseOutcome;
use crate::transforms::test_support::{request, run};

/// The outcome of the transform on `req`, sent to an S3 bucket's host.
fn outcome(mut req: Request<Body>) -> PhaseOutcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut cx = crate::pipeline::test_flow("bucket.s3.amazonaws.com", "GET", "/bucket/key");
    rt.block_on(async { run(transform("", ENV), &mut req, &mut cx).await.0 })
}

fn pct(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

/// A pre-signed GET whose credential and signed headers are as given.
fn presigned(credential: &str, signed: &str) -> Request<Body> {
    let date = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("date");
    let uri = format!(
        "/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={date}\
         &X-Amz-Expires=300&X-Amz-SignedHeaders={}&X-Amz-Signature=abc",
        pct(credential),
        pct(signed)
    );
    request("GET", &uri, &[("host", "bucket.s3.amazonaws.com")], None)
}

/// A GET signed in its `Authorization` header with `credential`.
fn header_signed(credential: &str, signed: &str) -> Request<Body> {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={credential}, SignedHeaders={signed}, Signature=0123abcd"
    );
    request(
        "GET",
        "/bucket/key",
        &[
            ("host", "bucket.s3.amazonaws.com"),
            ("x-amz-date", "20250101T000000Z"),
            ("authorization", &auth),
        ],
        None,
    )
}

fn scope_part() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9-]{1,12}",
        1 => "\\PC{0,12}",
        1 => "[ -~]{0,12}",
        1 => prop::sample::select(vec!["us-east-1\n", "eu-west-1\r\nx-evil: 1", "é", "s3\0", "\t"])
            .prop_map(str::to_string),
    ]
}

fn credential() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (scope_part(), scope_part())
            .prop_map(|(region, service)| format!("AKIAX/20250101/{region}/{service}/aws4_request")),
        1 => "\\PC{0,60}",
    ]
}

fn signed_headers() -> impl Strategy<Value = String> {
    prop_oneof![Just("host".to_string()), "[a-z;-]{0,30}", "\\PC{0,20}"]
}

/// Signed, refused, or failed closed with a typed error: anything but a
/// local answer (and, by getting here, not a panic).
fn assert_signed_or_refused(got: &PhaseOutcome) -> Result<(), TestCaseError> {
    match got {
        PhaseOutcome::Continue | PhaseOutcome::Reject(..) | PhaseOutcome::Fail(..) => Ok(()),
        PhaseOutcome::Stub(name, _) => Err(TestCaseError::fail(format!("answered by {name}"))),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn any_presigned_credential_is_signed_or_refused(cred in credential(), signed in signed_headers()) {
        assert_signed_or_refused(&outcome(presigned(&cred, &signed)))?;
    }

    #[test]
    fn any_header_credential_is_signed_or_refused(
        cred in "[ -~\t]{0,60}|AKIAX/20250101/[ -~\t]{0,10}/[ -~\t]{0,10}/aws4_request",
        signed in "[ -+\\--~\t]{0,30}",
    ) {
        assert_signed_or_refused(&outcome(header_signed(&cred, &signed)))?;
    }
}

/// A pre-signed URL whose region holds a line break (`%0A` in
/// `X-Amz-Credential`): before, the signature's `Authorization` value could
/// not be made into a header and the signer panicked.
#[test]
fn a_presigned_scope_that_no_header_can_carry_is_refused() {
    for (credential, part) in [
        ("AKIAX/20250101/us-east-1\n/s3/aws4_request", "region"),
        (
            "AKIAX/20250101/us-east-1/s3\r\nx-evil: 1/aws4_request",
            "service",
        ),
        ("AKIAX/20250101/é/s3/aws4_request", "region"),
    ] {
        let got = outcome(presigned(credential, "host"));
        let PhaseOutcome::Reject(_, r) = got else {
            panic!("{credential:?}: not refused");
        };
        assert!(
            r.message.contains(part),
            "{credential:?}: the refusal does not name the {part}: {}",
            r.message
        );
    }
}
