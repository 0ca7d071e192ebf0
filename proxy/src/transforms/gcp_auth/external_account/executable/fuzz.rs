//! Property tests of an executable's answer (its standard output, which the
//! operator's command writes and may fill with anything): a subject token or
//! a typed error, never a panic; an error quotes no token the answer holds,
//! and what it quotes of the answer (`code`, `message`, `token_type`) is one
//! bounded line.

use proptest::prelude::*;

use super::{token_of, SAML2};
use crate::backend_answers::{
    answer, bytes, has_control, holds_part_of, quoted, said, string, text, value,
};
use crate::transforms::oauth_token::unix_now;

const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// An executable's answer around the valid shape, with `token` as its
/// `id_token` and `saml_response` when valid.
fn executable_answer(token: String) -> impl Strategy<Value = Vec<u8>> {
    let now = unix_now();
    answer(vec![
        (
            "version",
            prop_oneof![3 => Just("1".to_string()), 1 => value()].boxed(),
        ),
        (
            "success",
            prop_oneof![Just("true".to_string()), Just("false".to_string()), value()].boxed(),
        ),
        (
            "token_type",
            prop_oneof![Just(quoted(JWT)), Just(quoted(SAML2)), string()].boxed(),
        ),
        (
            "id_token",
            prop_oneof![3 => Just(quoted(&token)), 1 => string()].boxed(),
        ),
        (
            "saml_response",
            prop_oneof![3 => Just(quoted(&token)), 1 => string()].boxed(),
        ),
        (
            "expiration_time",
            prop_oneof![
                (now - 100..now + 100_000).prop_map(|t| t.to_string()),
                value()
            ]
            .boxed(),
        ),
        ("code", string().boxed()),
        ("message", string().boxed()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_answer_is_a_token_or_one_bounded_line(
        (token, body) in "[A-Za-z0-9._-]{12,60}"
            .prop_flat_map(|t| (Just(t.clone()), prop_oneof![bytes(), executable_answer(t)])),
        saml in any::<bool>(),
        needs_expiry in any::<bool>(),
    ) {
        let token_type = if saml { SAML2 } else { JWT };
        match token_of(&body, token_type, needs_expiry) {
            Ok(t) => prop_assert!(!t.is_empty()),
            Err(crate::transforms::oauth_token::MintError(e)) => {
                prop_assert!(!holds_part_of(&e, &token), "{:?}", e);
                prop_assert!(!has_control(&e), "{:?}", e);
                prop_assert!(e.chars().count() <= 3 * 512 * 10 + 200, "{} characters", e.len());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_failure_is_told_in_one_bounded_line_without_the_token(
        token in "[A-Za-z0-9._-]{12,60}",
        code in said(),
        message in said(),
        token_type in text(),
        failed in any::<bool>(),
    ) {
        let answer = serde_json::json!({
            "version": 1,
            "success": !failed,
            "token_type": token_type,
            "id_token": token,
            "code": code.of(&token, &token),
            "message": message.of(&token, &token),
        });
        let body = answer.to_string();
        if let Err(crate::transforms::oauth_token::MintError(e)) = token_of(body.as_bytes(), JWT, false) {
            prop_assert!(!holds_part_of(&e, &token), "{:?}", e);
            prop_assert!(!has_control(&e), "{:?}", e);
            prop_assert!(e.chars().count() <= 2 * (512 * 10 + 3) + 200, "{} characters", e.len());
        }
    }
}

/// Found by the property above: the command's `code` and `message` were quoted as written,
/// control characters and all (a forged log line), at any length.
#[test]
fn a_failure_message_is_shown_escaped_and_bounded() {
    let answer = serde_json::json!({
        "version": 1,
        "success": false,
        "code": "401\nlevel=ERROR forged",
        "message": "x".repeat(100_000),
    });
    let Err(crate::transforms::oauth_token::MintError(e)) =
        token_of(answer.to_string().as_bytes(), JWT, false)
    else {
        panic!("a failure read as a token");
    };
    assert!(!has_control(&e), "{e}");
    assert!(e.len() < 700, "{} bytes", e.len());
    assert!(
        e.starts_with("the credential executable reported failure: 401\\nlevel=ERROR forged: xxx"),
        "{e}"
    );
}
