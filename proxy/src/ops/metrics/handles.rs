//! Metric handles per transform name, resolved once: the pipeline records a
//! duration and a decision for every transform of every request, and looking
//! the label sets up each time (a bounded-label check, two `String`s and two
//! hashed family lookups per call) showed up in the request path's profile.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use prometheus_client::metrics::counter::Counter;

use super::{SharedHistogram, MAX_LABEL_VALUES};

/// The decisions a transform reports, in the order of [`TransformHandles::decisions`].
const ACTIONS: [&str; 4] = ["continue", "reject", "stub", "error"];

/// One transform's metrics.
pub(super) struct TransformHandles {
    /// Its label value (bounded: `other` past the cap).
    pub(super) label: String,
    /// `transform_duration_seconds` for it: its request hook, its response hook.
    pub(super) duration: [SharedHistogram; 2],
    /// `transform_decisions` per action, created on first use so that a
    /// decision never taken is not exported.
    decisions: [OnceLock<Counter>; 4],
}

impl TransformHandles {
    pub(super) fn new(label: String, duration: [SharedHistogram; 2]) -> Self {
        TransformHandles {
            label,
            duration,
            decisions: Default::default(),
        }
    }

    /// The counter for `action`, made by `make` the first time; `None` for an
    /// action outside [`ACTIONS`].
    pub(super) fn decision(
        &self,
        action: &'static str,
        make: impl FnOnce() -> Counter,
    ) -> Option<&Counter> {
        let i = ACTIONS.iter().position(|a| *a == action)?;
        Some(self.decisions[i].get_or_init(make))
    }
}

/// Handles by transform name. Names come from config, so there are few; past
/// twice the label cap nothing more is cached (the labels are `other` anyway).
#[derive(Default)]
pub(super) struct HandleCache {
    by_name: RwLock<HashMap<String, Arc<TransformHandles>>>,
}

impl HandleCache {
    /// The handles for `name`, made by `make` on first use.
    pub(super) fn get(
        &self,
        name: &str,
        make: impl FnOnce() -> TransformHandles,
    ) -> Arc<TransformHandles> {
        if let Some(h) = self
            .by_name
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return h.clone();
        }
        let made = Arc::new(make());
        let mut map = self.by_name.write().unwrap_or_else(|p| p.into_inner());
        if map.len() < 2 * MAX_LABEL_VALUES {
            map.entry(name.to_string()).or_insert_with(|| made.clone());
        }
        made
    }
}
