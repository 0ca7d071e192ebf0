//! The lists and maps of an audit record that the workload sizes: how many
//! entries each keeps, and how many bytes they share.
//!
//! The strings are cut to [`super::MAX_FIELD_BYTES`], but a list's length
//! was free: `header_allowlist`'s `stripped_headers` names every header a
//! client sent that is not allowed (up to the head's 512 fields), an MCP
//! `tools/list` answer's `tools_removed` every tool the policy hid, and the
//! `mcp` section's 64 messages each carry a method, an id and a tool name of
//! up to 4 KiB. So one request could write megabytes on one line. Two
//! bounds, the ones logging pipelines apply (OpenTelemetry's attribute
//! count limit, a line size):
//!
//! - every array and map keeps its first [`MAX_ENTRIES`] entries (maps in
//!   key order);
//! - the record as written, `body_capture` aside (the operator sizes it),
//!   is at most [`MAX_RECORD_BYTES`]: the lists and maps are cut further,
//!   in record order, keeping the entries that fit whole (the one that
//!   straddles the bound is itself cut the same way, if it is a list or a
//!   map; a map keeps its plain entries first, then its lists and maps).
//!
//! Each list or map cut is named, by its path in the record, with the
//! number of entries it had, in the record's `truncated_entries`. A
//! transform that cuts a list itself says so with a sibling `<name>_omitted`
//! count (the `mcp` section keeps 64 messages and counts the rest in
//! `messages_omitted`): that list is named too, with its whole count.

use std::io::Write;

use serde_json::{Map, Value};

/// Entries kept per array or map. OpenTelemetry's default attribute count
/// limit is 128; 64 is what the `mcp` section already keeps of its
/// messages, far above what an ordinary record holds (a few swapped
/// secrets, the dozen headers a client may have stripped).
pub const MAX_ENTRIES: usize = 64;

/// The bytes of an audit line, at most, `body_capture` aside: 48 KiB,
/// journald's default `LineMax` (a longer line is split there), and well
/// under the 256 KiB per entry of Loki, Cloud Logging and CloudWatch Logs.
/// An ordinary record is under 2 KiB. Only the lists and maps are cut to
/// fit: a record whose plain fields alone are longer (each at most 4 KiB,
/// more once JSON-escaped) is written with its lists and maps emptied.
pub const MAX_RECORD_BYTES: usize = 48 << 10;

/// The key of the map of cut lists and maps.
pub const TRUNCATED_ENTRIES: &str = "truncated_entries";

/// Paths listed in [`TRUNCATED_ENTRIES`], at most (the first in record
/// order); each cut to [`MAX_PATH_BYTES`].
const MAX_PATHS: usize = 16;
const MAX_PATH_BYTES: usize = 128;

/// Room kept in [`MAX_RECORD_BYTES`] for the `truncated` and
/// [`TRUNCATED_ENTRIES`] fields themselves (16 paths of 128 bytes, their
/// counts, a few field names).
pub(super) const RESERVED_BYTES: usize = 3 << 10;

const OMITTED: &str = "_omitted";

/// One step of a path in the record: a top-level field (its rank in the
/// record's order, its name), a list index, a map key. Paths compare in
/// record order (a map's keys are in their sorted order, as written).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Seg {
    /// A top-level field.
    Field(usize, String),
    /// An entry of a list.
    Index(usize),
    /// An entry of a map.
    Key(String),
}

/// Where a list or map is in the record.
pub(super) type Path = Vec<Seg>;

/// The lists and maps cut, by path, with their original entry counts.
#[derive(Debug, Default)]
pub(super) struct Cuts(Vec<(Path, usize)>);

impl Cuts {
    /// Notes that the list or map at `path` had `original` entries. A path
    /// noted already keeps its first count (the original one).
    fn note(&mut self, path: &Path, original: usize) {
        if !self.0.iter().any(|(p, _)| p == path) {
            self.0.push((path.clone(), original));
        }
    }

    /// Forgets the cuts inside the entries of `path` that `gone` says were
    /// removed whole.
    fn forget(&mut self, path: &Path, gone: impl Fn(&Seg) -> bool) {
        self.0.retain(|(p, _)| {
            !(p.len() > path.len() && p.starts_with(path) && gone(&p[path.len()]))
        });
    }

    /// Whether nothing was cut.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The [`TRUNCATED_ENTRIES`] value: the first [`MAX_PATHS`] cuts in
    /// record order, each path written `field[1].key`.
    pub(super) fn into_value(mut self) -> Value {
        self.0.sort();
        let entries = self.0.iter().take(MAX_PATHS).map(|(path, n)| {
            let mut text = String::new();
            for seg in path {
                match seg {
                    Seg::Field(_, name) => text.push_str(name),
                    Seg::Index(i) => text.push_str(&format!("[{i}]")),
                    Seg::Key(k) => {
                        text.push('.');
                        text.push_str(k);
                    }
                }
            }
            super::cut_to(&mut text, MAX_PATH_BYTES);
            (text, Value::from(*n))
        });
        Value::Object(entries.collect())
    }
}

/// True when some array or map in `v` (itself included) is over
/// [`MAX_ENTRIES`], or carries an `<name>_omitted` count.
pub(super) fn over(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.len() > MAX_ENTRIES || a.iter().any(over),
        Value::Object(m) => {
            m.len() > MAX_ENTRIES || omitted_counts(m).next().is_some() || m.values().any(over)
        }
        _ => false,
    }
}

/// True when the map `m` (a trace's annotations) is over, as [`over`] says.
pub(super) fn map_over(m: &Map<String, Value>) -> bool {
    m.len() > MAX_ENTRIES || omitted_counts(m).next().is_some() || m.values().any(over)
}

