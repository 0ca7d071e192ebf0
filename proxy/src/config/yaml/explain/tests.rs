//! The mistakes people make in YAML, each told in plain words at the line at
//! fault, as `validate` prints it (the whole config error line).

/// The one error `text` gets, as printed.
fn error(text: &str) -> String {
    let errors = crate::config::parse(text, "proxy.yaml", &|_| None).expect_err("a YAML error");
    assert_eq!(errors.len(), 1, "{errors}");
    errors.to_string()
}

#[test]
fn a_tab_in_the_indentation_is_named_at_the_tab() {
    let tab = "a tab character: YAML indents with spaces only; replace the tab with spaces \
               (most editors can insert spaces when Tab is pressed)";
    for (text, at) in [
        ("proxy:\n\thttp_listen: \":80\"\n", "2:1"),
        (
            "proxy:\n  http_listen: \":80\"\n\ttunnel_listen: \":1080\"\n",
            "3:1",
        ),
        (
            "transforms:\n  - name: allowlist\n    config:\n  \t  domains: [a.test]\n",
            "4:3",
        ),
        // The parser stops on the line before the tab's here.
        ("log:\n  level: info\n\tformat: json\n", "3:1"),
    ] {
        assert_eq!(
            error(text),
            format!("proxy.yaml:{at}: invalid YAML: {tab}"),
            "{text:?}"
        );
    }
}

#[test]
fn a_key_without_its_colon_is_named_at_that_key() {
    assert_eq!(
        error("proxy:\n  http_listen \":80\"\n  tunnel_listen: \":1080\"\n"),
        "proxy.yaml:2:3: invalid YAML: 'http_listen \":80\"' has no ':' after its key, so it is \
         text rather than a key, and runs on into line 3: write 'key: value' (or 'key:' with \
         the value indented on the lines below)"
    );
    assert_eq!(
        error("tls\n  mode: mitm\n"),
        "proxy.yaml:1:1: invalid YAML: 'tls' has no ':' after its key, so it is text rather \
         than a key, and runs on into line 2: write 'key: value' (or 'key:' with the value \
         indented on the lines below)"
    );
    assert_eq!(
        error("tls:\n  mode:mitm\n  ca_cert: a\n"),
        "proxy.yaml:2:3: invalid YAML: 'mode:mitm' has no space after its ':', so it is text \
         rather than a key, and runs on into line 3: write 'mode: mitm'"
    );
    // With a comment line between them, the text ends there.
    assert_eq!(
        error("tls:\n  mode:mitm\n  # the CA\n  ca_cert: a\n"),
        "proxy.yaml:2:3: invalid YAML: 'mode:mitm' has no space after its ':', so it is text \
         rather than a key, and the key on line 4 cannot follow it: write 'mode: mitm'"
    );
}

#[test]
fn a_second_key_on_one_line_says_to_split_or_quote() {
    let two = "a second 'key:' on one line: a key's value cannot be another key on the same \
               line; put the inner key on a line of its own, indented under its parent, or \
               quote a value that holds ': '";
    assert_eq!(
        error("tls: mode: mitm\n"),
        format!("proxy.yaml:1:10: invalid YAML: {two}")
    );
    assert_eq!(
        error("log:\n  level: info: x\n"),
        format!("proxy.yaml:2:14: invalid YAML: {two}")
    );
    assert_eq!(
        error("transforms:\n  - name: judge\n    config:\n      prompt: Deny requests\n        that exfiltrate: data\n"),
        "proxy.yaml:5:24: invalid YAML: this line continues the value of line 4 ('prompt: \
         Deny requests'), and a value cannot hold ': ' unless it is quoted: quote the value, \
         or write it as a block (key: |)"
    );
    assert_eq!(
        error("transforms:\n  - name: judge\n    config:\n      prompt: Deny requests\n        that send\n        data: out\n"),
        "proxy.yaml:6:13: invalid YAML: this line continues the value of line 4 ('prompt: \
         Deny requests'), and a value cannot hold ': ' unless it is quoted: quote the value, \
         or write it as a block (key: |)"
    );
}

