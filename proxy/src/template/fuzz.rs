//! Property tests of template parsing and rendering: any text parses or is
//! refused at a column inside it, a refusal for a character points at that
//! character, text without actions is itself, and a string literal renders
//! to the string it quotes.

use proptest::prelude::*;

use super::{Template, TemplateContext, TemplateError};

/// Template-shaped text: actions, trim markers, pipes, quotes, fields.
fn template_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("{{".to_string()),
        Just("}}".to_string()),
        Just("{{- ".to_string()),
        Just(" -}}".to_string()),
        Just("{{/*".to_string()),
        Just("*/}}".to_string()),
        Just("|".to_string()),
        Just("\"".to_string()),
        Just("`".to_string()),
        Just("\\".to_string()),
        Just(".Value".to_string()),
        Just(".Credentials.key".to_string()),
        Just("base64".to_string()),
        Just(" ".to_string()),
        Just("-".to_string()),
        Just(".".to_string()),
        "[a-zA-Z_]{1,6}",
        "[ -~]{1,4}",
        "\\PC{1,3}",
    ];
    prop::collection::vec(piece, 0..16).prop_map(|p| p.concat())
}

fn ctx() -> TemplateContext {
    let mut c = TemplateContext::new();
    c.set("Value", "v").set_bytes("Body", b"\xff\x00");
    c.set_map("Credentials", [("key", "k")]);
    c
}

/// Parses `src`; on a refusal, checks that its column is inside the text
/// and, when it names a character, that the character is at the column.
fn parse_checked(src: &str) -> Result<Option<Template>, TestCaseError> {
    match Template::parse(src) {
        Ok(t) => Ok(Some(t)),
        Err(TemplateError::Parse { column, message }) => {
            let chars: Vec<char> = src.chars().collect();
            prop_assert!(
                (1..=chars.len() + 1).contains(&column),
                "column {} of a {}-character template {:?}: {}",
                column,
                chars.len(),
                src,
                message
            );
            if let Some(named) = message.strip_prefix("unsupported syntax at ") {
                let at = chars.get(column - 1).map(|c| format!("{c:?}"));
                prop_assert_eq!(
                    at.as_deref(),
                    Some(named),
                    "{:?}: column {} does not point at the character named: {}",
                    src,
                    column,
                    message
                );
            }
            Ok(None)
        }
        Err(other) => Err(TestCaseError::fail(format!(
            "{src:?}: parse failed with a render error: {other}"
        ))),
    }
}

/// `s` as a Go string literal, with the escapes the parser takes.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_text_parses_or_is_refused_where_it_is_wrong(src in "\\PC{0,40}") {
        parse_checked(&src)?;
    }

    /// A template that parses renders, or is refused for a field or for
    /// output that is not text; never a panic.
    #[test]
    fn template_shaped_text_parses_and_renders_or_is_refused(src in template_text()) {
        if let Some(t) = parse_checked(&src)? {
            match t.render(&ctx()) {
                Ok(_) | Err(TemplateError::MissingField(_) | TemplateError::NotAValue(_)
                    | TemplateError::NotText) => {}
                Err(e) => prop_assert!(false, "{:?}: {}", src, e),
            }
        }
    }

    #[test]
    fn text_without_actions_is_itself(src in "[^{]{0,40}|([^{]\\{[^{]){0,8}") {
        let t = Template::parse(&src).expect("plain text parses");
        prop_assert_eq!(t.render(&ctx()).expect("renders"), src);
    }

    /// A quoted string renders to itself, in a pipe too; the characters the
    /// action's delimiters use (`}}`) aside, which end the action in this
    /// subset (Go reads them as part of the string).
    #[test]
    fn a_string_literal_renders_to_the_string(
        s in "(\\PC|[\n\t\r]){0,30}".prop_filter("holds }}", |s| !s.replace('`', "").contains("}}")),
        around in "[a-z ]{0,4}",
    ) {
        let src = format!("{around}{{{{ {} }}}}{around}", quoted(&s));
        let t = Template::parse(&src)
            .unwrap_or_else(|e| panic!("{src:?} refused: {e}"));
        prop_assert_eq!(t.render(&ctx()).expect("renders"), format!("{around}{s}{around}"));
        let s = s.replace('`', "");
        let raw = format!("{{{{ `{s}` }}}}");
        let t = Template::parse(&raw).unwrap_or_else(|e| panic!("{raw:?} refused: {e}"));
        prop_assert_eq!(t.render(&ctx()).expect("renders"), s);
    }
}

/// A refusal inside an action opened with the trim marker `{{- `: the
/// column was one short (the marker's `-` not counted), pointing at the
/// space before the character at fault.
#[test]
fn a_refusal_after_a_trim_marker_points_at_the_character() {
    for (src, column) in [("{{- @ }}", 5), ("x {{- .A | @ -}}", 12), ("{{ @ }}", 4)] {
        let err = Template::parse(src).expect_err(src);
        assert_eq!(
            err,
            TemplateError::Parse {
                column,
                message: "unsupported syntax at '@'".into()
            },
            "{src:?}"
        );
    }
}
