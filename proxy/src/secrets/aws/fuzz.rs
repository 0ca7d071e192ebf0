//! Property tests of what the AWS sources read from Secrets Manager and
//! Parameter Store (and any endpoint `AWS_ENDPOINT_URL` names): answers of
//! any shape give a value or a typed error, never a panic; a valid answer
//! reads back as the value stored (`SecretString`, else `SecretBinary`'s
//! UTF-8 text); `json_key` takes the string at its key or says why not; and
//! no error holds the signing keys or the secret, whatever the peer echoed.

use aws_credential_types::Credentials;
use base64::Engine as _;
use proptest::prelude::*;

use super::{error_detail, parameter_value, secret_value};
use crate::backend_answers::{
    answer, bytes, has_control, holds_part_of, quoted, said, string, text, value,
};
use crate::secrets::scrub::MAX_PEER_CHARS;
use crate::secrets::{extract_json_key, SecretError, SecretValue};

/// Credential values: key-like, with the characters encoders change.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/=%&@!_.~-]{12,40}"
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What the error shows, both ways it can be printed.
fn shown(e: &SecretError) -> String {
    format!("{e} {e:?}")
}

/// A `GetSecretValue` answer around the valid shape.
fn get_secret_value() -> impl Strategy<Value = Vec<u8>> {
    answer(vec![
        ("SecretString", string().boxed()),
        (
            "SecretBinary",
            prop_oneof![
                text().prop_map(|t| quoted(&b64(t.as_bytes()))),
                bytes().prop_map(|b| quoted(&b64(&b))),
                string(),
            ]
            .boxed(),
        ),
        ("ARN", string().boxed()),
        ("Name", string().boxed()),
        ("VersionId", string().boxed()),
        ("CreatedDate", value().boxed()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_get_secret_value_answer_reads_or_fails_cleanly(
        body in prop_oneof![bytes(), get_secret_value()],
    ) {
        let _ = secret_value(&body);
        let _ = parameter_value(&body);
    }

    #[test]
    fn a_stored_secret_reads_back_as_itself(
        string in prop::option::of(text()),
        binary in text(),
        extra in prop::collection::vec(("[A-Z][a-zA-Z]{1,10}", value()), 0..3),
    ) {
        let mut fields: Vec<(String, String)> = extra
            .into_iter()
            .filter(|(k, _)| k != "SecretString" && k != "SecretBinary")
            .map(|(k, v)| (quoted(&k), v))
            .collect();
        fields.push((quoted("SecretBinary"), quoted(&b64(binary.as_bytes()))));
        if let Some(s) = &string {
            fields.push((quoted("SecretString"), quoted(s)));
        }
        let body = crate::backend_answers::object(&fields);
        let got = secret_value(body.as_bytes()).expect("a valid answer");
        prop_assert_eq!(got.expose(), string.as_deref().unwrap_or(&binary));
        let param = format!(r#"{{"Parameter":{{"Name":"/p","Value":{},"Type":"SecureString"}}}}"#, quoted(&binary));
        let got = parameter_value(param.as_bytes()).expect("a valid answer");
        prop_assert_eq!(got.expose(), binary.as_str());
    }

    #[test]
    fn a_secret_in_the_wrong_shape_is_not_in_the_error(
        secret in secret(),
        shape in 0..4usize,
    ) {
        let body = match shape {
            // Not base64.
            0 => format!(r#"{{"SecretBinary":{}}}"#, quoted(&format!("{secret}\u{1}"))),
            // Base64 of bytes that are not UTF-8.
            1 => format!(r#"{{"SecretBinary":{}}}"#, quoted(&b64(&[secret.as_bytes(), b"\xff"].concat()))),
            // Not a string.
            2 => format!(r#"{{"SecretString":{{"v":{}}}}}"#, quoted(&secret)),
            // Cut short.
            _ => format!(r#"{{"SecretString":{}"#, quoted(&secret)),
        };
        let e = secret_value(body.as_bytes()).expect_err("not a secret");
        prop_assert!(!holds_part_of(&shown(&e), &secret), "{}", e);
    }

    #[test]
    fn an_error_answer_shows_no_signing_key_and_stays_one_bounded_line(
        key in secret(),
        token in secret(),
        status in 400u16..600,
        kind in said(),
        message in said(),
        message_name in prop::sample::select(vec!["message", "Message"]),
    ) {
        let kind = kind.of(&key, &token);
        let message = message.of(&key, &token);
        let body = format!(r#"{{"__type":{},{}:{}}}"#, quoted(&kind), quoted(message_name), quoted(&message));
        let creds = Credentials::new("AKIDEXAMPLE", key.clone(), Some(token.clone()), None, "test");
        let status = http::StatusCode::from_u16(status).expect("status");
        let detail = error_detail(status, body.as_bytes(), &creds);
        prop_assert!(!holds_part_of(&detail, &key), "the secret key in {:?}", detail);
        prop_assert!(!holds_part_of(&detail, &token), "the session token in {:?}", detail);
        prop_assert!(!has_control(&detail), "{:?}", detail);
        prop_assert!(detail.chars().count() <= 2 * (MAX_PEER_CHARS * 10 + 3) + 40, "{} characters", detail.len());
    }

    #[test]
    fn json_key_takes_the_string_at_its_key_and_never_shows_the_value(
        doc in prop_oneof![
            value(),
            prop::collection::vec(("[a-z_]{1,6}", value()), 0..5).prop_map(|kv| {
                let fields: Vec<(String, String)> = kv.into_iter().map(|(k, v)| (quoted(&k), v)).collect();
                crate::backend_answers::object(&fields)
            }),
        ],
        key in "[a-z_]{1,6}",
        secret in secret(),
    ) {
        // The document with one more field that holds a credential.
        let doc = match doc.strip_prefix('{') {
            Some(rest) if rest.trim_start() != "}" => format!(r#"{{"other_secret":{},{rest}"#, quoted(&secret)),
            Some(_) => format!(r#"{{"other_secret":{}}}"#, quoted(&secret)),
            None => doc,
        };
        let raw = SecretValue::new(doc.clone());
        match extract_json_key(&raw, &key) {
            Ok(v) => {
                let parsed: serde_json::Value = serde_json::from_str(&doc).expect("it was read");
                prop_assert_eq!(Some(v.expose()), parsed.get(&key).and_then(|v| v.as_str()));
            }
            Err(e) => prop_assert!(!holds_part_of(&shown(&e), &secret), "{}", e),
        }
    }
}

/// Found by the property above: the `__type` was shown as the endpoint wrote it, the session
/// token included, when only the message was scrubbed.
#[test]
fn an_error_type_that_echoes_a_key_is_scrubbed_and_escaped() {
    let token = "=_A+!%+-0%a=-session";
    let creds = Credentials::new(
        "AKIDEXAMPLE",
        "secret-key-0123",
        Some(token.into()),
        None,
        "t",
    );
    let body = format!(
        r#"{{"__type":"com.amazon#{}\nforged","message":"Invalid token"}}"#,
        token
    );
    let detail = error_detail(http::StatusCode::BAD_REQUEST, body.as_bytes(), &creds);
    assert!(!holds_part_of(&detail, token), "{detail}");
    assert!(!has_control(&detail), "{detail}");
    assert_eq!(
        detail,
        "400 Bad Request: [redacted]\\nforged: Invalid token"
    );
}
