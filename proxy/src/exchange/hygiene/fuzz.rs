//! Property tests of the dot-segment check every request path goes through
//! (rules match the path as sent, so a `.` or `..` segment in any spelling
//! an upstream reads must be refused): against a plain reading of the same
//! rule (the path and up to three percent-decodings of it, overlong UTF-8
//! dots and separators replaced, split, `;` parameters cut, `.` and `..`
//! looked for), over paths of the characters that matter; and a dot segment
//! spelled any way, anywhere in a path, is found.

use proptest::prelude::*;

use super::has_dot_segment;

/// The rule read plainly: the path as sent and each of three successive
/// decodings by the `percent-encoding` crate (lenient, as servers are),
/// with the overlong UTF-8 forms of `.`, `/` and `\` replaced by those
/// characters, split at `/` and `\`, each segment cut at its first `;`.
fn reference(path: &str) -> bool {
    let mut readings = vec![path.as_bytes().to_vec()];
    for _ in 0..3 {
        let last = readings.last().expect("one reading");
        let next: Vec<u8> = percent_encoding::percent_decode(last).collect();
        readings.push(next);
    }
    readings.iter().any(|r| {
        let mut plain = Vec::with_capacity(r.len());
        let mut i = 0;
        while i < r.len() {
            let c = match r.get(i..i + 2) {
                Some([0xc0, 0xae]) => Some(b'.'),
                Some([0xc0, 0xaf]) => Some(b'/'),
                Some([0xc1, 0x9c]) => Some(b'\\'),
                _ => None,
            };
            match c {
                Some(c) => {
                    plain.push(c);
                    i += 2;
                }
                None => {
                    plain.push(r[i]);
                    i += 1;
                }
            }
        }
        plain.split(|c| *c == b'/' || *c == b'\\').any(|seg| {
            let seg = seg.split(|c| *c == b';').next().unwrap_or(seg);
            seg == b"." || seg == b".."
        })
    })
}

fn path_piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/", "\\", ".", "..", "...", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%2", "%", "%25",
        "%252e", "%252F", "%255c", "%c0%ae", "%C0%AE", "%c0%af", "%c1%9C", "%c0", "%ae", "%c1",
        "%32", "%65", "%45", "%66", "%35", "%63", "%2565", "%2532", "%25c0", "%%", "c", ";", ";x",
        "a", "b.c", "e", "2", "?",
    ])
}

fn dot() -> impl Strategy<Value = String> {
    let one = prop::sample::select(vec![
        ".",
        "%2e",
        "%2E",
        "%252e",
        "%252E",
        "%c0%ae",
        "%C0%AE",
        "%25%32%65",
        "%252%65",
        "%%32%65",
        "%2%65",
        "%25%32%45",
        "%25252e",
        "%25c0%25ae",
    ]);
    (one.clone(), prop::option::of(one)).prop_map(|(a, b)| format!("{a}{}", b.unwrap_or("")))
}

fn separator() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "/",
        "\\",
        "%2f",
        "%2F",
        "%5c",
        "%5C",
        "%252f",
        "%255C",
        "%c0%af",
        "%C1%9c",
        "%25%32%66",
        "%252%46",
        "%%35%63",
        "%25c0%25af",
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
