//! The audit log: exactly one JSON record per request (or per tunnelled
//! connection), written when the exchange ends, errors included. Records go to
//! their own sink (stderr by default), apart from operational logs.
//!
//! The field layout is flat, as in the product docs; `docs/audit-log.md`
//! documents every field. [`AuditRecord`]'s `Serialize` derive defines the
//! JSON; `json` writes the same bytes faster.

mod bound;
mod json;
pub mod stderr_check;
mod timestamp;
mod writer;

pub use bound::{MAX_ENTRIES, MAX_FIELD_BYTES, MAX_RECORD_BYTES, TRUNCATED, TRUNCATED_ENTRIES};
pub(crate) use json::write_value as write_json;
pub use timestamp::now as now_rfc3339;
pub use writer::{stderr as stderr_writer, Kind as LineKind, LineWriter, STALL};

use std::cell::RefCell;
use std::io::Write;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

/// How the request reached the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// `proxy.http_listen`, plain HTTP.
    Http,
    /// `proxy.https_listen`, TLS terminated (MITM).
    Https,
    /// Inside a CONNECT or SOCKS5 tunnel, or an absolute-form request on the tunnel port.
    Tunnel,
    /// Redirected by eBPF or nftables to the transparent listener.
    Transparent,
    /// TLS passed through untouched (tls.mode sni-only).
    SniOnly,
}

/// The outcome recorded in `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Forwarded upstream (also for warn-mode violations).
    Allow,
    /// Refused by policy or by request hygiene.
    Reject,
    /// The proxy or the upstream failed.
    Error,
}

/// One transform's part in a request, as in `request_transforms[]`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TransformTrace {
    /// The transform's name (`allowlist`, `secrets`, or a judge's instance name).
    pub name: String,
    /// `continue`, `reject` or `stub`.
    pub action: &'static str,
    /// Free-form annotations the transform added; omitted when empty.
    #[serde(skip_serializing_if = "Map::is_empty")]
    pub annotations: Map<String, Value>,
}

/// Which process opened the connection (from eBPF interception).
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
pub struct ClientProcess {
    /// Process id (thread group id) of the connecting process.
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its command name (`comm`, at most 15 bytes).
    pub comm: String,
    /// The cgroup v2 path of the process, relative to the cgroup mount.
    pub cgroup: String,
}

/// The tunnel a request travelled through, if any.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TunnelInfo {
    /// `connect` or `socks5`.
    pub kind: &'static str,
    /// The target the client asked the tunnel for (`host:port`).
    pub target: String,
}

/// One audit record. Built up during the request and emitted once by [`AuditSink::emit`].
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// RFC 3339 time the request started.
    pub time: String,
    /// `INFO`, `WARN` for blocked requests, `ERROR` for errors.
    pub level: &'static str,
    /// Unique id of this request.
    pub request_id: String,
    /// Client address as seen by the proxy.
    pub remote_addr: String,
    /// How the request arrived.
    pub mode: Mode,
    /// Host the client asked for, without port.
    pub host: String,
    /// HTTP method; empty for connection-level records.
    pub method: String,
    /// Request path (no query); empty for connection-level records.
    pub path: String,
    /// TLS server name the client sent, when TLS was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// Outcome.
    pub action: Action,
    /// HTTP status returned to the client (0 when the connection closed without a response).
    pub status_code: u16,
    /// Wall time from request start to the end of the exchange.
    pub duration_ms: u64,
    /// The same in microseconds, for the duration histogram (whose first
    /// bucket is 1 ms); not in the record.
    #[serde(skip)]
    pub duration_us: u64,
    /// Request-phase trace, in pipeline order.
    pub request_transforms: Vec<TransformTrace>,
    /// Response-phase trace, in pipeline order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_transforms: Vec<TransformTrace>,
    /// The transform that rejected the request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_by: Option<String>,
    /// Machine-readable reason for rejects and errors (`deny_cidr`, `upstream_timeout`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail for errors; never contains secrets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The process that made the request (transparent interception only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientProcess>,
    /// The original destination of an intercepted connection (`ip:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_dst: Option<String>,
    /// The tunnel the request came through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelInfo>,
    /// Bytes from client to upstream, for connection-level records (tunnels, WebSockets, passthrough).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
    /// Bytes from upstream to client, for connection-level records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_received: Option<u64>,
    /// Extra top-level fields added by transforms (for example `body_capture`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// Fields known only when the exchange ends; [`AuditRecord::settle_late`]
    /// moves them into `extra` just before the record is written.
    #[serde(skip)]
    pub late: Vec<LateField>,
}

/// An audit field computed when the record is written (say, what a filter
/// saw in a streamed response body): a top-level field, or an annotation of
/// one transform's trace entry.
#[derive(Clone)]
pub struct LateField {
    place: LatePlace,
    value: LateValue,
}

/// What computes a [`LateField`]'s value (`None`: leave the field out).
pub type LateValue = Arc<dyn Fn() -> Option<Value> + Send + Sync>;

