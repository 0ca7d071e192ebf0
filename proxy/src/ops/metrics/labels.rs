//! Label sets, and the fixed spellings of enum labels.

use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;

use crate::audit::{Action, Mode};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) action: &'static str,
    pub(super) mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DecisionLabels {
    pub(super) transform: String,
    pub(super) action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TransformLabel {
    pub(super) transform: String,
    /// `request` or `response`: the hook timed.
    pub(super) phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CodeLabel {
    /// The status class the client got: `1xx` to `5xx`.
    pub(super) code: &'static str,
}

/// The status classes of [`CodeLabel`], by the status's first digit less one.
pub(super) const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ListenerLabel {
    /// The listener a client connection came in on (`http`, `https`, `tunnel`, `transparent`).
    pub(super) listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SourceLabel {
    pub(super) source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabel {
    pub(super) version: &'static str,
}

pub(super) fn mode_label(m: Mode) -> &'static str {
    match m {
        Mode::Http => "http",
        Mode::Https => "https",
        Mode::Tunnel => "tunnel",
        Mode::Transparent => "transparent",
        Mode::SniOnly => "sni-only",
    }
}

pub(super) fn action_label(a: Action) -> &'static str {
    match a {
        Action::Allow => "allow",
        Action::Reject => "reject",
        Action::Error => "error",
    }
}

pub(super) fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}
