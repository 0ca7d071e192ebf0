//! Body integrity for the transforms that sign a request's body
//! (`hmac_sign`, `aws_auth`): a signature over a body the upstream does not
//! receive in full is one it rejects, and harder to debug than a clean
//! refusal at the proxy. Reasons and statuses are the spec's.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{Request, StatusCode};

use crate::body::Body;
use crate::pipeline::{body_bytes, Flow, Rejection};

/// The buffered body of `req`, checked against what the request declared:
/// - with a `Content-Length`: no body where one was declared is
///   `body_missing` (400), any other length `body_truncated` (413);
/// - without one, a body (chunked on HTTP/1.1, an HTTP/2 body without a
///   length) is `chunked_body_not_allowed` (400) unless `allow_chunked`,
///   which signs it as buffered and logs a warning naming `transform`.
///
/// Refusals are annotated (`rejected`, `content_length`, `buffered_length`).
pub fn checked(
    req: &Request<Body>,
    cx: &mut Flow,
    allow_chunked: bool,
    transform: &str,
) -> Result<Bytes, Rejection> {
    let body = body_bytes(req).cloned().unwrap_or_default();
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()));
    match declared {
        // hyper refuses a request with an unparsable Content-Length before
        // it gets here; refuse rather than guess if one does.
        Some(None) => Err(refuse(
            cx,
            StatusCode::BAD_REQUEST,
            "body_read_failed",
            "the request's Content-Length is not a number".into(),
        )),
        Some(Some(n)) if n > 0 && body.is_empty() => {
            cx.annotate("content_length", n);
            cx.annotate("buffered_length", 0);
            Err(refuse(
                cx,
                StatusCode::BAD_REQUEST,
                "body_missing",
                format!("the request declared a {n}-byte body but sent none"),
            ))
        }
        Some(Some(n)) if n != body.len() as u64 => {
            cx.annotate("content_length", n);
            cx.annotate("buffered_length", body.len());
            Err(refuse(
                cx,
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_truncated",
                format!(
                    "the buffered body ({} bytes) is not the declared {n} bytes; \
                     raise proxy.max_request_body_bytes to sign larger bodies",
                    body.len()
                ),
            ))
        }
        Some(Some(_)) => Ok(body),
        None => {
            let chunked = req.headers().contains_key(TRANSFER_ENCODING) || !body.is_empty();
            if chunked && !allow_chunked {
                cx.annotate("buffered_length", body.len());
                return Err(refuse(
                    cx,
                    StatusCode::BAD_REQUEST,
                    "chunked_body_not_allowed",
                    "a body without Content-Length cannot be signed \
                     (set allow_chunked_body: true to sign it as buffered)"
                        .into(),
                ));
            }
            if chunked {
                tracing::warn!(
                    host = %cx.dest.host,
                    bytes = body.len(),
                    "{transform}: signing a body sent without Content-Length, as buffered"
                );
            }
            Ok(body)
        }
    }
}

/// A refusal with `reason`, annotated as the spec's `rejected`.
pub fn refuse(
    cx: &mut Flow,
    status: StatusCode,
    reason: &'static str,
    message: String,
) -> Rejection {
    cx.annotate("rejected", reason);
    Rejection {
        status,
        reason: reason.into(),
        message,
        answer: None,
    }
}
