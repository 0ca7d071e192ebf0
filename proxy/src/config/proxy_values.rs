//! `secrets` replace entries whose proxy tokens meet. Two entries with the
//! same `proxy_value` that may see the same request in the same place:
//! the first swaps the token for its secret, and the second never finds it
//! (nothing says so; its secret is never used, and with `require` it
//! refuses the requests the first served). One `proxy_value` inside another
//! (`pk` in `pk9`): where the workload sends the longer token, the entry of
//! the shorter one can swap the part of it that matches, and the upstream
//! receives half a token and half a secret.
//!
//! Both are warnings (`validate`, start-up and reload show them), at the
//! later entry's `proxy_value` naming the earlier, and at the shorter one
//! naming the longer. Not errors: the spec allows them, and a config that
//! ran before an upgrade must not stop the proxy from starting (the
//! findings of [`super::lint`] are warnings for the same reason). Entries
//! whose scopes cannot meet (different hosts), or that scan places that
//! cannot meet (`match_headers: [X-A]` and `[X-B]`, no body), may share a
//! token: that is one placeholder for several services.
//!
//! The values are never repeated in the messages: the fields are named.

use std::collections::HashMap;

use aho_corasick::AhoCorasick;

use super::positions::{locate_all, Location};
use super::secrets::{ReplaceConfig, SecretMode};
use super::transforms::TransformConfig;
use super::values::HeaderMatcher;
use super::yaml::Node;
use super::{Config, Lint};
use crate::rules::Scope;

/// One replace entry's token, with its field path and scope.
struct Token<'c> {
    path: String,
    replace: &'c ReplaceConfig,
    rules: &'c Scope,
}

/// Every replace entry of every `secrets` transform, in the order they run.
fn tokens<'c>(cfg: &'c Config, root: &Node) -> Vec<Token<'c>> {
    let mut out = Vec::new();
    for (i, t) in cfg.transforms.iter().enumerate() {
        let TransformConfig::Secrets(s) = t else {
            continue;
        };
        for (j, e) in s.secrets.iter().enumerate() {
            let SecretMode::Replace(replace) = &e.mode else {
                continue;
            };
            let entry = format!("transforms[{i}].config.secrets[{j}]");
            // The legacy form writes the replace fields at the top of the entry.
            let block = root
                .get("transforms")
                .and_then(|ts| match &ts.kind {
                    super::yaml::Kind::Seq(items) => items.get(i),
                    _ => None,
                })
                .and_then(|t| t.get("config"))
                .and_then(|c| c.get("secrets"))
                .and_then(|ss| match &ss.kind {
                    super::yaml::Kind::Seq(items) => items.get(j),
                    _ => None,
                })
                .is_some_and(|e| e.get("replace").is_some());
            let path = if block {
                format!("{entry}.replace.proxy_value")
            } else {
                format!("{entry}.proxy_value")
            };
            out.push(Token {
                path,
                replace,
                rules: &e.rules,
            });
        }
    }
    out
}

/// Whether two entries may look at the same place of one request.
fn places_meet(a: &ReplaceConfig, b: &ReplaceConfig) -> bool {
    headers_meet(&a.match_headers, &b.match_headers)
        || (a.match_body && b.match_body)
        || (a.match_path && b.match_path)
        || (a.match_query && b.match_query)
}

/// Whether two `match_headers` lists may select one header (empty selects
/// every header; two regexes are taken to meet).
fn headers_meet(a: &[HeaderMatcher], b: &[HeaderMatcher]) -> bool {
    let selects = |ms: &[HeaderMatcher], name: &str| {
        let lower = name.to_ascii_lowercase();
        ms.iter().any(|m| m.matches(&lower))
    };
    let regex = |ms: &[HeaderMatcher]| ms.iter().any(|m| m.literal().is_none());
    a.is_empty()
        || b.is_empty()
        || a.iter()
            .filter_map(HeaderMatcher::literal)
            .any(|l| selects(b, l))
        || b.iter()
            .filter_map(HeaderMatcher::literal)
            .any(|l| selects(a, l))
        || (regex(a) && regex(b))
}

/// `transforms[0]...proxy_value (line 8)`: a field and its line, for a message.
fn named(path: &str, at: &Location) -> String {
    match at.line {
        Some(line) => format!("{path} (line {line})"),
        None => path.to_string(),
    }
}

/// The findings about tokens that meet (see the module doc), each placed at
/// its `proxy_value` in `root`, the document read from `file`. The tokens
/// are grouped by value and searched for one another with one automaton,
/// so a config of many entries costs their total length, not its square.
pub(super) fn check(cfg: &Config, root: &Node, file: &str) -> Vec<Lint> {
    let tokens = tokens(cfg, root);
    if tokens.len() < 2 {
        return Vec::new();
    }
    // The entries of each distinct value, in the order they run.
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (k, t) in tokens.iter().enumerate() {
        let value = t.replace.proxy_value.as_str();
        let g = *index.entry(value).or_insert_with(|| {
            groups.push((value, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(k);
    }
    let paths: Vec<String> = tokens.iter().map(|t| t.path.clone()).collect();
    let places = locate_all(file, root, &paths);
    let meet = |a: usize, b: usize| {
        let (a, b) = (&tokens[a], &tokens[b]);
        a.rules.may_overlap(b.rules) && places_meet(a.replace, b.replace)
    };
    let finding = |at: usize, message: String| Lint {
        location: places[at].clone(),
        path: tokens[at].path.clone(),
        message,
    };
    let mut out = Vec::new();
    for (_, entries) in &groups {
        for (n, &later) in entries.iter().enumerate() {
            let Some(&first) = entries[..n].iter().find(|&&e| meet(e, later)) else {
                continue;
            };
            out.push(finding(
                later,
                format!(
                    "the same proxy_value as {}, on requests both entries see: that entry \
                     swaps the token first, so this one never finds it (and with require \
                     refuses the request); give each secret its own proxy_value",
                    named(&tokens[first].path, &places[first])
                ),
            ));
        }
    }
    if groups.len() < 2 {
        return out;
    }
    let values: Vec<&str> = groups.iter().map(|(v, _)| *v).collect();
    // Empty values are refused when decoded; a build failure only skips these findings.
    let Ok(ac) = AhoCorasick::new(&values) else {
        return out;
    };
    for (long, (value, long_entries)) in groups.iter().enumerate() {
        let mut inside: Vec<usize> = ac
            .find_overlapping_iter(*value)
            .map(|m| m.pattern().as_usize())
            .filter(|&short| short != long)
            .collect();
        inside.sort_unstable();
        inside.dedup();
        for short in inside {
            let pair = groups[short]
                .1
                .iter()
                .find_map(|&s| long_entries.iter().find(|&&l| meet(s, l)).map(|&l| (s, l)));
            let Some((s, l)) = pair else {
                continue;
            };
            out.push(finding(
                s,
                format!(
                    "this proxy_value is part of {}, on requests both entries see: where the \
                     workload sends that longer token, this entry can swap the part of it \
                     that matches, and the upstream receives neither token nor secret; use \
                     proxy values that do not contain one another",
                    named(&tokens[l].path, &places[l])
                ),
            ));
        }
    }
    out
}
