//! Operational logs on stderr: one JSON object per line by default
//! (`log.format: json`), or tracing's text format for a terminal (`text`).
//!
//! A JSON line looks like
//! `{"time":"2026-01-02T03:04:05.678Z","level":"info","msg":"otel exporter enabled","endpoint":"https://collector:4318","protocol":"http/protobuf"}`:
//! `time` (RFC 3339 UTC, milliseconds), `level` (lowercase: `trace`, `debug`,
//! `info`, `warn`, `error`), `msg`, then the event's fields as top-level keys
//! with their natural JSON types, after the fields of any enclosing spans.
//!
//! Audit records share stderr and are told apart by their `action` key, so
//! no operational line has one: a field named `action` (or `time`, `level`,
//! `msg`) is written as `field.action`. In the proxy (`run`) each line is
//! queued on the stderr writer thread the audit records use
//! (`audit::stderr_writer`), so the two never interleave and logging never
//! waits on stderr itself; the short-lived commands write to stderr directly.

use std::fmt;
use std::sync::{Mutex, OnceLock};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::layer::{Layer, Layered, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Top-level keys of every JSON line, plus `action`, which marks audit
/// records; a field with one of these names gets [`CLASH_PREFIX`].
const RESERVED: [&str; 4] = ["time", "level", "msg", "action"];

/// Prefix for a field whose name is in [`RESERVED`].
const CLASH_PREFIX: &str = "field.";

/// Fields the `log` → `tracing` bridge adds for records from crates that use
/// `log`: metadata, not content (the text format drops them too).
const LOG_BRIDGE_FIELDS: [&str; 4] = ["log.target", "log.module_path", "log.file", "log.line"];

/// The format [`init`] installed, for the eBPF loader child to log alike.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// The variable whose `tracing` filter directive replaces `log.level`.
pub const FILTER_ENV: &str = "IRON_LOG_FILTER";

/// The installed filter, which a reload changes ([`set_level`]).
static LEVEL: OnceLock<LevelControl> = OnceLock::new();

/// The handle on the installed filter and what set it.
struct LevelControl {
    handle: FilterHandle,
    /// True when `IRON_LOG_FILTER` set the filter: `log.level` is ignored.
    from_env: bool,
    /// The `log.level` in force (when not `from_env`).
    level: Mutex<String>,
}

/// The reloadable filter layer, first on the registry.
type FilterLayer = reload::Layer<EnvFilter, Registry>;
/// Changes the filter of [`FilterLayer`].
type FilterHandle = reload::Handle<EnvFilter, Registry>;
/// The subscriber below the formatting layer.
type Filtered = Layered<FilterLayer, Registry>;

/// Installs the global subscriber: stderr at `level` for iron-proxy and
/// `warn` for everything else, unless `IRON_LOG_FILTER` holds a `tracing`
/// filter directive. Does nothing when a subscriber is already installed.
/// [`set_level`] changes the level later (a reload).
/// Lines go to stderr directly (short-lived commands); see [`init_queued`].
pub fn init(level: &str, format: LogFormat) {
    install(level, format, std::io::stderr);
}

/// [`init`] for the proxy itself: lines are queued on the stderr writer
/// thread shared with the audit records, so they never interleave with a
/// batch of records and a stuck stderr never holds a request's thread (see
/// `audit::writer`). Call `audit::stderr_writer().flush` before exiting.
pub fn init_queued(level: &str, format: LogFormat) {
    install(level, format, || Queued);
}

fn install<W>(level: &str, format: LogFormat, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (filter, from_env) = match EnvFilter::try_from_env(FILTER_ENV) {
        Ok(f) => (f, true),
        Err(_) => (level_filter(level), false),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (sub, handle) = subscriber(filter, format, ansi, writer);
    if sub.try_init().is_ok() {
        let _ = FORMAT.set(format);
        let _ = LEVEL.set(LevelControl {
            handle,
            from_env,
            level: Mutex::new(level.to_string()),
        });
    }
}

/// The filter `log.level` gives: `level` for iron-proxy, `warn` for the rest.
fn level_filter(level: &str) -> EnvFilter {
    EnvFilter::new(format!("iron_proxy={level},warn"))
}

/// What [`set_level`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LevelChange {
    /// The level was already in force.
    Unchanged,
    /// The filter now logs iron-proxy at `to` (it was `from`).
    Applied {
        /// The level before.
        from: String,
        /// The level now.
        to: String,
    },
    /// `IRON_LOG_FILTER` set the filter at startup and keeps deciding it;
    /// the level is not applied.
    EnvFilter,
    /// No subscriber of this module is installed (tests, or a subscriber
    /// installed elsewhere first).
    NotInstalled,
}

/// Switches the installed subscriber to `log.level` = `level` at once
/// (a reload), unless `IRON_LOG_FILTER` set the filter at startup: that
/// variable wins over the config, on reload as at startup. Audit records
/// are not operational lines and never pass this filter.
pub fn set_level(level: &str) -> LevelChange {
    let Some(control) = LEVEL.get() else {
        return LevelChange::NotInstalled;
    };
    if control.from_env {
        return LevelChange::EnvFilter;
    }
    let mut current = control.level.lock().unwrap_or_else(|p| p.into_inner());
    if *current == level {
        return LevelChange::Unchanged;
    }
    if let Err(e) = control.handle.reload(level_filter(level)) {
        // Only when the subscriber is gone (the process is exiting).
        tracing::warn!(error = %e, "could not change the log level");
        return LevelChange::NotInstalled;
    }
    let from = std::mem::replace(&mut *current, level.to_string());
    LevelChange::Applied {
        from,
        to: level.to_string(),
    }
}

/// A formatted event, queued as one line on the stderr writer thread.
struct Queued;

impl std::io::Write for Queued {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // tracing-subscriber writes each formatted event with one
        // `write_all`, so `buf` is one whole line.
        match crate::audit::stderr_writer() {
            Some(w) => {
                w.push(buf, crate::audit::LineKind::Log);
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The subscriber [`init`] installs, writing to `writer` (tests pass a buffer),
/// and the handle that changes its filter.
/// `ansi` colours the text format; JSON lines never carry escape codes.
fn subscriber<W>(
    filter: EnvFilter,
    format: LogFormat,
    ansi: bool,
    writer: W,
) -> (Box<dyn Subscriber + Send + Sync>, FilterHandle)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let (filter, handle) = reload::Layer::new(filter);
    // No "[tracing-subscriber] Unable to write" fallback: it is an
    // `eprint!`, which panics when stderr fails (a full disk), and that
    // panic killed whichever thread logged, the audit writer included.
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .log_internal_errors(false);
    let fmt: Box<dyn Layer<Filtered> + Send + Sync> = match format {
        LogFormat::Json => fmt.event_format(JsonLines).fmt_fields(JsonFields).boxed(),
        LogFormat::Text => fmt.with_ansi(ansi).with_target(false).boxed(),
    };
    (
        Box::new(tracing_subscriber::registry().with(filter).with(fmt)),
        handle,
    )
}

/// The format installed by [`init`] (`json` if none was).
pub fn current_format() -> LogFormat {
    FORMAT.get().copied().unwrap_or_default()
}

/// Formats each event as one JSON line (see the module docs).
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = JsonVisitor::default();
        // Span fields first (outermost span first), so the event's own
        // fields win a clash. They parse only when the spans were recorded
        // by [`JsonFields`], as `init` arranges.
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(formatted) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(m)) = serde_json::from_str(&formatted.fields) {
                    for (k, v) in m {
                        fields.insert(k, v);
                    }
                }
            }
        }
        event.record(&mut fields);
        let line = render(&now(), *event.metadata().level(), fields);
        writer.write_str(&line)
    }
}

