//! The fake upstream's endpoints (httpbin-like):
//!
//! | path | answer |
//! |---|---|
//! | `/get`, `/anything[/*]`, `/post`, `/put`, `/patch`, `/delete` | echo JSON (below) |
//! | `/headers` | `{"headers": .., "header_list": ..}` |
//! | `/status/{code}` | that status, empty body (3xx add `Location: /get`) |
//! | `/delay/{secs}` | sleeps before sending headers, then the echo |
//! | `/hold` | reads none of the request body and holds it unread for `?secs=` (default 60), then answers 200 with an empty body: an upstream that stalls an upload |
//! | `/bytes/{n}` | `n` bytes, byte `i` is `i % 251`, streamed in 64 KiB chunks |
//! | `/stream/{n}` | `n` JSON lines; `?interval_ms=` between them (default 0) |
//! | `/sse` | `text/event-stream`: `?count=` events (default 3), the first at once, then one every `?interval_ms=` (default 300) |
//! | `/response-headers?K=V` | sets each query pair as a response header |
//! | `/many-headers?count=N&len=L` | `N` response headers `x-many-<i>`, each a value of `L` bytes |
//! | `/trailers` | `Trailer: X-Trailer-Check`, a chunk of text, then the trailer `x-trailer-check: done` |
//! | `/reflect[/*]` | the request's `headers` and `url` as compact JSON (an upstream that reflects the request); `?escape_slash=1` writes `/` as `\/`, `?coding=gzip` compresses it (`Content-Encoding: gzip`; with `&corrupt=1` its CRC is wrong), `?chunk=N` streams it in `N`-byte frames (chunked), else one piece with `Content-Length`; `?status=N` answers with that status (the body goes too: over HTTP/2 even after a 204 or 304), `?reason=NAME` with the HTTP/1 reason phrase `Echoed <value of request header NAME>`; `?echo_header=NAME` also writes request header `NAME` back as response header `x-echo-NAME` (as an error page or debug header quoting `Authorization` would) |
//! | `/ws` | WebSocket echo (text and binary) |
//! | any path, `content-type: application/grpc` | a tiny gRPC service, see [`super::grpc`] |
//!
//! A HEAD gets the headers the GET gets (Content-Length included) and no body, on HTTP/2
//! too (see `without_body_on_head`).
//!
//! The echo: `method`, `path`, `url`, `args` (query; repeated keys become arrays), `headers`
//! (object, names as received; on HTTP/1 with their original casing), `header_list` (pairs in
//! arrival order), `data` (body as text), `json` (body parsed, or null), `body_len`,
//! `http_version`, `host`, `origin` (peer IP), `sni`, `alpn`, `tls`, `upstream` (the `--name`).
//! Every response carries `x-fake-upstream: <name>`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{ConnInfo, Shared};

/// Response body type: full or streamed.
pub type Body = BoxBody<Bytes, Infallible>;

pub(super) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

/// A body fed by the returned sender; the stream ends when the sender drops.
fn channel_body() -> (mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    (tx, StreamBody::new(stream).boxed())
}

pub(super) fn respond(
    shared: &Shared,
    status: StatusCode,
    ctype: Option<&'static str>,
    body: Body,
) -> Response<Body> {
    let mut rsp = Response::new(body);
    *rsp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        rsp.headers_mut().insert("x-fake-upstream", v);
    }
    if let Some(ct) = ctype {
        rsp.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    rsp
}