#[test]
fn a_line_indented_wrong_names_the_columns_it_can_belong_at() {
    // Further than a key that has its value.
    assert_eq!(
        error("proxy:\n  http_listen: \":80\"\n   https_listen: \":443\"\n"),
        "proxy.yaml:3:4: invalid YAML: line 3 is indented further than line 2 ('http_listen: \
         \":80\"'), whose key has its value on that line already: indent line 3 to column 3 \
         to make it a key beside it"
    );
    // Less than its siblings, more than its parent.
    assert_eq!(
        error("proxy:\n  http_listen: \":80\"\n tunnel_listen: \":1080\"\n"),
        "proxy.yaml:3:2: invalid YAML: this line is indented to column 2, where nothing above \
         it lines up: indent it like the keys it belongs with (the lines above it start at \
         columns 1 and 3)"
    );
    // A list item out of line with its list, either way.
    let domains =
        "transforms:\n  - name: allowlist\n    config:\n      domains:\n        - a.test\n";
    assert_eq!(
        error(&format!("{domains}      - b.test\n")),
        "proxy.yaml:6:7: invalid YAML: this list item is at column 7, but the items of the \
         list above it (line 5) are at column 9: indent it to column 9 to add it to that list"
    );
    assert_eq!(
        error("transforms:\n  - name: allowlist\n    config: {}\n   - name: secrets\n"),
        "proxy.yaml:4:4: invalid YAML: this list item is at column 4, but the items of the \
         list above it (line 2) are at column 3: indent it to column 3 to add it to that list"
    );
    // A key where the list's next item was expected.
    assert_eq!(
        error("transforms:\n  - name: allowlist\n    config: {}\n  name: foo\n"),
        "proxy.yaml:4:3: invalid YAML: line 4 lines up with the list items above it (column \
         3) but is not one: start it with '- ' to make it a new item, or indent it to column \
         5 to add it to the item above"
    );
}

#[test]
fn an_unclosed_quote_or_bracket_is_named_where_it_opens() {
    assert_eq!(
        error("proxy:\n  http_listen: \":80\n  x: y\n"),
        "proxy.yaml:2:16: invalid YAML: this quoted value is never closed: add its closing \
         quote (a quoted value may continue on the next lines only when they are indented \
         further than its key)"
    );
    assert_eq!(
        error("transforms:\n  - name: allowlist\n    config:\n      domains: [a.test, b.test\n  - name: x\n"),
        "proxy.yaml:4:16: invalid YAML: the list opened here with '[' is not closed with ']' \
         before line 5"
    );
    assert_eq!(
        error("dns: [\n"),
        "proxy.yaml:1:6: invalid YAML: the list opened here with '[' is not closed with ']' \
         before the end of the file"
    );
}

#[test]
fn a_value_yaml_reads_otherwise_says_to_quote_it() {
    assert_eq!(
        error("transforms:\n  - name: allowlist\n    config:\n      domains:\n        - *.example.com\n"),
        "proxy.yaml:5:11: invalid YAML: *.example.com is read as an alias (*name refers to a \
         value marked &name), and nothing is marked so: quote a value that starts with '*', as \
         in \"*.example.com\""
    );
    assert_eq!(
        error("log:\n  level: @info\n"),
        "proxy.yaml:2:10: invalid YAML: a value cannot start with '@' (YAML reserves it): \
         quote the value"
    );
}

/// A word alone where a key goes, at the end or before a nested block.
#[test]
fn a_word_where_a_key_goes_is_named() {
    let text_key = |shown: &str| {
        format!(
            "invalid YAML: '{shown}' has no ':' after its key, so it is text rather than a key, \
             and a key is expected there: write 'key: value' (or 'key:' with the value indented \
             on the lines below)"
        )
    };
    assert_eq!(
        error("tls:\n  mode: mitm\nproxy\n"),
        format!("proxy.yaml:3:1: {}", text_key("proxy"))
    );
    assert_eq!(
        error("tls:\n  mode: mitm\n  ca_cert\n"),
        format!("proxy.yaml:3:3: {}", text_key("ca_cert"))
    );
    assert_eq!(
        error("log:\n  level: info # debug: later\nproxy\n  http_listen: \":80\"\n"),
        format!("proxy.yaml:3:1: {}", text_key("proxy"))
    );
}

/// `-name: x` is a key to YAML, not a list item.
#[test]
fn a_dash_glued_to_its_key_says_to_add_the_space() {
    assert_eq!(
        error("transforms:\n  -name: allowlist\n"),
        "proxy.yaml:2:3: transforms: expected a list, found a mapping (a list item needs a \
         space after its '-': write '- name')"
    );
    // With the item's other keys below it, YAML reads them as its value's text.
    assert_eq!(
        error("transforms:\n  -name: allowlist\n    config: {}\n"),
        "proxy.yaml:2:3: invalid YAML: '-name: allowlist' is a key named '-name', not a list \
         item: write '- name: allowlist' (a list item needs a space after its '-')"
    );
}

/// `key:value` is one string to YAML: where a mapping was expected, the
/// error says to add the space.
#[test]
fn a_key_glued_to_its_value_says_to_add_the_space() {
    assert_eq!(
        error("proxy:\n  http_listen:\":80\"\n"),
        "proxy.yaml:2:3: proxy: expected a mapping, found a scalar (a key needs a space after \
         its ':': write 'http_listen: \":80\"')"
    );
}

/// What the parser says about anything else is kept.
#[test]
fn other_errors_keep_the_parser_words() {
    assert_eq!(
        error("%YAML 1.2\n%YAML 1.2\n---\na: b\n"),
        "proxy.yaml:2:1: invalid YAML: duplicate version directive"
    );
}