/// Records span fields as a JSON object, so [`JsonLines`] can merge them
/// into each event's line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = JsonVisitor::default();
        fields.record(&mut v);
        writer.write_str(&Value::Object(v.into_map()).to_string())
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut v = JsonVisitor::default();
        if let Ok(Value::Object(m)) = serde_json::from_str(&current.fields) {
            for (k, val) in m {
                v.insert(k, val);
            }
        }
        fields.record(&mut v);
        current.fields = Value::Object(v.into_map()).to_string();
        Ok(())
    }
}

/// The JSON line for one event, with its trailing newline: `time`,
/// `level` and `msg` first, then the fields in the order recorded (written
/// by hand because `serde_json::Map` sorts its keys).
fn render(time: &str, level: Level, fields: JsonVisitor) -> String {
    let message = Value::from(fields.message.unwrap_or_default());
    let head = [
        ("time", Value::from(time)),
        ("level", Value::from(level_name(level))),
        ("msg", message),
    ];
    let mut line = Vec::with_capacity(128);
    line.push(b'{');
    let pairs = head
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .chain(fields.fields);
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            line.push(b',');
        }
        // Quotes, backslashes and control characters are escaped, and
        // U+2028 and U+2029 as in the audit records, so no key or value can
        // break the line. Writing a string-keyed value to a Vec cannot fail.
        let _ = crate::audit::write_json(&mut line, &k);
        line.push(b':');
        let _ = crate::audit::write_json(&mut line, &v);
    }
    line.extend_from_slice(b"}\n");
    // serde_json writes UTF-8 only; the lossy conversion never replaces anything.
    match String::from_utf8(line) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// One JSON line (with its newline) of the logger's shape, at `level`, with
