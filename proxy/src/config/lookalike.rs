//! Characters that hide in a config: lookalikes of ASCII letters (Cyrillic
//! `а` U+0430 for `a`, fullwidth `ａ` U+FF41) and characters that show
//! nothing or show as a plain space (zero-width space U+200B, the no-break
//! space U+00A0 a web page's copy brings along). A key written with one is
//! not the key it looks like, and an error that quotes it as written shows
//! the reader the very key they think they typed. So errors name such
//! characters by code point and Unicode name, show the key with them
//! escaped, and say which valid name it resembles (UTS #39 confusable
//! skeletons, `unicode-security`). Host names are checked for labels that
//! mix scripts ([`mixed_scripts`]).

use std::collections::BTreeSet;

use unicode_normalization::UnicodeNormalization;
use unicode_script::{Script, UnicodeScript};
use unicode_security::{skeleton, MixedScript};

/// How many odd characters a message names; the rest are counted.
const NAMED: usize = 4;

/// `U+0430 CYRILLIC SMALL LETTER A`.
pub(crate) fn describe(c: char) -> String {
    match unicode_names2::name(c) {
        Some(name) => format!("U+{:04X} {name}", c as u32),
        None => format!("U+{:04X}", c as u32),
    }
}

/// True for a character that shows nothing (Default_Ignorable_Code_Point:
/// zero-width spaces and joiners, the soft hyphen, a byte order mark,
/// variation selectors) or shows as a space without being the ASCII space
/// (no-break and ideographic spaces).
pub(crate) fn is_invisible(c: char) -> bool {
    if c.is_ascii() {
        return false;
    }
    // The UTS #39 skeleton drops exactly the default-ignorable code points.
    c.is_whitespace() || skeleton(c.encode_utf8(&mut [0; 4])).next().is_none()
}

/// The ASCII text a non-ASCII character is read as: its compatibility form
/// (`ａ` U+FF41 is `a`) or else its confusable prototype (`а` U+0430 looks
/// like `a`); `None` when it is not read as ASCII.
fn ascii_lookalike(c: char) -> Option<String> {
    if c.is_ascii() {
        return None;
    }
    let nfkc: String = c.encode_utf8(&mut [0; 4]).nfkc().collect();
    if nfkc.is_ascii() && !nfkc.is_empty() && nfkc.chars().all(|c| c.is_ascii_graphic()) {
        return Some(nfkc);
    }
    let proto: String = skeleton(c.encode_utf8(&mut [0; 4])).collect();
    (proto.is_ascii() && !proto.is_empty() && proto.chars().all(|c| c.is_ascii_graphic()))
        .then_some(proto)
}

/// A name with lookalike or invisible characters, as messages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Odd {
    /// The name with each odd character escaped: `\u{430}llowed`.
    pub shown: String,
    /// The name as it reads: invisibles dropped, lookalikes replaced by the
    /// ASCII they look like (`allowed`).
    pub folded: String,
    /// What the odd characters are: `U+0430 CYRILLIC SMALL LETTER A looks
    /// like 'a'`, `U+200B ZERO WIDTH SPACE is invisible`.
    pub note: String,
}

/// `name`'s odd characters explained; `None` when it has none (every
/// character ASCII, or a non-ASCII one that is not read as ASCII, such as
/// `ö`, which is then an ordinary typo).
pub(crate) fn odd(name: &str) -> Option<Odd> {
    let mut shown = String::with_capacity(name.len());
    let mut folded = String::with_capacity(name.len());
    let mut seen: Vec<char> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    for c in name.chars() {
        let what = if is_invisible(c) {
            Some(if c.is_whitespace() {
                "is a space other than the ASCII space".to_string()
            } else {
                "is invisible".to_string()
            })
        } else {
            ascii_lookalike(c).map(|a| {
                folded.push_str(&a);
                format!("looks like '{a}'")
            })
        };
        match what {
            Some(what) => {
                shown.push_str(&format!("\\u{{{:x}}}", c as u32));
                if !seen.contains(&c) {
                    seen.push(c);
                    notes.push(format!("{} {what}", describe(c)));
                }
            }
            None => {
                shown.push(c);
                folded.push(c);
            }
        }
    }
    if notes.is_empty() {
        return None;
    }
    let more = notes.len().saturating_sub(NAMED);
    notes.truncate(NAMED);
    let mut note = notes.join(", ");
    if more > 0 {
        note.push_str(&format!(" and {more} more"));
    }
    Some(Odd {
        shown,
        folded,
        note,
    })
}

/// The valid name `odd`'s name reads as: its folded form exactly, or one
/// with the same UTS #39 skeleton (`rn` and `m`).
pub(crate) fn resembles<'a>(name: &str, odd: &Odd, valid: &[&'a str]) -> Option<&'a str> {
    if let Some(v) = valid.iter().find(|v| **v == odd.folded) {
        return Some(*v);
    }
    let skel: String = skeleton(name).filter(|c| !c.is_whitespace()).collect();
    valid
        .iter()
        .find(|v| skeleton(v).collect::<String>() == skel)
        .copied()
}

/// A host label that mixes scripts, as in `gіthub` (Latin with a Cyrillic
/// `і`): the label and its scripts (`Cyrillic, Latin`), and the ASCII it
/// reads as when every character looks like one (`github`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MixedLabel {
    /// The label as written.
    pub label: String,
    /// The scripts it mixes, by name, sorted.
    pub scripts: Vec<&'static str>,
    /// Its non-ASCII characters, described (the first four).
    pub characters: Vec<String>,
    /// What the label reads as in ASCII, when every character looks like an
    /// ASCII one.
    pub reads_as: Option<String>,
}

