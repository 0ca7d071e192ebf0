//! Property tests of the dot-segment check every request path goes through
//! (rules match the path as sent, so a `.` or `..` segment in any spelling
//! an upstream reads must be refused): against a plain reading of the same
//! rule (decode the encoded dots and separators, split, cut `;` parameters,
//! look for `.` and `..`), over paths of the characters that matter; and a
//! dot segment spelled any way, anywhere in a path, is found.

use proptest::prelude::*;

use super::has_dot_segment;

/// The rule read plainly: `%2e`, `%2f`, `%5c`, their double encodings
/// (`%252e`...) and overlong UTF-8 forms (`%c0%ae`, `%c0%af`, `%c1%9c`)
/// decoded (either case), split at `/` and `\`, each segment cut at its
/// first `;`.
fn reference(path: &str) -> bool {
    const CODES: [(&[u8], u8); 9] = [
        (b"%c0%ae", b'.'),
        (b"%c0%af", b'/'),
        (b"%c1%9c", b'\\'),
        (b"%252e", b'.'),
        (b"%252f", b'/'),
        (b"%255c", b'\\'),
        (b"%2e", b'.'),
        (b"%2f", b'/'),
        (b"%5c", b'\\'),
    ];
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = CODES.iter().find(|(code, _)| {
            b.get(i..i + code.len())
                .is_some_and(|t| t.to_ascii_lowercase() == *code)
        });
        match code {
            Some((code, c)) => {
                decoded.push(*c);
                i += code.len();
            }
            None => {
                decoded.push(b[i]);
                i += 1;
            }
        }
    }
    decoded.split(|c| *c == b'/' || *c == b'\\').any(|seg| {
        let seg = seg.split(|c| *c == b';').next().unwrap_or(seg);
        seg == b"." || seg == b".."
    })
}

fn path_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "\\", ".", "..", "...", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%2", "%", "%25",
        "%252e", "%252F", "%255c", "%c0%ae", "%C0%AE", "%c0%af", "%c1%9C", "%c0", "%ae", "%c1",
        ";", ";x", "a", "b.c", "e", "2", "?",
    ])
}

fn dot() -> impl Strategy<Value = String> {
    let one = prop::sample::select(vec![
        ".", "%2e", "%2E", "%252e", "%252E", "%c0%ae", "%C0%AE",
    ]);
    (one.clone(), prop::option::of(one)).prop_map(|(a, b)| format!("{a}{}", b.unwrap_or("")))
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "\\", "%2f", "%2F", "%5c", "%5C", "%252f", "%255C", "%c0%af", "%C1%9c",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn the_check_is_the_rule_read_plainly(pieces in prop::collection::vec(path_piece(), 0..12)) {
        let path = pieces.concat();
        prop_assert_eq!(has_dot_segment(&path), reference(&path), "{:?}", path);
    }

    #[test]
    fn a_dot_segment_in_any_spelling_is_found(
        before in prop::collection::vec("[a-z0-9_.-]{1,6}", 0..4),
        seps in (separator(), separator()),
        dot in dot(),
        param in prop::option::of(";[a-z=]{0,4}"),
        after in prop::collection::vec("[a-z0-9_.-]{1,6}", 0..4),
    ) {
        let mut path = String::from("/");
        path.push_str(&before.join("/"));
        path.push_str(seps.0);
        path.push_str(&dot);
        path.push_str(param.as_deref().unwrap_or(""));
        if !after.is_empty() {
            path.push_str(seps.1);
            path.push_str(&after.join("/"));
        }
        prop_assert!(has_dot_segment(&path), "{:?}", path);
    }
}
