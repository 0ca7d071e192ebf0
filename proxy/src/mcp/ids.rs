//! Which answer ids a client takes as the answer to one of its requests.
//!
//! JSON-RPC says an answer carries the request's id unchanged, but the MCP
//! SDKs are laxer, and a filter that matched ids exactly would let through an
//! answer the client still files under its `tools/list`:
//!
//! - the Python SDK (`BaseSession._normalize_request_id`) turns a string id
//!   into `int(id)` when Python can: surrounding whitespace, a sign, leading
//!   zeros, `_` between digits and any Unicode decimal digits are accepted;
//! - the TypeScript SDK (`Protocol._onresponse`) looks answers up by
//!   `Number(id)`: whitespace, `0x`/`0o`/`0b` literals, fractions and
//!   exponents, and the empty string (which is `0`).
//!
//! [`correlates`] over-approximates both: two ids correlate when they are
//! equal JSON, or when some numeric reading of one equals some numeric
//! reading of the other. Over-matching only means filtering more.

use serde_json::Value;

/// The numbers a client might read an id as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Reading {
    /// A definite number.
    Number(f64),
    /// A string of digits Python reads as an integer whose value this module
    /// does not compute (non-ASCII decimal digits): it may equal any number.
    AnyNumber,
}

/// True when a client could take an answer with id `answer` as the answer to
/// its request with id `request` (see the module doc).
pub fn correlates(request: &Value, answer: &Value) -> bool {
    if super::policy::json_eq(request, answer) {
        return true;
    }
    let (a, b) = (readings(request), readings(answer));
    a.iter().any(|x| {
        b.iter().any(|y| match (x, y) {
            (Reading::Number(x), Reading::Number(y)) => x == y,
            _ => true,
        })
    })
}

/// Every numeric reading of an id (none for objects, arrays, booleans, null).
fn readings(id: &Value) -> Vec<Reading> {
    match id {
        Value::Number(n) => n.as_f64().map(Reading::Number).into_iter().collect(),
        Value::String(s) => [python_int(s), js_number(s)]
            .into_iter()
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

/// Python's `int(s)`: optional whitespace, an optional sign, then decimal
/// digits with single underscores between them.
fn python_int(s: &str) -> Option<Reading> {
    let t = s.trim_matches(char::is_whitespace);
    let t = t.strip_prefix(['+', '-']).map_or(t, |r| r);
    let negative = s.trim_start_matches(char::is_whitespace).starts_with('-');
    if t.is_empty() || t.starts_with('_') || t.ends_with('_') || t.contains("__") {
        return None;
    }
    let mut value = 0f64;
    let mut unknown = false;
    for c in t.chars().filter(|&c| c != '_') {
        match c.to_digit(10) {
            Some(d) => value = value * 10.0 + f64::from(d),
            // Python accepts every Unicode decimal digit (category Nd); the
            // numeric ones outside ASCII may be such a digit.
            None if !c.is_ascii() && c.is_numeric() => unknown = true,
            None => return None,
        }
    }
    Some(if unknown {
        Reading::AnyNumber
    } else {
        Reading::Number(if negative { -value } else { value })
    })
}

/// JavaScript's `Number(s)`, as far as it can equal a request id: the empty
/// (or blank) string is 0, `0x`/`0o`/`0b` literals, decimal literals with a
/// fraction or exponent, and `Infinity`.
fn js_number(s: &str) -> Option<Reading> {
    let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if t.is_empty() {
        return Some(Reading::Number(0.0));
    }
    let radix = |p: &str, r: u32| {
        t.strip_prefix(p)
            .or_else(|| t.strip_prefix(&p.to_ascii_uppercase()))
            .filter(|digits| !digits.is_empty())
            .and_then(|digits| {
                digits.chars().try_fold(0f64, |acc, c| {
                    c.to_digit(r).map(|d| acc * f64::from(r) + f64::from(d))
                })
            })
    };
    if let Some(v) = radix("0x", 16)
        .or_else(|| radix("0o", 8))
        .or_else(|| radix("0b", 2))
    {
        return Some(Reading::Number(v));
    }
    // Rust's float syntax is JavaScript's decimal literal plus `inf`/`nan`
    // spellings; NaN equals nothing, an extra `inf` only matches more.
    t.parse::<f64>().ok().map(Reading::Number)
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn answers_a_python_or_typescript_client_files_under_the_request() {
        for answer in [
            json!(1),
            json!(1.0),
            json!("1"),
            json!(" 1\n"),
            json!("+1"),
            json!("01"),
            json!("0x1"),
            json!("0b1"),
            json!("1.0"),
            json!("1e0"),
            json!("\u{0661}"), // ARABIC-INDIC DIGIT ONE: int() reads 1
        ] {
            assert!(correlates(&json!(1), &answer), "{answer}");
        }
        assert!(correlates(&json!(10), &json!("1_0")), "int('1_0') is 10");
        assert!(correlates(&json!(0), &json!("")), "Number('') is 0");
        assert!(correlates(&json!(-3), &json!(" -3 ")));
        assert!(correlates(&json!("abc"), &json!("abc")));
    }

    /// A request id as serde_json reads it off the wire, against the
    /// answer's string as a Node client reads it (`Number`, correctly
    /// rounded): both must be the same double. serde_json's default float
    /// parser was not correctly rounded for large exponents (it read `9e91`
    /// one unit off), so the answer `"9e91\f"`, which the client files under
    /// the request, did not correlate (found by `fuzz`).
    #[test]
    fn a_large_float_id_reads_as_the_client_reads_it() {
        for text in ["9e91", "1.7976931348623157e308", "123456789012345678e-3"] {
            let request: Value = serde_json::from_str(text).expect("a JSON number");
            assert!(
                correlates(&request, &json!(format!("{text}\u{c}"))),
                "{text}"
            );
        }
    }

    #[test]
    fn other_ids_do_not_correlate() {
        for answer in [
            json!(2),
            json!("2"),
            json!("1a"),
            json!("_1"),
            json!("1__0"),
            json!(null),
            json!(true),
            json!([1]),
            json!({"id": 1}),
            json!("NaN"),
        ] {
            assert!(!correlates(&json!(1), &answer), "{answer}");
        }
        assert!(!correlates(&json!("abc"), &json!("ABC")));
    }

    #[test]
    fn large_ids_compare_by_value() {
        let big: Value = serde_json::from_str("123456789012345678901234567890").expect("json");
        assert!(correlates(&big, &json!("123456789012345678901234567890")));
    }
}