/// The `<name>_omitted` counts of `m` whose `<name>` is an array: (name, count).
fn omitted_counts(m: &Map<String, Value>) -> impl Iterator<Item = (&str, usize)> {
    m.iter().filter_map(|(k, v)| {
        let name = k.strip_suffix(OMITTED)?;
        let n = usize::try_from(v.as_u64()?).ok()?;
        m.get(name)?.as_array()?;
        Some((name, n))
    })
}

/// Keeps the first [`MAX_ENTRIES`] of every array and map in `v` (at
/// `path`), noting each cut in `cuts`; `omitted` is the count a transform
/// gave for entries it left out of `v` itself. True when anything was cut
/// or counted.
pub(super) fn cap(v: &mut Value, path: &mut Path, omitted: usize, cuts: &mut Cuts) -> bool {
    match v {
        Value::Array(a) => {
            let original = a.len().saturating_add(omitted);
            a.truncate(MAX_ENTRIES);
            let mut cut = original > a.len();
            if cut {
                cuts.note(path, original);
            }
            for (i, e) in a.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                cut |= cap(e, path, 0, cuts);
                path.pop();
            }
            cut
        }
        Value::Object(m) => cap_map(m, path, cuts),
        _ => false,
    }
}

/// [`cap`] for a map.
pub(super) fn cap_map(m: &mut Map<String, Value>, path: &mut Path, cuts: &mut Cuts) -> bool {
    let original = m.len();
    let mut cut = false;
    if original > MAX_ENTRIES {
        let extra: Vec<String> = m.keys().skip(MAX_ENTRIES).cloned().collect();
        for k in extra {
            m.remove(&k);
        }
        cuts.note(path, original);
        cut = true;
    }
    let omitted: Vec<(String, usize)> =
        omitted_counts(m).map(|(k, n)| (k.to_string(), n)).collect();
    for (k, v) in m.iter_mut() {
        let n = omitted
            .iter()
            .find(|(name, _)| name == k)
            .map_or(0, |(_, n)| *n);
        path.push(Seg::Key(k.clone()));
        cut |= cap(v, path, n, cuts);
        path.pop();
    }
    cut
}

/// Cuts the list or map `v` (at `path`) so that its entries take at most
/// `room` bytes more than its empty form (`[]`, `{}`), keeping the first
/// ones whole; `room` is left with what they did not take. True when
/// anything was cut.
pub(super) fn fit(v: &mut Value, path: &mut Path, room: &mut usize, cuts: &mut Cuts) -> bool {
    match v {
        Value::Array(a) => {
            let n = a.len();
            let mut kept = n;
            let mut cut = false;
            for (i, e) in a.iter_mut().enumerate() {
                let sep = usize::from(i > 0);
                let cost = json_len(e) + sep;
                if cost <= *room {
                    *room -= cost;
                    continue;
                }
                kept = i;
                if let Some(empty) = empty_len(e).filter(|l| l + sep <= *room) {
                    *room -= empty + sep;
                    path.push(Seg::Index(i));
                    cut |= fit(e, path, room, cuts);
                    path.pop();
                    kept = i + 1;
                }
                break;
            }
            if kept < n {
                a.truncate(kept);
                cuts.forget(path, |s| matches!(s, Seg::Index(i) if *i >= kept));
                cuts.note(path, n);
                cut = true;
            }
            cut
        }
        Value::Object(m) => fit_map(m, path, room, cuts),
        _ => false,
    }
}

/// [`fit`] for a map: its plain entries first (a list cut inside must not
/// cost the map its `server` name), each kept if it fits; then its lists
/// and maps in key order, each kept whole if it fits, else cut to fit (and
/// dropped only when not even its empty form fits).
fn fit_map(m: &mut Map<String, Value>, path: &mut Path, room: &mut usize, cuts: &mut Cuts) -> bool {
    let n = m.len();
    // `"key":value` and a comma (one more than the map needs: a byte spare).
    let head = |k: &String| json_len(k) + 2;
    let mut keep: Vec<String> = Vec::with_capacity(n);
    for (k, v) in m.iter().filter(|(_, v)| empty_len(v).is_none()) {
        let cost = head(k) + json_len(v);
        if cost <= *room {
            *room -= cost;
            keep.push(k.clone());
        }
    }
    let mut cut = false;
    for (k, v) in m.iter_mut().filter(|(_, v)| empty_len(v).is_some()) {
        let cost = head(k) + json_len(v);
        if cost <= *room {
            *room -= cost;
            keep.push(k.clone());
            continue;
        }
        if let Some(empty) = empty_len(v).filter(|l| head(k) + l <= *room) {
            *room -= head(k) + empty;
            path.push(Seg::Key(k.clone()));
            cut |= fit(v, path, room, cuts);
            path.pop();
            keep.push(k.clone());
        }
    }
    if keep.len() < n {
        m.retain(|k, _| keep.contains(k));
        cuts.forget(path, |s| matches!(s, Seg::Key(k) if !keep.contains(k)));
        cuts.note(path, n);
        cut = true;
    }
    cut
}

/// The serialized length of an empty `v` when it is a list or a map.
pub(super) fn empty_len(v: &Value) -> Option<usize> {
    matches!(v, Value::Array(_) | Value::Object(_)).then_some(2)
}

/// The length of `v` as the audit line's writer writes it (serde_json,
/// with U+2028 and U+2029 escaped), counted without building it.
pub(super) fn json_len(v: &impl serde::Serialize) -> usize {
    let mut counter = Counter(0);
    // Writing to the counter cannot fail, nor can serializing a `Value`
    // or an `AuditRecord` (string keys only).
    let _ = v.serialize(&mut serde_json::Serializer::with_formatter(
        &mut counter,
        super::super::json::LineSafe,
    ));
    counter.0
}

struct Counter(usize);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
