//! Findings about transforms that would act on the same part of a request,
//! where the first in config order wins (spec, Concepts: Transforms; and
//! Credential Proxying): a credential transform that sets a header or query
//! parameter an earlier one already set is skipped there, and a second
//! `header_allowlist` is skipped wherever an earlier one applied. The proxy
//! says so only in the skipped transform's trace (`already_set`,
//! `already_applied`); `validate` says so before any request is sent.

use super::Unplaced;
use crate::config::secrets::{InjectConfig, SecretMode};
use crate::config::transforms::TransformConfig;
use crate::config::Config;
use crate::rules::Scope;

/// A place in a request a credential transform sets.
#[derive(Clone, Copy)]
enum Slot<'t> {
    /// A header, named as written (compared without case).
    Header(&'t str),
    /// A query parameter (compared exactly).
    Query(&'t str),
}

impl Slot<'_> {
    fn same(self, other: Slot<'_>) -> bool {
        match (self, other) {
            (Slot::Header(a), Slot::Header(b)) => a.eq_ignore_ascii_case(b),
            (Slot::Query(a), Slot::Query(b)) => a == b,
            _ => false,
        }
    }

    fn describe(self) -> String {
        match self {
            Slot::Header(name) => format!("header {name}"),
            Slot::Query(name) => format!("query parameter {name}"),
        }
    }
}

/// What one part of a credential transform sets wherever its scope applies,
/// and so also checks before it sets anything.
struct Setter<'t> {
    /// The field path of the part: `transforms[2]`, or an entry of a list
    /// (`transforms[2].config.secrets[1]`).
    path: String,
    /// `transforms[2] (secrets)`, or `transforms[2] (secrets) entry 1`.
    label: String,
    /// Index of the transform.
    transform: usize,
    slots: Vec<Slot<'t>>,
    scope: &'t Scope,
}

/// The setters of transform `i`. A `secrets` replacement is left out: it
/// sets its header only when the workload sent the proxy token, so a later
/// injection of the same header is a fallback, not a conflict. Within one
/// `oauth_token` the first matching entry is the only one used, by design.
fn setters(i: usize, t: &TransformConfig) -> Vec<Setter<'_>> {
    let whole = |slots, scope| Setter {
        path: format!("transforms[{i}]"),
        label: format!("transforms[{i}] ({})", t.name()),
        transform: i,
        slots,
        scope,
    };
    let entry = |list: &str, e: usize, slot, scope| Setter {
        path: format!("transforms[{i}].config.{list}[{e}]"),
        label: format!("transforms[{i}] ({}) {list}[{e}]", t.name()),
        transform: i,
        slots: vec![slot],
        scope,
    };
    match t {
        TransformConfig::Secrets(s) => s
            .secrets
            .iter()
            .enumerate()
            .filter_map(|(e, s)| match &s.mode {
                SecretMode::Inject(InjectConfig::Header { name, .. }) => {
                    Some(entry("secrets", e, Slot::Header(name), &s.rules))
                }
                SecretMode::Inject(InjectConfig::QueryParam { name }) => {
                    Some(entry("secrets", e, Slot::Query(name), &s.rules))
                }
                SecretMode::Replace(_) => None,
            })
            .collect(),
        TransformConfig::OauthToken(o) => o
            .tokens
            .iter()
            .enumerate()
            .map(|(e, tok)| entry("tokens", e, Slot::Header(&tok.header), &tok.rules))
            .collect(),
        TransformConfig::GcpAuth(g) => vec![whole(vec![Slot::Header("Authorization")], &g.rules)],
        TransformConfig::AwsAuth(a) => vec![whole(vec![Slot::Header("Authorization")], &a.rules)],
        TransformConfig::HmacSign(h) => vec![whole(
            h.headers.iter().map(|w| Slot::Header(&w.name)).collect(),
            &h.rules,
        )],
        _ => Vec::new(),
    }
}

/// Each credential transform (or entry) that sets something an earlier one
/// sets on hosts both apply to: there it is skipped.
pub(super) fn credentials(cfg: &Config) -> Vec<Unplaced> {
    let all: Vec<Setter<'_>> = cfg
        .transforms
        .iter()
        .enumerate()
        .flat_map(|(i, t)| setters(i, t))
        .collect();
    let mut out = Vec::new();
    for (j, later) in all.iter().enumerate() {
        let mut taken: Vec<(Slot<'_>, Vec<&str>)> = Vec::new();
        for earlier in &all[..j] {
            // Entries of one oauth_token: the first that applies is used.
            if earlier.transform == later.transform
                && matches!(
                    cfg.transforms[later.transform],
                    TransformConfig::OauthToken(_)
                )
            {
                continue;
            }
            if !earlier.scope.may_overlap(later.scope) {
                continue;
            }
            for &slot in &later.slots {
                if !earlier.slots.iter().any(|s| s.same(slot)) {
                    continue;
                }
                match taken.iter_mut().find(|(s, _)| s.same(slot)) {
                    Some((_, by)) => by.push(&earlier.label),
                    None => taken.push((slot, vec![&earlier.label])),
                }
            }
        }
        if taken.is_empty() {
            continue;
        }
        let list: Vec<String> = taken
            .iter()
            .map(|(slot, by)| format!("{} (set by {})", slot.describe(), by.join(", ")))
            .collect();
        out.push(Unplaced {
            path: later.path.clone(),
            message: format!(
                "on hosts both apply to, an earlier credential transform already sets {}, and \
                 the first in config order wins: there this one is skipped (its trace says \
                 already_set); give them rules that do not meet, or remove one",
                list.join(", ")
            ),
        });
    }
    out
}

/// Each `header_allowlist` after another whose rules meet its own: where
/// both apply, only the first filters headers.
pub(super) fn header_allowlists(cfg: &Config) -> Vec<Unplaced> {
    let lists: Vec<(usize, &Scope)> = cfg
        .transforms
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t {
            TransformConfig::HeaderAllowlist(h) => Some((i, &h.rules)),
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (n, &(j, scope)) in lists.iter().enumerate() {
        let earlier: Vec<String> = lists[..n]
            .iter()
            .filter(|(_, s)| s.may_overlap(scope))
            .map(|(k, _)| format!("transforms[{k}]"))
            .collect();
        let (lists_at, apply) = match earlier.len() {
            0 => continue,
            1 => ("the header_allowlist at", "applies"),
            _ => ("the header_allowlists at", "apply"),
        };
        out.push(Unplaced {
            path: format!("transforms[{j}]"),
            message: format!(
                "{lists_at} {} {apply} to hosts this one applies to, and the first in config \
                 order wins: there this one is skipped (its trace says already_applied) and \
                 only the first one's headers are kept; merge the header lists, or give them \
                 rules that do not meet",
                earlier.join(", ")
            ),
        });
    }
    out
}