pub(super) fn json_response(shared: &Shared, status: StatusCode, v: &Value) -> Response<Body> {
    let mut text = serde_json::to_string_pretty(v).unwrap_or_default();
    text.push('\n');
    respond(shared, status, Some("application/json"), full(text))
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// The request's headers as received: from the tap on HTTP/1, else from hyper.
fn header_list(req: &Request<Incoming>, info: &ConnInfo) -> Vec<(String, String)> {
    if req.version() <= Version::HTTP_11 {
        let head = info.heads.lock().expect("head queue lock").pop_front();
        if let Some(head) = head {
            if head.method == req.method().as_str() && head.target == req.uri().to_string() {
                return head.headers;
            }
        }
    }
    req.headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn query_args(query: &str) -> Map<String, Value> {
    let mut args = Map::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let v = Value::String(v.into_owned());
        match args.get_mut(k.as_ref()) {
            None => {
                args.insert(k.into_owned(), v);
            }
            Some(Value::Array(list)) => list.push(v),
            Some(prev) => *prev = Value::Array(vec![prev.take(), v]),
        }
    }
    args
}

fn query_num(args: &Map<String, Value>, key: &str, default: u64) -> u64 {
    args.get(key)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Serves one request.
pub async fn handle(
    req: Request<Incoming>,
    info: ConnInfo,
    shared: Arc<Shared>,
) -> Result<Response<Body>, Infallible> {
    let headers = header_list(&req, &info);
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let host = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            let h = req.headers().get(http::header::HOST)?;
            Some(String::from_utf8_lossy(h.as_bytes()).into_owned())
        })
        .unwrap_or_default();
    let scheme = if info.tls { "https" } else { "http" };
    let mut echo = json!({
        "method": req.method().as_str(),
        "path": path,
        "url": format!("{scheme}://{host}{}", req.uri().path_and_query().map_or("/", |p| p.as_str())),
        "args": query_args(&query),
        "headers": Value::Object(headers.iter().fold(Map::new(), |mut m, (k, v)| {
            let joined = match m.get(k).and_then(Value::as_str) {
                Some(prev) => format!("{prev}, {v}"),
                None => v.clone(),
            };
            m.insert(k.clone(), Value::String(joined));
            m
        })),
        "header_list": headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
        "http_version": version_str(req.version()),
        "host": host,
        "origin": info.peer.ip().to_string(),
        "origin_port": info.peer.port(),
        "listener": info.local.to_string(),
        "tls": info.tls,
        "sni": info.sni,
        "alpn": info.alpn,
        "upstream": shared.name,
    });

    if path == "/ws" {
        log(&shared, &echo, None);
        return Ok(super::ws::websocket(req, &shared));
    }

    if path == "/hold" {
        log(&shared, &echo, None);
        let secs = query_num(echo["args"].as_object().unwrap_or(&Map::new()), "secs", 60);
        // The body stays unread (and so counts against the stream's and the
        // connection's HTTP/2 receive windows) until it drops here.
        let _unread = req.into_body();
        tokio::time::sleep(Duration::from_secs(secs.min(600))).await;
        return Ok(respond(&shared, StatusCode::OK, None, full(Bytes::new())));
    }

    let parts_headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    echo["body_len"] = json!(body.len());
    echo["data"] = json!(String::from_utf8_lossy(&body));
    echo["json"] = serde_json::from_slice(&body).unwrap_or(Value::Null);
    log(&shared, &echo, Some(&body));
    if super::grpc::is_grpc(&parts_headers) {
        return Ok(super::grpc::handle(&path, &body, &shared));
    }
    Ok(route(&path, echo, &shared).await)
}

/// `/reflect`: the request's headers and URL written back (see the module doc).
fn reflect(shared: &Shared, echo: &Value, args: &Map<String, Value>) -> Response<Body> {
    use std::io::Write as _;
    let mut text = json!({"headers": echo["headers"], "url": echo["url"]}).to_string();
    if args.get("escape_slash").and_then(Value::as_str) == Some("1") {
        text = text.replace('/', "\\/");
    }
    let mut bytes = text.into_bytes();
    let gzip = args.get("coding").and_then(Value::as_str) == Some("gzip");
    if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = e.write_all(&bytes);
        bytes = e.finish().unwrap_or_default();
        if args.get("corrupt").and_then(Value::as_str) == Some("1") {
            // A wrong CRC-32 in the trailer: the data decodes, the check fails at the end.
            let n = bytes.len();
            bytes[n - 8] ^= 0xff;
        }
    }
    let chunk = query_num(args, "chunk", 0) as usize;
    let body = if chunk == 0 {
        full(Bytes::from(bytes))
    } else {
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            for piece in bytes.chunks(chunk) {
                if tx.send(Bytes::copy_from_slice(piece)).await.is_err() {
                    return;
                }
            }
        });
        body
    };
    let status = args
        .get("status")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut rsp = respond(shared, status, Some("application/json"), body);
    if let Some(name) = args.get("echo_header").and_then(Value::as_str) {
        let value = echo["headers"].as_object().and_then(|h| {
            h.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str())
        });
        let header = HeaderName::from_bytes(format!("x-echo-{name}").as_bytes());
        if let (Some(v), Ok(h)) = (value.and_then(|v| HeaderValue::from_str(v).ok()), header) {
            rsp.headers_mut().insert(h, v);
        }
    }
    if gzip {
        rsp.headers_mut().insert(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
    }
    if let Some(name) = args.get("reason").and_then(Value::as_str) {
        // An HTTP/1 reason phrase quoting a request header, as some servers word
        // their errors (`401 Invalid key ...`).
        let value = echo["headers"]
            .as_object()
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.as_str())
            .unwrap_or("");
        if let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(format!("Echoed {value}")) {
            rsp.extensions_mut().insert(phrase);
        }
    }
    rsp
}

