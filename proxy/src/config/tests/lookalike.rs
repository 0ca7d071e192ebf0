//! Keys and names written with lookalike or invisible characters: the error
//! shows the key with them escaped, names each by code point and Unicode
//! name, and says which valid key it reads as, at the usual file:line:col and
//! field path (and says where it belongs when that is another mapping).

use super::{errs, BASE};

fn refused(snippet: &str, expected: &[&str]) {
    let text = format!("{snippet}{BASE}");
    assert_eq!(errs(&text), expected, "\n--- config:\n{text}");
}

const ALLOW: &str = "transforms:\n  - name: allowlist\n    config:\n";

#[test]
fn a_key_with_a_cyrillic_letter_names_it_and_the_key_it_looks_like() {
    refused(
        &format!("{ALLOW}      d\u{43e}mains: [api.test]\n"),
        &[
            "proxy.yaml:4:7: transforms[0].config: unknown field 'd\\u{43e}mains': U+043E \
           CYRILLIC SMALL LETTER O looks like 'o'; did you mean 'domains'?",
        ],
    );
    refused(
        &format!("{ALLOW}      rules:\n        - {{host: a.test, p\u{430}ths: [\"/x\"]}}\n"),
        &[
            "proxy.yaml:5:26: transforms[0].config.rules[0]: unknown field 'p\\u{430}ths': U+0430 \
           CYRILLIC SMALL LETTER A looks like 'a'; did you mean 'paths'?",
        ],
    );
}

#[test]
fn invisible_and_space_characters_in_a_key_are_named() {
    refused(
        &format!("{ALLOW}      domains\u{200b}: [api.test]\n"),
        &[
            "proxy.yaml:4:7: transforms[0].config: unknown field 'domains\\u{200b}': U+200B ZERO \
           WIDTH SPACE is invisible; did you mean 'domains'?",
        ],
    );
    refused(
        &format!("{ALLOW}      domains\u{a0}: [api.test]\n"),
        &[
            "proxy.yaml:4:7: transforms[0].config: unknown field 'domains\\u{a0}': U+00A0 \
           NO-BREAK SPACE is a space other than the ASCII space; did you mean 'domains'?",
        ],
    );
    // A byte order mark pasted in front of a key, and a typo after the fold.
    refused(
        &format!("{ALLOW}      \u{feff}domain: [api.test]\n"),
        &[
            "proxy.yaml:4:7: transforms[0].config: unknown field '\\u{feff}domain': U+FEFF ZERO \
           WIDTH NO-BREAK SPACE is invisible; did you mean 'domains'?",
        ],
    );
}

#[test]
fn fullwidth_letters_are_read_as_the_ascii_they_stand_for() {
    refused(
        "proxy:\n  \u{ff48}ttp_listen: \":80\"\n",
        &[
            "proxy.yaml:2:3: proxy: unknown field '\\u{ff48}ttp_listen': U+FF48 FULLWIDTH LATIN \
           SMALL LETTER H looks like 'h'; did you mean 'http_listen'?",
        ],
    );
}

#[test]
fn a_lookalike_of_a_key_of_another_section_says_where_it_belongs() {
    let text = format!("{BASE}  \u{440}assthrough: [x.test]\n");
    assert_eq!(
        errs(&text),
        [
            "proxy.yaml:4:3: tls: unknown field '\\u{440}assthrough' under tls: U+0440 CYRILLIC \
           SMALL LETTER ER looks like 'p'; 'passthrough' belongs under dns — check its \
           indentation"
        ],
        "\n--- config:\n{text}"
    );
}

#[test]
fn lookalike_transform_names_and_values_are_named_too() {
    refused(
        "transforms:\n  - name: \u{430}llowlist\n    config: {domains: [a.test]}\n",
        &[
            "proxy.yaml:2:11: transforms[0].name: unknown transform '\\u{430}llowlist': U+0430 \
           CYRILLIC SMALL LETTER A looks like 'a'; did you mean 'allowlist'?",
        ],
    );
    refused(
        "log:\n  level: d\u{435}bug\n",
        &[
            "proxy.yaml:2:10: log.level: invalid log level 'd\\u{435}bug': U+0435 CYRILLIC SMALL \
           LETTER IE looks like 'e'; did you mean 'debug'?",
        ],
    );
}

#[test]
fn other_non_ascii_keys_keep_the_plain_message() {
    // `ö` is read as no ASCII letter: an ordinary typo.
    refused(
        &format!("{ALLOW}      d\u{f6}mains: [api.test]\n"),
        &[
            "proxy.yaml:4:7: transforms[0].config: unknown field 'd\u{f6}mains', did you mean \
           'domains'?",
        ],
    );
}

/// A host name with no ASCII (IDNA) form is an error at its field, naming
/// the label and the character at fault.
#[test]
fn a_host_name_without_an_idna_form_is_refused_naming_the_character() {
    refused(
        &format!("{ALLOW}      domains: [\"api\u{a0}.test\"]\n"),
        &[
            "proxy.yaml:4:17: transforms[0].config.domains[0]: host \"api\\u{a0}.test\": label \
           \"api\\u{a0}\" has no ASCII (IDNA) form: U+00A0 NO-BREAK SPACE is not allowed in a \
           host name",
        ],
    );
    refused(
        &format!("{ALLOW}      rules: [{{host: \"b\u{fc}*.example\"}}]\n"),
        &["proxy.yaml:4:22: transforms[0].config.rules[0].host: host \"b\u{fc}*.example\": label \
           \"b\u{fc}*\" has no ASCII (IDNA) form: a glob '*' cannot be part of an \
           internationalized label; write the label's ASCII form (xn--...) around the '*', or a \
           '*' label of its own"],
    );
}
