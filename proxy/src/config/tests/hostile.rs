//! Hostile YAML: nesting far past the depth limit and alias bombs are refused
//! with a positioned error (no stack overflow, no runaway allocation), and the
//! anchors and aliases real configs use keep working.

use super::{errs, ok, BASE};
use crate::config::TransformConfig;

/// Levels in the generated deep documents: far past the limit (128), and far past
/// what a recursive parser survives on a 2 MiB thread stack (tests run on one).
const LEVELS: usize = 10_000;

/// `k:` nested `levels` deep as block mappings, one more space of indent per level.
fn deep_mappings(levels: usize) -> String {
    let mut text = String::with_capacity(levels * (levels + 5) / 2);
    for level in 0..levels {
        text.push_str(&" ".repeat(level));
        text.push_str("k:\n");
    }
    text
}

#[test]
fn deep_block_mappings_are_refused_at_the_depth_limit() {
    let text = deep_mappings(LEVELS);
    assert_eq!(
        errs(&text),
        ["proxy.yaml:129:130: invalid YAML: nesting deeper than 128 levels"]
    );
}

#[test]
fn deep_block_sequences_are_refused_at_the_depth_limit() {
    // `- - - x`: each `- ` opens a sequence inside the previous one.
    let text = format!("{}x\n", "- ".repeat(LEVELS));
    assert_eq!(
        errs(&text),
        ["proxy.yaml:1:257: invalid YAML: nesting deeper than 128 levels"]
    );
}

#[test]
fn deep_mixed_nesting_is_refused_at_the_depth_limit() {
    // `- k:`: a sequence holding a mapping holding a sequence ..., two levels per line.
    let text: String = (0..LEVELS / 2)
        .map(|line| format!("{}- k:\n", " ".repeat(2 * line)))
        .collect();
    assert_eq!(
        errs(&text),
        ["proxy.yaml:65:131: invalid YAML: nesting deeper than 128 levels"]
    );
    // Flow style too: ours below 255 levels, yaml-rust2's scanner's own limit above.
    let flow = format!("k: {}\n", "[".repeat(200));
    assert_eq!(
        errs(&flow),
        ["proxy.yaml:1:131: invalid YAML: nesting deeper than 128 levels"]
    );
    let flow = format!("k: {}\n", "[".repeat(LEVELS));
    assert_eq!(
        errs(&flow),
        ["proxy.yaml:1:259: invalid YAML: recursion limit exceeded"]
    );
}

#[test]
fn nesting_up_to_the_limit_is_only_a_schema_question() {
    // 128 levels parse; the decoder then refuses the unknown key, as for any other.
    let text = format!("{BASE}{}", deep_mappings(128));
    let got = errs(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("unknown field 'k'"), "{got:?}");
}

#[test]
fn an_alias_cannot_nest_its_anchor_past_the_limit() {
    // 100 levels under the anchor, then the alias 50 levels down: 150 in the tree.
    let text = format!(
        "a: &a {}x{}\nb: {}*a{}\n",
        "[".repeat(99),
        "]".repeat(99),
        "[".repeat(50),
        "]".repeat(50)
    );
    assert_eq!(
        errs(&text),
        ["proxy.yaml:2:54: invalid YAML: nesting deeper than 128 levels"]
    );
}

#[test]
fn billion_laughs_is_refused_at_the_alias_that_crosses_the_limit() {
    // Each line holds nine copies of the one above: line 9 would expand to 9^9 scalars.
    let mut text = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for pair in names.windows(2) {
        let (prev, name) = (pair[0], pair[1]);
        let items = vec![format!("*{prev}"); 9].join(",");
        text.push_str(&format!("{name}: &{name} [{items}]\n"));
    }
    // Aliases so far: b 90 nodes, c 819, d 7380, e 66429; the first `*e` of line 6 adds 66430.
    assert_eq!(
        errs(&text),
        ["proxy.yaml:6:8: invalid YAML: aliases expand to more than 100000 nodes"]
    );
}