async fn route(path: &str, echo: Value, shared: &Shared) -> Response<Body> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let args = echo["args"].as_object().cloned().unwrap_or_default();
    match segs.as_slice() {
        ["get" | "post" | "put" | "patch" | "delete"] => {
            json_response(shared, StatusCode::OK, &echo)
        }
        ["anything", ..] => json_response(shared, StatusCode::OK, &echo),
        ["headers"] => json_response(
            shared,
            StatusCode::OK,
            &json!({"headers": echo["headers"], "header_list": echo["header_list"]}),
        ),
        ["status", code] => match code.parse().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(status) => {
                let mut rsp = respond(shared, status, None, full(Bytes::new()));
                if status.is_redirection() {
                    rsp.headers_mut()
                        .insert(http::header::LOCATION, HeaderValue::from_static("/get"));
                }
                rsp
            }
            None => json_response(
                shared,
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad status"}),
            ),
        },
        ["delay", secs] => {
            let secs: f64 = secs.parse().unwrap_or(0.0);
            tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 120.0))).await;
            json_response(shared, StatusCode::OK, &echo)
        }
        ["bytes", n] => {
            let n: usize = n.parse().unwrap_or(0).min(1 << 30);
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                // Slices of one pattern buffer, not bytes computed one by one: large bodies
                // then cost this (unoptimized) server next to nothing.
                static PATTERN: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
                let pattern =
                    PATTERN.get_or_init(|| (0..65536 + 251).map(|j| (j % 251) as u8).collect());
                let mut i = 0usize;
                while i < n {
                    let end = (i + 65536).min(n);
                    let chunk = pattern.slice(i % 251..i % 251 + (end - i));
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                    i = end;
                }
            });
            let mut rsp = respond(
                shared,
                StatusCode::OK,
                Some("application/octet-stream"),
                body,
            );
            rsp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(n));
            rsp
        }
        ["stream", n] => {
            let n: u64 = n.parse().unwrap_or(0).min(10_000);
            let interval = Duration::from_millis(query_num(&args, "interval_ms", 0));
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                for i in 0..n {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    let line = format!("{}\n", json!({"id": i, "url": echo["url"]}));
                    if tx.send(Bytes::from(line)).await.is_err() {
                        return;
                    }
                }
            });
            respond(shared, StatusCode::OK, Some("application/json"), body)
        }
        ["reflect", ..] => reflect(shared, &echo, &args),
        ["sse"] => {
            let count = query_num(&args, "count", 3);
            let interval = Duration::from_millis(query_num(&args, "interval_ms", 300));
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                for i in 0..count {
                    if i > 0 {
                        tokio::time::sleep(interval).await;
                    }
                    let ev =
                        format!("id: {i}\nevent: tick\ndata: {{\"n\":{i},\"of\":{count}}}\n\n");
                    if tx.send(Bytes::from(ev)).await.is_err() {
                        return;
                    }
                }
            });
            let mut rsp = respond(shared, StatusCode::OK, Some("text/event-stream"), body);
            rsp.headers_mut().insert(
                http::header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache"),
            );
            rsp
        }
        ["trailers"] => {
            let mut trailers = http::HeaderMap::new();
            trailers.insert("x-trailer-check", HeaderValue::from_static("done"));
            let frames = [
                Frame::data(Bytes::from_static(b"trailers follow\n")),
                Frame::trailers(trailers),
            ];
            let stream = futures_util::stream::iter(frames.map(Ok::<_, Infallible>));
            let mut rsp = respond(
                shared,
                StatusCode::OK,
                Some("text/plain"),
                StreamBody::new(stream).boxed(),
            );
            rsp.headers_mut().insert(
                http::header::TRAILER,
                HeaderValue::from_static("X-Trailer-Check"),
            );
            rsp
        }
        ["many-headers"] => {
            let count = query_num(&args, "count", 0).min(10_000);
            let len = query_num(&args, "len", 1).min(64 * 1024) as usize;
            let mut rsp = respond(shared, StatusCode::OK, None, full(Bytes::new()));
            let value =
                HeaderValue::try_from("v".repeat(len)).unwrap_or(HeaderValue::from_static("v"));
            for i in 0..count {
                if let Ok(name) = HeaderName::try_from(format!("x-many-{i}")) {
                    rsp.headers_mut().append(name, value.clone());
                }
            }
            rsp
        }
        ["response-headers"] => {
            let mut rsp = json_response(shared, StatusCode::OK, &Value::Object(args.clone()));
            for (k, v) in &args {
                let values = match v {
                    Value::Array(list) => list.clone(),
                    v => vec![v.clone()],
                };
                for v in values.iter().filter_map(Value::as_str) {
                    if let (Ok(k), Ok(v)) =
                        (HeaderName::try_from(k.as_str()), HeaderValue::from_str(v))
                    {
                        rsp.headers_mut().append(k, v);
                    }
                }
            }
            rsp
        }
        _ => json_response(
            shared,
            StatusCode::NOT_FOUND,
            &json!({"error": "not found", "path": path}),
        ),
    }
}

/// Appends one JSON line to the request log.
fn log(shared: &Shared, echo: &Value, body: Option<&Bytes>) {
    let Some(file) = &shared.log else { return };
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut entry = json!({
        "ts_ms": ts,
        "method": echo["method"],
        "path": echo["path"],
        "url": echo["url"],
        "args": echo["args"],
        "host": echo["host"],
        "headers": echo["header_list"],
        "http_version": echo["http_version"],
        "sni": echo["sni"],
        "alpn": echo["alpn"],
        "tls": echo["tls"],
        "origin": echo["origin"],
        "origin_port": echo["origin_port"],
        "listener": echo["listener"],
        "upstream": echo["upstream"],
    });
    if let Some(body) = body {
        let cap = body.len().min(64 * 1024);
        entry["body"] = json!(String::from_utf8_lossy(&body[..cap]));
        entry["body_len"] = json!(body.len());
    }
    use std::io::Write;
    let mut f = file.lock().expect("log lock");
    let _ = writeln!(f, "{entry}");
    let _ = f.flush();
}