/// Where a [`LateField`] goes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LatePlace {
    /// A top-level field of this name.
    Top(String),
    /// An annotation of the trace entry of the transform that added it,
    /// whose index the pipeline fills in when it records the entry.
    ThisTransform(&'static str),
    /// An annotation of entry `index` of the request or response trace.
    Trace {
        response: bool,
        index: usize,
        key: &'static str,
    },
}

impl LateField {
    /// A top-level field `key`.
    pub fn top(key: impl Into<String>, value: LateValue) -> Self {
        LateField {
            place: LatePlace::Top(key.into()),
            value,
        }
    }

    /// An annotation `key` of the trace entry of the transform running now;
    /// the pipeline ([`LateField::place_in_trace`]) says which entry that is.
    pub fn annotation(key: &'static str, value: LateValue) -> Self {
        LateField {
            place: LatePlace::ThisTransform(key),
            value,
        }
    }

    /// The field's name when it is a top-level one, and its value as it
    /// stands now.
    pub fn current(&self) -> (Option<&str>, Option<Value>) {
        let key = match &self.place {
            LatePlace::Top(k) => Some(k.as_str()),
            _ => None,
        };
        (key, (self.value)())
    }

    /// Whether this is an annotation still waiting for its trace entry.
    pub fn awaits_trace(&self) -> bool {
        matches!(self.place, LatePlace::ThisTransform(_))
    }

    /// Puts an annotation of the transform running now in entry `index` of
    /// the request or response trace.
    pub fn place_in_trace(&mut self, response: bool, index: usize) {
        if let LatePlace::ThisTransform(key) = self.place {
            self.place = LatePlace::Trace {
                response,
                index,
                key,
            };
        }
    }
}

impl std::fmt::Debug for LateField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LateField")
    }
}

impl AuditRecord {
    /// A new record for a request that starts now.
    pub fn new(mode: Mode, remote_addr: String) -> Self {
        AuditRecord {
            time: timestamp::now(),
            level: "INFO",
            request_id: request_id(),
            remote_addr,
            mode,
            host: String::new(),
            method: String::new(),
            path: String::new(),
            sni: None,
            action: Action::Allow,
            status_code: 0,
            duration_ms: 0,
            duration_us: 0,
            request_transforms: Vec::new(),
            response_transforms: Vec::new(),
            rejected_by: None,
            reason: None,
            error: None,
            client: None,
            original_dst: None,
            tunnel: None,
            bytes_sent: None,
            bytes_received: None,
            extra: Map::new(),
            late: Vec::new(),
        }
    }

    /// Computes the late fields into `extra` and the trace entries.
    pub fn settle_late(&mut self) {
        for f in std::mem::take(&mut self.late) {
            let Some(v) = (f.value)() else { continue };
            match f.place {
                LatePlace::Top(k) => {
                    self.extra.insert(k, v);
                }
                LatePlace::Trace {
                    response,
                    index,
                    key,
                } => {
                    let trace = if response {
                        &mut self.response_transforms
                    } else {
                        &mut self.request_transforms
                    };
                    if let Some(t) = trace.get_mut(index) {
                        t.annotations.insert(key.to_string(), v);
                    }
                }
                // Never placed: its transform left no trace entry.
                LatePlace::ThisTransform(_) => {}
            }
        }
    }

    /// Marks the record as rejected by `by` for `reason` (level WARN).
    pub fn reject(&mut self, by: Option<&str>, reason: &str, status: u16) {
        self.action = Action::Reject;
        self.level = "WARN";
        self.rejected_by = by.map(str::to_string);
        self.reason = Some(reason.to_string());
        self.status_code = status;
    }

    /// Marks the record as an error (level ERROR).
    pub fn fail(&mut self, reason: &str, detail: String, status: u16) {
        self.action = Action::Error;
        self.level = "ERROR";
        self.reason = Some(reason.to_string());
        self.error = Some(detail);
        self.status_code = status;
    }
}

/// A fresh v7 UUID, hyphenated (encoded directly, without the formatter).
fn request_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7()
        .hyphenated()
        .encode_lower(&mut buf)
        .to_string()
}

/// Something that receives finished records besides the JSON sink (OTLP export, metrics).
pub trait AuditObserver: Send + Sync {
    /// Called once per record, after it is final.
    fn observe(&self, record: &AuditRecord);
}

/// Where audit records go: JSON lines to a writer, plus observers. The lines
/// are written by a dedicated thread in batches ([`writer`]); [`AuditSink::flush`]
/// waits until everything emitted so far is out.
#[derive(Clone)]
pub struct AuditSink {
    out: Out,
    observers: Arc<arc_swap::ArcSwap<Vec<Arc<dyn AuditObserver>>>>,
    /// Counts records the writer dropped (`iron_proxy_audit_dropped_records_total`).
    dropped: Arc<std::sync::OnceLock<prometheus_client::metrics::counter::Counter>>,
    /// Set when shutdown gives up waiting: exchanges cut from then on are
    /// recorded as `shutdown`, not as the client's doing.
    abandoning: Arc<std::sync::atomic::AtomicBool>,
}

