//! The response to a request in which credential transforms put real values
//! (`secrets`' static credentials, `oauth_token`'s and `gcp_auth`'s minted
//! tokens, the credentials `hmac_sign` renders into headers, `aws_auth`'s
//! session token: each noted with [`Flow::note_secret_value`]), scrubbed of every one
//! of them before the workload sees it: an upstream that echoes the request
//! (an echo endpoint, an error quoting the `Authorization` header, a debug
//! header) does not hand the real credential back.
//!
//! It runs once per response, whichever transforms and however many values:
//! the pipeline calls [`scrub`] just before the response hook of the first
//! transform, in config order, that noted a value (`Pipeline::on_response`),
//! with one search over all the values ([`BodyScrubber`]) for the headers
//! ([`headers`]) and the body ([`body`]), and its annotations go to that
//! transform's response trace entry. A request given no value is not looked
//! at (the pipeline checks an empty list).
//!
//! Headers and trailers are always scrubbed (a field whose name holds a
//! value is dropped). The body is scrubbed when some transform
//! that noted a value has `scrub_response_bodies` on (the default); the
//! search then covers every value, an opted-out transform's too.
//!
//! Audit annotations: `response_redacted` (the headers changed),
//! `response_trailers_redacted` (the trailer fields changed, when they go by),
//! `response_body_redacted` (matches masked in the body, when the record is
//! written), `response_body_decoded` (the codings undone to search it).

mod body;
mod headers;

use http::Response;

use crate::body::Body;
use crate::pipeline::{BodyTrailers, Flow, TransformError};
use crate::secrets::body_scrub::BodyScrubber;

/// Scrubs `rsp` of the values noted in `cx` (nothing when none is 8 bytes
/// or longer): its headers now, its body as it streams, unless no
/// transform that noted one wants bodies scrubbed. `by` names the transform
/// at whose hook this runs (a body cut mid-way says so). A response that
/// cannot be searched is an error (`response_body_unscrubbable`): it must
/// not reach the workload unsearched.
pub(crate) fn scrub(
    rsp: &mut Response<Body>,
    cx: &mut Flow,
    by: &'static str,
) -> Result<(), TransformError> {
    // One search, for the headers and the body.
    let search = match BodyScrubber::new(cx.secret_values()) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(()),
        Err(e) => return Err(body::unscrubbable(crate::error_chain(&e))),
    };
    let changed = headers::redact_headers(rsp.headers_mut(), &search);
    if !changed.is_empty() {
        cx.annotate("response_redacted", changed);
    }
    // The copy of a buffered body's trailers that a transform rewriting the
    // body puts back (`grpc`): scrubbed as the trailers that stream are.
    if let Some(kept) = rsp.extensions_mut().get_mut::<BodyTrailers>() {
        headers::redact_headers(&mut kept.0, &search);
    }
    if cx.scrubs_response_body() {
        body::scrub(rsp, cx, search, by)?;
    } else {
        body::scrub_trailers(rsp, cx, search);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
