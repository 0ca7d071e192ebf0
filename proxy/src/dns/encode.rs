//! Answers on the wire: each one encoded once, here, with its names
//! compressed against the question (RFC 1035 §4.1.4), and sized for UDP.
//!
//! hickory-server's response writer copies the question as the client's
//! bytes and offers that copy, type and class included, as one compression
//! target that no name can match. So no name of an answer pointed into the
//! question: the first record's owner went out in full (for
//! `x.example.com`, 13 bytes more than a pointer), CNAME targets and SOA
//! names too. Here the question is encoded as a name like any other, so
//! every record's owner is a two-byte pointer to it, and the size checked
//! against the client's limit is the size sent. Before, that check encoded
//! the answer this way while hickory sent the larger form: an answer that
//! fitted only compressed passed the check and was then cut by hickory,
//! with TC set, after the check had found that it fitted whole.

use hickory_proto::op::{emit_message_parts, Edns, Header, Metadata, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::BinEncoder;
use hickory_proto::ProtoError;
use hickory_server::server::Request;
use tracing::debug;

/// The sections of an answer.
#[derive(Clone, Copy)]
pub(crate) struct Sections<'a> {
    pub(crate) answers: &'a [Record],
    pub(crate) authorities: &'a [Record],
    pub(crate) additionals: &'a [Record],
}

impl Sections<'_> {
    /// No records: a header and the question.
    const EMPTY: Sections<'static> = Sections {
        answers: &[],
        authorities: &[],
        additionals: &[],
    };
}

/// `request`'s answer, encoded. `udp_limit` is the largest datagram the
/// client takes (512 without EDNS, else its payload size, capped), `None`
/// over TCP. When the answer does not fit, its additional section is left
/// out, TC clear (RFC 2181 section 9: the answer itself is whole); when it
/// still does not fit, the header and question go alone with TC set, and
/// the client asks again over TCP (never a partial record set); when even
/// the question does not (a query of many questions), the header alone.
pub(crate) fn response(
    request: &Request,
    metadata: &Metadata,
    sections: &Sections<'_>,
    edns: Option<&Edns>,
    udp_limit: Option<u16>,
) -> Vec<u8> {
    let fits = |bytes: &[u8]| udp_limit.is_none_or(|l| bytes.len() <= usize::from(l));
    let mut bytes = Vec::with_capacity(512);
    if let Err(error) = emit(request, metadata, sections, edns, &mut bytes) {
        return servfail(request, metadata, edns, &error);
    }
    if fits(&bytes) {
        return bytes;
    }
    if !sections.additionals.is_empty() {
        let lean = Sections {
            additionals: &[],
            ..*sections
        };
        bytes.clear();
        if emit(request, metadata, &lean, edns, &mut bytes).is_ok() && fits(&bytes) {
            return bytes;
        }
    }
    let mut cut = *metadata;
    cut.truncation = true;
    bytes.clear();
    match emit(request, &cut, &Sections::EMPTY, edns, &mut bytes) {
        Ok(()) if fits(&bytes) => bytes,
        // Only a query of many questions has a question section larger
        // than the client takes: the header (and OPT) alone, TC set.
        Ok(()) => header_only(&cut, edns).unwrap_or_default(),
        Err(error) => servfail(request, metadata, edns, &error),
    }
}

/// FORMERR for a query whose `header` decodes and whose body does not: the
/// header alone, with the query's id.
pub(crate) fn formerr(header: &Header) -> Option<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = ResponseCode::FormErr;
    header_only(&metadata, None)
}

/// Encodes the message into `bytes`. The question goes as the `Query` the
/// client sent (its name's case kept), so its labels are compression
/// targets for every name after it.
fn emit(
    request: &Request,
    metadata: &Metadata,
    sections: &Sections<'_>,
    edns: Option<&Edns>,
    bytes: &mut Vec<u8>,
) -> Result<(), ProtoError> {
    let mut encoder = BinEncoder::new(bytes);
    emit_message_parts(
        metadata,
        &mut request.queries.queries().iter().map(|q| q.original()),
        &mut sections.answers.iter(),
        &mut sections.authorities.iter(),
        &mut sections.additionals.iter(),
        edns,
        None,
        &mut encoder,
    )?;
    // A record cut at the encoder's limit (64 KiB) is rolled back by moving
    // the offset, not by shortening the buffer: its bytes must not go out
    // after the message.
    let end = encoder.offset();
    bytes.truncate(end);
    Ok(())
}

/// SERVFAIL, with the question, for an answer that cannot be encoded (a
/// record a peer sent that hickory decoded and cannot write back).
fn servfail(
    request: &Request,
    metadata: &Metadata,
    edns: Option<&Edns>,
    error: &ProtoError,
) -> Vec<u8> {
    debug!(id = metadata.id, %error, "dns answer does not encode; SERVFAIL");
    let mut failed = *metadata;
    failed.response_code = ResponseCode::ServFail;
    failed.truncation = false;
    let mut bytes = Vec::with_capacity(512);
    match emit(request, &failed, &Sections::EMPTY, edns, &mut bytes) {
        Ok(()) => bytes,
        Err(_) => header_only(&failed, None).unwrap_or_default(),
    }
}

/// A message of the header alone, and `edns`'s OPT record (which carries
/// the high bits of an extended response code such as BADVERS).
fn header_only(metadata: &Metadata, edns: Option<&Edns>) -> Option<Vec<u8>> {
    let mut bytes = Vec::with_capacity(12);
    let mut encoder = BinEncoder::new(&mut bytes);
    emit_message_parts(
        metadata,
        &mut std::iter::empty::<&Record>(),
        &mut std::iter::empty::<&Record>(),
        &mut std::iter::empty::<&Record>(),
        &mut std::iter::empty::<&Record>(),
        edns,
        None,
        &mut encoder,
    )
    .ok()?;
    Some(bytes)
}