#[test]
fn a_long_scalar_aliased_many_times_is_refused() {
    // Few nodes, much text: 64 KiB copied 100 times would be 6.4 MB.
    let text = format!(
        "a: &a \"{}\"\nb: [{}]\n",
        "x".repeat(64 << 10),
        vec!["*a"; 100].join(", ")
    );
    // The 64th alias reaches 4 MiB exactly; the 65th passes it. `[` is column 4, aliases 4 wide.
    let column = 5 + 64 * 4;
    assert_eq!(
        errs(&text),
        [format!(
            "proxy.yaml:2:{column}: invalid YAML: aliases expand to more than 4 MiB of text"
        )]
    );
}

#[test]
fn an_alias_inside_its_own_anchor_is_refused() {
    assert_eq!(
        errs("a: &a [x, *a]\n"),
        ["proxy.yaml:1:11: invalid YAML: alias to an anchor that contains it"]
    );
}

#[test]
fn anchors_and_aliases_that_real_configs_use_still_work() {
    // One allowlist of 2,000 rules reused by ten transforms: 60,010 nodes through aliases.
    let rules: String = (0..2000)
        .map(|i| format!("        - host: h{i}.example.com\n"))
        .collect();
    let mut text = format!(
        "{BASE}transforms:\n  - name: allowlist\n    config:\n      rules: &rules\n{rules}"
    );
    for _ in 0..10 {
        text.push_str("  - name: allowlist\n    config: {rules: *rules}\n");
    }
    let cfg = ok(&text);
    assert_eq!(cfg.transforms.len(), 11);
    for t in &cfg.transforms {
        let TransformConfig::Allowlist(a) = t else {
            panic!("expected allowlists, got {t:?}")
        };
        assert_eq!(a.rules.len(), 2000, "every alias expands to all rules");
    }

    // A whole transform config anchored and reused.
    let text = format!(
        "{BASE}transforms:\n  - name: allowlist\n    config: &c {{domains: [a.example]}}\n  - name: allowlist\n    config: *c\n"
    );
    assert_eq!(ok(&text).transforms.len(), 2);
}

/// A mapping with this many keys: far more than any real config, enough that
/// a duplicate check comparing each key with every earlier one (1.25 billion
/// comparisons) would take minutes instead of well under a second.
const KEYS: usize = 50_000;

#[test]
fn a_mapping_with_50k_keys_loads() {
    // `hmac_sign` credentials: a mapping with user-chosen keys.
    let mut text = String::from(
        "tls:\n  mode: sni-only\ntransforms:\n  - name: hmac_sign\n    config:\n      \
         timestamp: {format: unix_seconds}\n      signature: {algorithm: sha256, key_encoding: \
         raw, output_encoding: hex, message: \"{{.Timestamp}}\"}\n      \
         headers: [{name: X-Sig, value: \"{{.Signature}}\"}]\n      rules: [{host: api.test}]\n      \
         credentials:\n        secret: {type: env, var: S}\n",
    );
    for i in 0..KEYS {
        text.push_str(&format!("        k{i}: {{type: env, var: V{i}}}\n"));
    }
    let cfg = ok(&text);
    let TransformConfig::HmacSign(h) = &cfg.transforms[0] else {
        panic!("expected hmac_sign, got {:?}", cfg.transforms[0].name());
    };
    assert_eq!(h.credentials.len(), KEYS + 1);
    // A duplicate among them is still found, at its own line.
    text.push_str("        k7: {type: env, var: AGAIN}\n");
    assert_eq!(
        errs(&text),
        [format!(
            "proxy.yaml:{}:9: transforms[0].config.credentials: duplicate key 'k7'",
            KEYS + 12
        )]
    );
    // And in a mapping of fixed fields, where each unknown key is an error:
    // the first 50 are reported, the rest (the duplicate among them) counted.
    let unknown: String = (0..KEYS).map(|i| format!("  x{i}: 1\n")).collect();
    let found = errs(&format!("tls:\n  mode: sni-only\nlog:\n{unknown}  x3: 2\n"));
    assert_eq!(found.len(), 51);
    assert_eq!(
        found[50],
        format!(
            "proxy.yaml: … and {} more errors, not shown (fix these first)",
            KEYS + 1 - 50
        )
    );
}