/// The labels of `host` (as written, before IDNA) that are not single-script
/// in the sense of UTS #39 (a resolved script set that is empty: Common and
/// Inherited characters go with any script; Han goes with Hiragana and
/// Katakana, as Japanese, and with Hangul or Bopomofo). Also a label wholly
/// in another script whose every character looks like ASCII (`аррӏе`, all
/// Cyrillic, reads `apple`).
pub(crate) fn mixed_scripts(host: &str) -> Vec<MixedLabel> {
    host.split('.')
        .filter(|l| !l.is_ascii())
        .filter_map(|label| {
            let reads_as: Option<String> = label
                .chars()
                .map(|c| {
                    if c.is_ascii() {
                        Some(c.to_ascii_lowercase().to_string())
                    } else {
                        ascii_lookalike(c)
                    }
                })
                .collect::<Option<Vec<_>>>()
                .map(|parts| parts.concat());
            let mixed = !label.is_single_script();
            if !mixed && reads_as.is_none() {
                return None;
            }
            let scripts: BTreeSet<&'static str> = label
                .chars()
                .map(|c| c.script())
                .filter(|s| !matches!(s, Script::Common | Script::Inherited | Script::Unknown))
                .map(Script::full_name)
                .collect();
            let mut characters: Vec<String> = Vec::new();
            for c in label.chars().filter(|c| !c.is_ascii()) {
                let d = describe(c);
                if !characters.contains(&d) {
                    characters.push(d);
                }
            }
            characters.truncate(NAMED);
            Some(MixedLabel {
                label: label.to_string(),
                scripts: scripts.into_iter().collect(),
                characters,
                reads_as,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters_are_named_by_code_point_and_unicode_name() {
        assert_eq!(describe('\u{430}'), "U+0430 CYRILLIC SMALL LETTER A");
        assert_eq!(describe('\u{200b}'), "U+200B ZERO WIDTH SPACE");
        assert_eq!(describe('\u{a0}'), "U+00A0 NO-BREAK SPACE");
        assert_eq!(
            describe('\u{ff41}'),
            "U+FF41 FULLWIDTH LATIN SMALL LETTER A"
        );
    }

    #[test]
    fn lookalikes_and_invisibles_are_found_and_folded() {
        let o = odd("\u{430}llowed_hosts").expect("a Cyrillic a");
        assert_eq!(o.shown, "\\u{430}llowed_hosts");
        assert_eq!(o.folded, "allowed_hosts");
        assert_eq!(o.note, "U+0430 CYRILLIC SMALL LETTER A looks like 'a'");

        let o = odd("dom\u{200b}ains").expect("a zero-width space");
        assert_eq!(o.shown, "dom\\u{200b}ains");
        assert_eq!(o.folded, "domains");
        assert_eq!(o.note, "U+200B ZERO WIDTH SPACE is invisible");

        let o = odd("domains\u{a0}").expect("a no-break space");
        assert_eq!(o.folded, "domains");
        assert_eq!(
            o.note,
            "U+00A0 NO-BREAK SPACE is a space other than the ASCII space"
        );

        let o = odd("\u{ff44}omains").expect("a fullwidth d");
        assert_eq!(o.folded, "domains");
        assert_eq!(
            o.note,
            "U+FF44 FULLWIDTH LATIN SMALL LETTER D looks like 'd'"
        );

        // Each character named once; more than four counted.
        let o = odd("\u{ff44}\u{ff4f}\u{ff4d}\u{ff41}\u{ff49}\u{ff4e}\u{ff53}").expect("fullwidth");
        assert_eq!(o.folded, "domains");
        assert!(o.note.ends_with(" and 3 more"), "{}", o.note);

        assert_eq!(odd("domains"), None, "ASCII");
        assert_eq!(odd("d\u{f6}mains"), None, "ö is a letter of its own");
    }

    #[test]
    fn the_valid_name_a_lookalike_reads_as() {
        let valid = ["domains", "cidrs", "rules", "warn"];
        for name in [
            "\u{ff44}omains",
            "d\u{43e}mains",
            "domains\u{200b}",
            "\u{feff}domains",
            "rule\u{455}",
        ] {
            let o = odd(name).expect(name);
            assert!(resembles(name, &o, &valid).is_some(), "{name:?}: {o:?}");
        }
        let o = odd("w\u{430}rning").expect("odd");
        assert_eq!(resembles("w\u{430}rning", &o, &valid), None);
    }

    #[test]
    fn labels_that_mix_scripts_or_read_as_ascii_are_found() {
        let m = mixed_scripts("g\u{456}thub.com");
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].label, "g\u{456}thub");
        assert_eq!(m[0].scripts, ["Cyrillic", "Latin"]);
        assert_eq!(
            m[0].characters,
            ["U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I"]
        );
        assert_eq!(m[0].reads_as.as_deref(), Some("github"));

        // All Cyrillic, every letter an ASCII lookalike.
        let m = mixed_scripts("\u{430}\u{440}\u{440}\u{4cf}\u{435}.com");
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].scripts, ["Cyrillic"]);
        assert_eq!(m[0].reads_as.as_deref(), Some("apple"));

        // Single-script names, and Japanese, which mixes Han and kana by design.
        for fine in [
            "b\u{fc}cher.example",
            "\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}",
            "\u{65e5}\u{672c}\u{8a9e}\u{3072}\u{3089}\u{304c}\u{306a}.jp",
            "example.com",
        ] {
            assert_eq!(mixed_scripts(fine), vec![], "{fine}");
        }
    }
}
