//! Between the proxy's `http` types and the TransformService messages.

use std::collections::HashMap;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Response, StatusCode};

use super::wire::{self, HeaderValues, HttpResponse, TransformContext};
use crate::body::{self, Body};
use crate::pipeline::Flow;

pub(super) fn context(cx: &Flow) -> TransformContext {
    let conn = cx.conn.as_deref();
    TransformContext {
        sni: conn.and_then(|c| c.sni()).unwrap_or_default().to_string(),
        client_cert_der: Bytes::new(),
        tunnel: conn
            .and_then(|c| c.tunnel.as_ref())
            .map(|t| wire::TunnelInfo {
                target: t.target.clone(),
            }),
    }
}

pub(super) fn headers_to_wire(h: &HeaderMap) -> HashMap<String, HeaderValues> {
    let mut out: HashMap<String, HeaderValues> = HashMap::new();
    for (name, value) in h {
        out.entry(name.as_str().to_string())
            .or_default()
            .values
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    out
}

/// Replaces `h` with the server's header set, keeping the framing headers
/// (`Content-Length`, `Transfer-Encoding`) and `Host` the proxy manages.
pub(super) fn replace_headers(
    h: &mut HeaderMap,
    from: &HashMap<String, HeaderValues>,
    who: &str,
) -> Result<(), String> {
    let kept: Vec<(HeaderName, HeaderValue)> = [CONTENT_LENGTH, TRANSFER_ENCODING, HOST]
        .into_iter()
        .flat_map(|n| {
            h.get_all(&n)
                .iter()
                .map(|v| (n.clone(), v.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let mut new = HeaderMap::new();
    for (name, values) in from {
        let n = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{who}: invalid header name {name:?}"))?;
        if n == CONTENT_LENGTH || n == TRANSFER_ENCODING || n == HOST {
            continue;
        }
        for v in &values.values {
            let v = HeaderValue::from_str(v)
                .map_err(|_| format!("{who}: invalid value for header {name:?}"))?;
            new.append(n.clone(), v);
        }
    }
    crate::exchange::strip_hop_by_hop(&mut new, false);
    for (n, v) in kept {
        new.append(n, v);
    }
    *h = new;
    Ok(())
}

/// A response built from the server's `HttpResponse` (status 0 means 403).
pub(super) fn response_from_wire(r: &HttpResponse) -> Result<Response<Body>, String> {
    let status = match r.status_code {
        0 => StatusCode::FORBIDDEN,
        s => u16::try_from(s)
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| format!("invalid status {s}"))?,
    };
    let mut rsp = Response::new(body::full(r.body.clone()));
    *rsp.status_mut() = status;
    replace_headers(rsp.headers_mut(), &r.headers, "response")?;
    rsp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(r.body.len()));
    Ok(rsp)
}

pub(super) fn annotate(cx: &mut Flow, annotations: HashMap<String, String>) {
    let mut sorted: Vec<_> = annotations.into_iter().collect();
    sorted.sort();
    for (k, v) in sorted {
        cx.annotate(k, v);
    }
}