/// The writer behind a sink: the process's stderr writer, or one of its own.
#[derive(Clone)]
enum Out {
    Shared(&'static writer::LineWriter),
    Own(Arc<writer::LineWriter>),
}

impl std::ops::Deref for Out {
    type Target = writer::LineWriter;
    fn deref(&self) -> &writer::LineWriter {
        match self {
            Out::Shared(w) => w,
            Out::Own(w) => w,
        }
    }
}

impl AuditSink {
    /// Records to stderr, through the writer thread the operational logs
    /// share ([`stderr_writer`]), so the two never interleave.
    pub fn stderr() -> std::io::Result<Self> {
        match writer::stderr() {
            Some(w) => Ok(Self::with_out(Out::Shared(w))),
            None => Self::to_writer(Box::new(std::io::stderr())),
        }
    }

    /// Records to any writer (tests, files). Fails only when the writer
    /// thread cannot be started.
    pub fn to_writer(w: Box<dyn Write + Send>) -> std::io::Result<Self> {
        Ok(Self::with_out(Out::Own(Arc::new(
            writer::LineWriter::spawn(w)?,
        ))))
    }

    fn with_out(out: Out) -> Self {
        AuditSink {
            out,
            observers: Arc::new(arc_swap::ArcSwap::from_pointee(Vec::new())),
            dropped: Arc::new(std::sync::OnceLock::new()),
            abandoning: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Shutdown's grace period is over: the exchanges still in flight are
    /// about to be cut by the proxy.
    pub fn abandon_in_flight(&self) {
        self.abandoning
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// True once [`AuditSink::abandon_in_flight`] was called.
    pub fn is_abandoning(&self) -> bool {
        self.abandoning.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// What reads how many writes to this sink's output failed since start
    /// (each kept and tried again; see `writer`), for the
    /// `iron_proxy_audit_write_errors_total` metric. It holds the output
    /// alone, not the sink and its observers.
    pub fn write_errors(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let out = self.out.clone();
        move || out.write_errors()
    }

    /// Counts the records the writer drops (a stuck output, see [`writer`])
    /// in `counter` from now on.
    pub fn count_drops_in(&self, counter: prometheus_client::metrics::counter::Counter) {
        let _ = self.dropped.set(counter);
    }

    /// Waits until every record emitted so far is written and flushed, for
    /// at most `timeout`. False when the output did not take them in time.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        self.out.flush(timeout)
    }

    /// Adds an observer that sees every later record.
    pub fn add_observer(&self, o: Arc<dyn AuditObserver>) {
        self.observers.rcu(|cur| {
            let mut v = Vec::clone(cur);
            v.push(o.clone());
            v
        });
    }

    /// Writes the record as one JSON line. Called exactly once per request.
    /// Strings the workload chose are cut to [`MAX_FIELD_BYTES`] first, for
    /// the line and the observers alike ([`bound`]).
    pub fn emit(&self, record: &AuditRecord) {
        let cut;
        let record = if bound::over(record) {
            cut = bound::bounded(record);
            &cut
        } else {
            record
        };
        for o in self.observers.load().iter() {
            o.observe(record);
        }
        thread_local! {
            // Reused per worker thread: serializing allocates nothing once warm.
            static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
        }
        LINE.with_borrow_mut(|line| {
            line.clear();
            if let Err(e) = json::write_record(line, record) {
                tracing::error!(error = %e, "audit record did not serialize");
                return;
            }
            line.push(b'\n');
            if !self.out.push(line, writer::Kind::Audit) {
                if let Some(c) = self.dropped.get() {
                    c.inc();
                }
            }
            if line.capacity() > 256 << 10 {
                // One huge record (a body capture) should not pin its buffer forever.
                *line = Vec::new();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("test lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn record_is_flat_json_line() {
        let buf = Buf::default();
        let sink = AuditSink::to_writer(Box::new(buf.clone())).expect("sink");
        let mut r = AuditRecord::new(Mode::Http, "127.0.0.1:5000".into());
        r.host = "example.com".into();
        r.method = "GET".into();
        r.path = "/".into();
        r.request_transforms.push(TransformTrace {
            name: "allowlist".into(),
            action: "reject",
            annotations: Map::new(),
        });
        r.reject(Some("allowlist"), "not_allowlisted", 403);
        sink.emit(&r);
        assert!(sink.flush(std::time::Duration::from_secs(10)));
        let text = String::from_utf8(buf.0.lock().expect("lock").clone()).expect("utf8");
        assert!(
            text.ends_with('\n') && text.matches('\n').count() == 1,
            "{text}"
        );
        let v: Value = serde_json::from_str(text.trim()).expect("json");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["action"], "reject");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["rejected_by"], "allowlist");
        assert_eq!(v["status_code"], 403);
        assert_eq!(v["mode"], "http");
        assert_eq!(v["request_transforms"][0]["name"], "allowlist");
        assert!(v["request_transforms"][0].get("annotations").is_none());
        assert!(v.get("client").is_none());
    }
}
