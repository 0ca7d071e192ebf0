//! The reader on its own: byte order marks, empty documents, merge keys and tags.

use super::*;

/// `text`'s document, expecting one.
fn doc(text: &str) -> Node {
    match parse(text) {
        Ok(Some(node)) => node,
        Ok(None) => panic!("expected a document, found nothing in {text:?}"),
        Err(e) => panic!(
            "expected a document, got {:?}: {} in {text:?}",
            e.pos, e.message
        ),
    }
}

/// `text`'s error as `line:column: message`.
fn err(text: &str) -> String {
    match parse(text) {
        Ok(node) => panic!("expected an error, parsed {node:?} from {text:?}"),
        Err(SyntaxError {
            pos: Pos::File { line, column },
            message,
        }) => format!("{line}:{column}: {message}"),
        Err(e) => panic!("error without a file position: {e:?}"),
    }
}

/// A node in flow style, quoting strings: `{a: 1, b: "x"}`.
fn show(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar { text, plain: true } => text.clone(),
        Kind::Scalar { text, plain: false } => format!("{text:?}"),
        Kind::Seq(items) => format!(
            "[{}]",
            items.iter().map(show).collect::<Vec<_>>().join(", ")
        ),
        Kind::Map(entries) => format!(
            "{{{}}}",
            entries
                .iter()
                .map(|(k, v)| format!("{}: {}", show(k), show(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn pos(node: &Node) -> (usize, usize) {
    match node.pos {
        Pos::File { line, column } => (line, column),
        Pos::Env(var) => panic!("{var}"),
    }
}

#[test]
fn a_byte_order_mark_is_skipped_and_columns_are_the_editors() {
    let root = doc("\u{feff}tls:\n  mode: sni-only\n");
    assert_eq!(show(&root), "{tls: {mode: sni-only}}");
    let (key, _) = root
        .entry("tls")
        .expect("the first key is 'tls', not '\\u{feff}tls'");
    assert_eq!(pos(key), (1, 1));
    // Only at the start: elsewhere it is content.
    assert_eq!(show(&doc("k: \u{feff}v\n")), "{k: \u{feff}v}");
}

#[test]
fn control_characters_are_refused_where_they_are() {
    // A NUL ended yaml-rust2's input: what followed it was silently dropped.
    assert_eq!(
        err("tls: {mode: mitm}\n# comment \0 here\ntransforms: []\n"),
        "2:11: U+0000 is a control character, which YAML does not allow"
    );
    assert_eq!(
        err("a: 1\r\nb: in\x7ffo\n"),
        "2:6: U+007F is a control character, which YAML does not allow"
    );
    assert_eq!(
        err("a: 1\rb: \"x\u{1b}\"\n"),
        "2:6: U+001B is a control character, which YAML does not allow"
    );
    assert_eq!(
        err("k: \u{9c}\n"),
        "1:4: U+009C is a control character, which YAML does not allow"
    );
    // Tabs, line breaks, NEL and characters beyond the BMP are printable.
    assert_eq!(
        show(&doc("k:\t\"v\u{85}\u{1f600}\u{a0}\"\r\n")),
        format!("{{k: {:?}}}", "v\u{85}\u{1f600}\u{a0}")
    );
}

#[test]
fn nothing_but_comments_whitespace_or_null_is_no_document() {
    for text in [
        "",
        "\n\n",
        "   \n\t\n",
        "# only a comment\n\n  # another\n",
        "\u{feff}",
        "\u{feff}# bom and comment\n",
        "---\n",
        "--- # empty\n...\n",
        "~\n",
        "null\n",
    ] {
        assert!(
            matches!(parse(text), Ok(None)),
            "{text:?}: {:?}",
            parse(text)
                .map(|n| n.map(|n| show(&n)))
                .map_err(|e| e.message)
        );
    }
    // An explicit empty mapping is a document.
    assert_eq!(show(&doc("{}\n")), "{}");
}

#[test]
fn a_merge_key_copies_the_entries_its_mapping_does_not_set() {
    let root = doc("base: &base {host: a.test, port: 1, tls: true}\n\
         over:\n  port: 2\n  <<: *base\n  extra: x\n");
    // The own key wins wherever it stands; merged keys take the place of `<<`.
    assert_eq!(
        show(root.get("over").expect("over")),
        "{port: 2, host: a.test, tls: true, extra: x}"
    );
    // Merged entries keep the positions they were written at.
    let over = root.get("over").expect("over");
    assert_eq!(pos(over.get("host").expect("host")), (1, 20));
    assert_eq!(pos(over.get("port").expect("port")), (3, 9));
    assert_eq!(pos(over), (3, 3), "the mapping is where its first key is");
}

#[test]
fn a_merge_of_a_list_takes_earlier_mappings_first() {
    let root = doc("a: &a {x: a, y: a}\nb: &b {y: b, z: b}\n\
         m:\n  <<: [*a, *b]\n  z: own\n\
         inline:\n  <<: [{p: 1}, *b]\n");
    assert_eq!(show(root.get("m").expect("m")), "{x: a, y: a, z: own}");
    assert_eq!(
        show(root.get("inline").expect("inline")),
        "{p: 1, y: b, z: b}"
    );
    // Inside a list and a flow mapping, and a merge that itself merges.
    let root = doc("a: &a {x: 1}\nb: &b {<<: *a, y: 2}\nl:\n  - <<: *b\n    z: 3\n  - {<<: *a}\n");
    assert_eq!(show(root.get("b").expect("b")), "{x: 1, y: 2}");
    assert_eq!(
        show(root.get("l").expect("l")),
        "[{x: 1, y: 2, z: 3}, {x: 1}]"
    );
}

#[test]
fn a_quoted_or_str_tagged_merge_key_is_an_ordinary_key() {
    let root = doc("a: &a {x: 1}\nm:\n  \"<<\": *a\n  !!str <<: 2\n");
    assert_eq!(
        show(root.get("m").expect("m")),
        "{\"<<\": {x: 1}, \"<<\": 2}"
    );
    let root = doc("a: &a {x: 1}\nm:\n  !!merge <<: *a\n");
    assert_eq!(show(root.get("m").expect("m")), "{x: 1}");
}

#[test]
fn merging_anything_but_mappings_is_an_error_where_it_is() {
    assert_eq!(
        err("m:\n  <<: 5\n"),
        "2:7: '<<' merges a mapping or a list of mappings, found a scalar"
    );
    assert_eq!(
        err("s: &s x\nm:\n  <<: *s\n"),
        "3:7: '<<' merges a mapping or a list of mappings, found a scalar"
    );
    assert_eq!(
        err("a: &a {x: 1}\nm: {<<: [[*a]]}\n"),
        "2:10: '<<' merges a mapping or a list of mappings, found a list"
    );
    assert_eq!(
        err("a: &a {x: 1}\nm:\n  <<:\n    - *a\n    - oops\n"),
        "5:7: '<<' merges a mapping or a list of mappings, found a scalar"
    );
    assert_eq!(
        err("m:\n  <<:\n"),
        "3:1: '<<' merges a mapping or a list of mappings, found null"
    );
    assert_eq!(
        err("a: &a {x: 1}\nm:\n  <<: *a\n  <<: *a\n"),
        "4:3: a mapping holds one '<<' merge key; merge several mappings with '<<: [*a, *b]'"
    );
}

#[test]
fn merges_count_against_the_alias_limits() {
    // Each level merges nine copies of the one above under the same keys: the
    // merged mappings stay small, but building them copies 9^n nodes, and the
    // limit counts every copy.
    let mut text =
        String::from("a: &a {k0: x, k1: x, k2: x, k3: x, k4: x, k5: x, k6: x, k7: x, k8: x}\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let items = vec![format!("*{}", pair[0]); 9].join(", ");
        text.push_str(&format!(
            "{name}: &{name} {{<<: [{items}]}}\n",
            name = pair[1]
        ));
    }
    assert_eq!(err(&text), "5:33: aliases expand to more than 100000 nodes");
    // Four levels are within the limits, and merge to nine keys.
    let four: String = text.lines().take(4).map(|l| format!("{l}\n")).collect();
    let root = doc(&four);
    let Some(Kind::Map(entries)) = root.get("d").map(|n| &n.kind) else {
        panic!("d is a mapping")
    };
    assert_eq!(entries.len(), 9);
}

#[test]
fn standard_tags_are_honoured() {
    let root = doc(
        "s: !!str 123\nn: !!str null\nb: !!str true\ni: !!int \"8080\"\nh: !!int 0x1F\n\
         f: !!float \"1.5\"\nt: !!bool \"true\"\nz: !!null ~\nq: ! 12\n\
         m: !!map {a: 1}\nl: !!seq [1]\nv: !<tag:yaml.org,2002:str> 7\nu: ! [2]\n",
    );
    assert_eq!(
        show(&root),
        "{s: \"123\", n: \"null\", b: \"true\", i: 8080, h: 31, f: 1.5, t: true, z: , \
         q: \"12\", m: {a: 1}, l: [1], v: \"7\", u: [2]}"
    );
    assert!(root.get("z").is_some_and(Node::is_null));
    assert!(
        !root.get("n").is_some_and(Node::is_null),
        "!!str null is a string"
    );
}

#[test]
fn unknown_and_misplaced_tags_are_errors_naming_the_tag_where_it_is_written() {
    assert_eq!(
        err("a: 1\nb: !foo x\n"),
        "2:4: unknown tag '!foo' (supported: !!str, !!int, !!bool, !!float, !!null, !!map, \
         !!seq, !!merge)"
    );
    assert!(err("k: !!binary aGk=\n").starts_with("1:4: unknown tag '!!binary'"));
    assert!(err("k:\n  - !!set {a: 1}\n").starts_with("2:5: unknown tag '!!set'"));
    assert!(err("k: !<tag:example.com,2000:x> v\n")
        .starts_with("1:4: unknown tag '!<tag:example.com,2000:x>'"));
    // A %TAG directive that moves `!!` elsewhere makes `!!str` a tag of another
    // schema; written otherwise than named, it is reported at its value.
    assert!(err("%TAG !! tag:example.com,2000:\n---\nk: !!str x\n")
        .starts_with("3:10: unknown tag '!<tag:example.com,2000:str>'"));
    assert_eq!(
        err("k: !!map x\n"),
        "1:4: the !!map tag is on a scalar, not a mapping"
    );
    assert_eq!(
        err("k: !!seq {a: 1}\n"),
        "1:4: the !!seq tag is on a mapping, not a list"
    );
    assert_eq!(err("k: !!str [1]\n"), "1:4: the !!str tag is on a list");
    assert_eq!(
        err("k: !!merge x\n"),
        "1:4: the !!merge tag belongs on a '<<' key"
    );
}

#[test]
fn a_tagged_value_that_does_not_fit_its_tag_is_an_error() {
    assert_eq!(
        err("k: !!int abc\n"),
        "1:4: 'abc' is not an integer (tagged !!int)"
    );
    assert_eq!(
        err("k: !!int 1.5\n"),
        "1:4: '1.5' is not an integer (tagged !!int)"
    );
    assert_eq!(
        err("k: !!int 010\n"),
        "1:4: '010' is not an integer (tagged !!int) (a leading 0 means octal to yaml.v3: \
         write 0o... or drop the 0)"
    );
    assert_eq!(
        err("k: !!int 99999999999999999999\n"),
        "1:4: '99999999999999999999' is not an integer (tagged !!int) (out of range)"
    );
    assert_eq!(
        err("k: !!bool yes\n"),
        "1:4: 'yes' is not a boolean (true or false) (tagged !!bool)"
    );
    assert_eq!(
        err("k: !!float x1\n"),
        "1:4: 'x1' is not a number (tagged !!float)"
    );
    assert_eq!(err("k: !!null x\n"), "1:4: 'x' is not null (tagged !!null)");
}
