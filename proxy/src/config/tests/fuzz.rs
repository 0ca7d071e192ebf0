//! Robustness: arbitrary input and mangled real configs never panic, and every
//! error carries a position when it comes from the file (except that the file is empty). The fixture is the
//! spec's full example (06-configuration.md) plus an `intercept` block.

use proptest::prelude::*;

use super::parse;

const FULL: &str = include_str!("fixtures/full.yaml");

fn check(text: &str) {
    if let Err(errors) = parse(text, "f.yaml", &|_| None) {
        assert!(!errors.is_empty());
        for e in errors.iter() {
            // An empty file has no line to point at: the error is about the file.
            let empty = e.message == "config file is empty";
            assert!(
                (e.line.is_some() && e.column.is_some()) || empty,
                "file error without position: {e}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_text_never_panics(text in "[ -~\n]{0,200}") {
        check(&text);
    }

    #[test]
    fn mangled_config_never_panics(cut in 0usize..4000, len in 0usize..40, insert in "[ -~\n]{0,8}") {
        let start = cut.min(FULL.len());
        let end = (start + len).min(FULL.len());
        if FULL.is_char_boundary(start) && FULL.is_char_boundary(end) {
            let text = format!("{}{insert}{}", &FULL[..start], &FULL[end..]);
            check(&text);
        }
    }
}

#[test]
fn fixture_is_valid() {
    super::ok(FULL);
}
