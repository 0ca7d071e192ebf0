//! YAML tags. yaml.v3 (which the Go proxy reads its config with) honours the
//! standard tags, so configs written for it may use them: `!!str 123` is the
//! string "123", `!!int "8080"` the integer. They are resolved here, into the
//! plain/quoted distinction the decoders already use; any other tag is an
//! error that names it.

use std::borrow::Cow;

use yaml_rust2::parser::Tag;

use super::resolve::int;

/// The prefix `!!` stands for (unless a `%TAG` directive redefines it).
const YAML_PREFIX: &str = "tag:yaml.org,2002:";

/// The tags named in errors as the supported ones.
const SUPPORTED: &str = "!!str, !!int, !!bool, !!float, !!null, !!map, !!seq, !!merge";

/// A tag this reader honours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Std {
    /// `!!str`: a string, whatever the text looks like.
    Str,
    /// The non-specific `!`: a string on a scalar, nothing on a collection.
    NonSpecific,
    /// `!!int`.
    Int,
    /// `!!bool`.
    Bool,
    /// `!!float`.
    Float,
    /// `!!null`.
    Null,
    /// `!!map`.
    Map,
    /// `!!seq`.
    Seq,
    /// `!!merge`, on a `<<` key.
    Merge,
}

/// What a tag says about its node, or the error message when it is not honoured.
pub(super) fn standard(tag: &Tag) -> Result<Std, String> {
    if tag.handle.is_empty() && tag.suffix == "!" {
        return Ok(Std::NonSpecific);
    }
    let name = full(tag);
    let std = match name.strip_prefix(YAML_PREFIX) {
        Some("str") => Std::Str,
        Some("int") => Std::Int,
        Some("bool") => Std::Bool,
        Some("float") => Std::Float,
        Some("null") => Std::Null,
        Some("map") => Std::Map,
        Some("seq") => Std::Seq,
        Some("merge") => Std::Merge,
        _ => {
            return Err(format!(
                "unknown tag '{}' (supported: {SUPPORTED})",
                display(tag)
            ))
        }
    };
    Ok(std)
}

/// The tag's full name: `tag:yaml.org,2002:str`, or `!foo` for a local tag.
fn full(tag: &Tag) -> Cow<'_, str> {
    if tag.handle == "!" {
        Cow::Owned(format!("!{}", tag.suffix))
    } else {
        Cow::Owned(format!("{}{}", tag.handle, tag.suffix))
    }
}

/// The tag as a reader would write it: `!!binary`, `!foo`, or `!<tag:example.com,2000:x>`.
pub(super) fn display(tag: &Tag) -> String {
    let name = full(tag);
    if tag.handle == "!" {
        return name.into_owned();
    }
    match name.strip_prefix(YAML_PREFIX) {
        Some(short) => format!("!!{short}"),
        None => format!("!<{name}>"),
    }
}

/// The scalar a tagged scalar stands for: its text, and whether it is plain
/// (resolved like an untagged plain scalar: a number, boolean or null) or a
/// string. `Err` holds the message when the text does not fit the tag.
pub(super) fn scalar(tag: Std, text: String, plain: bool) -> Result<(String, bool), String> {
    let fits = |ok: bool, what: &str, name: &str| {
        if ok {
            Ok(())
        } else {
            Err(format!("'{text}' is not {what} (tagged !!{name})"))
        }
    };
    match tag {
        Std::Str | Std::NonSpecific => return Ok((text, false)),
        Std::Int => {
            let value = int(&text)
                .map_err(|why| format!("'{text}' is not an integer (tagged !!int){why}"))?;
            return Ok((value.to_string(), true));
        }
        Std::Bool => fits(
            matches!(
                text.as_str(),
                "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
            ),
            "a boolean (true or false)",
            "bool",
        )?,
        Std::Float => fits(is_float(&text), "a number", "float")?,
        Std::Null => {
            fits(
                matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"),
                "null",
                "null",
            )?;
            return Ok((String::new(), true));
        }
        Std::Merge if text == "<<" && plain => {}
        Std::Merge => return Err("the !!merge tag belongs on a '<<' key".into()),
        Std::Map => return Err("the !!map tag is on a scalar, not a mapping".into()),
        Std::Seq => return Err("the !!seq tag is on a scalar, not a list".into()),
    }
    Ok((text, true))
}

/// A `!!float`: a decimal number, or YAML's `.inf`, `-.inf`, `.nan` spellings.
fn is_float(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    matches!(unsigned, ".inf" | ".Inf" | ".INF")
        || matches!(text, ".nan" | ".NaN" | ".NAN")
        || (text.bytes().any(|b| b.is_ascii_digit())
            && text.bytes().all(|b| {
                b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E' | b'_')
            })
            && text.replace('_', "").parse::<f64>().is_ok())
}

/// Whether a collection's tag fits it (`!!map` on a mapping, `!!seq` on a list).
pub(super) fn collection(tag: Std, is_map: bool) -> Result<(), String> {
    match (tag, is_map) {
        (Std::Map, true) | (Std::Seq, false) | (Std::NonSpecific, _) => Ok(()),
        (Std::Seq, true) => Err("the !!seq tag is on a mapping, not a list".into()),
        (Std::Map, false) => Err("the !!map tag is on a list, not a mapping".into()),
        (other, _) => {
            let what = if is_map { "a mapping" } else { "a list" };
            Err(format!(
                "the !!{} tag is on {what}",
                format!("{other:?}").to_ascii_lowercase()
            ))
        }
    }
}
