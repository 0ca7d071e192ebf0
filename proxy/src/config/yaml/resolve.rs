//! Plain scalars read as yaml.v3 reads them into typed Go fields: integers
//! (`strconv.ParseInt` with base 0 after dropping `_`, then floats), and the
//! YAML 1.1 booleans it still takes for a `bool` field.

/// A plain scalar that is a number to yaml.v3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Number {
    /// An integer: decimal, `0x`, `0o` or `0b`, signed, with `_` separators.
    Int(i64),
    /// A float in YAML's style: `1e3`, `1000.0`, `.5`.
    Float(f64),
}

/// What a plain scalar in an integer field is to yaml.v3 (`resolve.go`): a
/// number only when it starts with a digit, a sign or a dot. `Err` holds a
/// hint for the error (empty when there is nothing to add).
///
/// One deliberate difference: a decimal with a leading zero (`010`) is
/// refused, where yaml.v3 reads it as octal (8); nobody means that in a
/// config, and reading it as decimal would silently disagree with Go.
pub(crate) fn number(text: &str) -> Result<Number, &'static str> {
    match text.as_bytes().first() {
        Some(b'0'..=b'9' | b'+' | b'-') => {}
        Some(b'.') => return float(text).ok_or(""),
        _ => return Err(""),
    }
    let plain: String = text.chars().filter(|c| *c != '_').collect();
    match int(&plain) {
        Ok(v) => Ok(Number::Int(v)),
        // Out of range, or a leading 0: not a float either.
        Err(why) if !why.is_empty() => Err(why),
        Err(_) => float(&plain).ok_or(""),
    }
}

/// An integer as yaml.v3 reads one: an optional sign, then decimal digits or
/// `0x`, `0o`, `0b` digits, with `_` separators. A decimal with a leading zero
/// is refused: Go reads `010` as octal 8, which nobody means in a config.
pub(crate) fn int(text: &str) -> Result<i64, &'static str> {
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    let (negative, digits) = match digits.as_bytes().first() {
        Some(b'-') => (true, &digits[1..]),
        Some(b'+') => (false, &digits[1..]),
        _ => (false, digits.as_str()),
    };
    let (radix, body) = match digits.get(..2) {
        Some("0x" | "0X") => (16, &digits[2..]),
        Some("0o" | "0O") => (8, &digits[2..]),
        Some("0b" | "0B") => (2, &digits[2..]),
        _ if digits.len() > 1
            && digits.starts_with('0')
            && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            return Err(" (a leading 0 means octal to yaml.v3: write 0o... or drop the 0)")
        }
        _ => (10, digits),
    };
    if body.is_empty() || body.starts_with(['+', '-']) {
        return Err("");
    }
    let magnitude = i128::from_str_radix(body, radix).map_err(|_| "")?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| " (out of range)")
}

/// A float in the form yaml.v3 resolves one (`yamlStyleFloat`:
/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`).
fn float(text: &str) -> Option<Number> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        None => digits(mantissa),
        Some(("", frac)) => digits(frac),
        Some((whole, frac)) => digits(whole) && (frac.is_empty() || digits(frac)),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    text.parse::<f64>().ok().map(Number::Float)
}

/// The YAML 1.1 booleans yaml.v3 accepts into a `bool` field, quoted or not
/// (`decode.go`: a string resolved value for `reflect.Bool`); anywhere else
/// they are strings. `true`/`false` are YAML 1.2 booleans, read elsewhere.
pub(crate) fn yaml11_bool(text: &str) -> Option<bool> {
    match text {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_read_as_go_parses_them_with_base_0() {
        for (text, value) in [
            ("8080", 8080),
            ("+80", 80),
            ("-3", -3),
            ("0", 0),
            ("0x1F", 31),
            ("0X1f", 31),
            ("0o17", 15),
            ("0b101", 5),
            ("-0b101", -5),
            ("1_000", 1000),
            ("1_048_576", 1_048_576),
            ("0x_1F", 31),
        ] {
            assert_eq!(number(text), Ok(Number::Int(value)), "{text}");
        }
    }

    #[test]
    fn floats_are_read_in_yamls_style() {
        for (text, value) in [
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("+1e+3", 1000.0),
            ("1000.0", 1000.0),
            ("1.", 1.0),
            ("1.5", 1.5),
            (".5", 0.5),
            ("1_000.5", 1000.5),
            ("-2.5e-1", -0.25),
        ] {
            assert_eq!(number(text), Ok(Number::Float(value)), "{text}");
        }
    }

    #[test]
    fn other_text_is_not_a_number() {
        for text in [
            "", "abc", "_1", "0x", "0xZZ", "1e", "e3", "1.2.3", "--1", "+-1", "1 000", "0b102",
            ".", ".e3", "0x1p3", "inf", ".inf",
        ] {
            assert_eq!(number(text), Err(""), "{text:?}");
        }
        assert!(number("010").is_err_and(|why| why.contains("octal")));
        assert!(number("08").is_err_and(|why| why.contains("octal")));
        assert_eq!(number("99999999999999999999"), Err(" (out of range)"));
    }

    #[test]
    fn yaml_1_1_booleans_are_the_eight_spellings_each_way() {
        for t in ["y", "Y", "yes", "Yes", "YES", "on", "On", "ON"] {
            assert_eq!(yaml11_bool(t), Some(true), "{t}");
        }
        for f in ["n", "N", "no", "No", "NO", "off", "Off", "OFF"] {
            assert_eq!(yaml11_bool(f), Some(false), "{f}");
        }
        for other in ["true", "yEs", "oN", "1", "t", ""] {
            assert_eq!(yaml11_bool(other), None, "{other}");
        }
    }
}
