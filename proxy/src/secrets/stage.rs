//! A config build's effects on the secret sources, held until the build is
//! in force.
//!
//! A reload builds its whole policy before it knows whether it will apply
//! it: a listener address that is taken, or a kernel deny list that cannot
//! be written, refuses it afterwards. What building asks of the sources
//! (the first fetch of a source it adds, the `ttl` of one it keeps) is
//! therefore only written down here, and done by [`Staged::commit`] once the
//! policy is swapped in. A build dropped before that contacted no backend
//! and retuned no cache: the caches it made go with it, and those it shares
//! with the config in force run on as that config asks.
//!
//! The commit also re-reads every source the new config keeps that has a
//! value, in the background: a reload is how an operator says "read the
//! config (and what it names) again", and a `ttl: 0` source would otherwise
//! keep its startup value until a restart. The old value serves until the
//! new one arrives, and stays if the re-read fails ([`Cached::reread`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Cached, Sources};

/// The sources one build names, by cache key, with the `ttl` it asks for.
#[derive(Default)]
pub(super) struct Stage {
    named: Mutex<HashMap<String, (Arc<Cached>, Duration)>>,
}

impl Stage {
    /// Notes that the build names `cached` with `ttl`; a source named twice
    /// keeps the shorter non-zero `ttl`.
    pub(super) fn name(&self, cached: &Arc<Cached>, ttl: Duration) {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        named
            .entry(cached.key().to_string())
            .and_modify(|(_, t)| *t = super::cache::shortest_refresh(*t, ttl))
            .or_insert_with(|| (cached.clone(), ttl));
    }
}

/// A build in progress ([`Sources::stage`]). Dropping it uncommitted
/// undoes nothing because nothing was done.
pub struct Staged {
    sources: Sources,
}

/// What [`Staged::commit`] started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Sources the config in force already had a value for, re-read now.
    pub reread: usize,
    /// Sources without a value, fetched now (prefetching on).
    pub fetched: usize,
}

impl Staged {
    pub(super) fn new(sources: Sources) -> Self {
        Staged { sources }
    }

    /// The registry to build the policy with: it shares caches and
    /// [`Sources::keep`] states with the process-long one, and notes what
    /// the build asks of them.
    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    /// The build is in force: applies its `ttl`s, fetches its new sources
    /// (with prefetching on) and re-reads those that have a value, all in
    /// the background. Needs a Tokio runtime for the fetches (without one,
    /// only the `ttl`s change).
    pub fn commit(self) -> Committed {
        let Some(stage) = &self.sources.stage else {
            return Committed::default();
        };
        let named = std::mem::take(&mut *stage.named.lock().unwrap_or_else(|p| p.into_inner()));
        let build = self.sources.take_build();
        let mut done = Committed::default();
        for (cached, ttl) in named.into_values() {
            cached.set_ttl(ttl, build);
            if cached.reread() {
                done.reread += 1;
            } else if self.sources.prefetches() {
                cached.prefetch();
                done.fetched += 1;
            }
        }
        done
    }
}
