//! A key indented under the wrong parent is a known key in the wrong place:
//! the error says where it belongs (a sibling section, the parent, or a
//! section inside), not only that it is unknown here. Where it would belong
//! in more than one place, or nowhere, the plain message stays.

use super::errs;

const CA: &str = "  ca_cert: /certs/ca.crt\n  ca_key: /certs/ca.key\n";

#[test]
fn a_key_of_a_sibling_section_says_which() {
    // `http_listen` indented under `tls`, as if `proxy:` were above it.
    let text = format!("proxy:\n  https_listen: \":443\"\ntls:\n{CA}  http_listen: \":80\"\n");
    assert_eq!(
        errs(&text),
        [
            "proxy.yaml:6:3: tls: unknown field 'http_listen' under tls; it belongs under proxy \
          — check its indentation"
        ]
    );
    // The same when the section it belongs to is not in the file at all.
    let text = format!("tls:\n{CA}  passthrough: [\"*.internal\"]\n");
    assert_eq!(
        errs(&text),
        [
            "proxy.yaml:4:3: tls: unknown field 'passthrough' under tls; it belongs under dns \
          — check its indentation"
        ]
    );
}

#[test]
fn a_key_of_the_parent_says_so() {
    // `tls:` indented under `proxy`.
    let text = format!("proxy:\n  http_listen: \":80\"\n  tls:\n  {CA}");
    let got = errs(&text);
    assert_eq!(
        got[0],
        "proxy.yaml:3:3: proxy: unknown field 'tls' under proxy; it belongs at the top level \
         — check its indentation",
        "{got:?}"
    );
    // Deeper: `rules` of a secrets entry indented under its `source`.
    let text = format!(
        "tls:\n{CA}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source:\n            type: env\n            var: K\n            rules: [{{host: api.test}}]\n          inject: {{header: X-Key}}\n"
    );
    assert_eq!(
        errs(&text),
        ["proxy.yaml:11:13: transforms[0].config.secrets[0].source: unknown field 'rules' under \
          source; it belongs under secrets[0] — check its indentation"]
    );
}

#[test]
fn a_key_of_a_section_inside_says_which() {
    // `http_listen` at the top level, `proxy:` forgotten or the key outdented.
    let text = format!("tls:\n{CA}http_listen: \":80\"\n");
    assert_eq!(
        errs(&text),
        [
            "proxy.yaml:4:1: unknown field 'http_listen' at the top level; it belongs under proxy \
          — check its indentation"
        ]
    );
    // A rule's `paths` outdented to the allowlist's own level.
    let text = format!(
        "tls:\n{CA}transforms:\n  - name: allowlist\n    config:\n      rules:\n        - host: api.test\n      paths: [\"/v1/*\"]\n"
    );
    assert_eq!(
        errs(&text),
        [
            "proxy.yaml:9:7: transforms[0].config: unknown field 'paths' under config; it belongs \
          under rules — check its indentation"
        ]
    );
    // `header` of an inject block written beside it, under the entry's `source`.
    let text = format!(
        "tls:\n{CA}transforms:\n  - name: secrets\n    config:\n      secrets:\n        - source: {{type: env, var: K, header: X-Key}}\n          inject: {{query_param: key}}\n"
    );
    assert_eq!(
        errs(&text),
        ["proxy.yaml:8:39: transforms[0].config.secrets[0].source: unknown field 'header' under \
          source; it belongs under inject — check its indentation"]
    );
}

#[test]
fn a_key_known_in_several_places_or_none_keeps_the_plain_message() {
    // `listen` is a key of dns, intercept, management and metrics: no single place to name.
    let got = errs(&format!("tls:\n{CA}proxy:\n  listen: \":80\"\n"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with("proxy.yaml:5:3: proxy: unknown field 'listen' (expected one of:"),
        "{got:?}"
    );
    // A typo is still a typo.
    assert_eq!(
        errs(&format!("tls:\n{CA}  mod: mitm\n")),
        ["proxy.yaml:4:3: tls: unknown field 'mod', did you mean 'mode'?"]
    );
}