/// `msg` and no fields: for a line written where no logger is installed yet
/// or any more (`console::fatal`: why the proxy does not start).
pub fn json_line(level: Level, msg: &str) -> String {
    let fields = JsonVisitor {
        message: Some(msg.to_string()),
        fields: Vec::new(),
    };
    render(&now(), level, fields)
}

/// `trace` stays `trace` (only `IRON_LOG_FILTER` enables it) rather than
/// being folded into `debug`, so a reader can tell the two apart.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// Now in UTC as `2026-01-02T03:04:05.678Z`.
fn now() -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(FORMAT)
        .unwrap_or_default()
}

/// Collects the message and the fields of an event or span, in order, each
/// key once (a later value replaces an earlier one in place).
#[derive(Debug, Default)]
struct JsonVisitor {
    message: Option<String>,
    fields: Vec<(String, Value)>,
}

impl JsonVisitor {
    fn insert(&mut self, key: String, value: Value) {
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
    }

    fn record(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if name == "message" {
            self.message = Some(match value {
                Value::String(s) => s,
                other => other.to_string(),
            });
        } else if RESERVED.contains(&name) {
            self.insert(format!("{CLASH_PREFIX}{name}"), value);
        } else if !LOG_BRIDGE_FIELDS.contains(&name) {
            self.insert(name.to_string(), value);
        }
    }

    /// The fields as an object (for spans, which have no message).
    fn into_map(self) -> Map<String, Value> {
        let mut m: Map<String, Value> = self.fields.into_iter().collect();
        if let Some(msg) = self.message {
            m.insert("message".into(), Value::from(msg));
        }
        m
    }
}

impl Visit for JsonVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities are not JSON numbers.
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::from(value.to_string()), Value::Number);
        self.record(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::from);
        self.record(field, v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::from(value.to_string()), Value::from);
        self.record(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, Value::from(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, Value::from(value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.record(field, Value::from(value.to_string()));
    }

    /// `%value` (its `Debug` is the `Display`), `?value` and the message
    /// (`format_args!`, whose `Debug` is the text).
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record(field, Value::from(format!("{value:?}")));
    }
}

#[cfg(test)]
mod tests;
