//! What a failed lookup says in the audit record's `error` and the log: the
//! DNS outcome an operator acts on (no such name, no address records, the
//! server's refusal, no answer in time), not hickory's debug rendering of
//! the query (`no records found for Query { name: Name("x."), ... }`).

use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

/// The outcome of a failed lookup, in words.
pub(super) fn lookup_failure(e: &NetError) -> String {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(none)) => match none.response_code {
            ResponseCode::NXDomain => "no such name (NXDOMAIN)".into(),
            ResponseCode::NoError => "the name has no A or AAAA records (NOERROR, no data)".into(),
            code => answered(code),
        },
        NetError::Dns(DnsError::ResponseCode(code)) => answered(*code),
        NetError::Timeout => "no answer from the DNS server in time".into(),
        NetError::NoConnections => "no DNS server could be reached".into(),
        NetError::Io(io) => format!("DNS server unreachable: {io}"),
        other => other.to_string(),
    }
}

/// A response code the server answered with, by its mnemonic.
fn answered(code: ResponseCode) -> String {
    let name = match code {
        ResponseCode::ServFail => "SERVFAIL".to_string(),
        ResponseCode::Refused => "REFUSED".to_string(),
        ResponseCode::FormErr => "FORMERR".to_string(),
        ResponseCode::NotImp => "NOTIMP".to_string(),
        ResponseCode::NXDomain => "NXDOMAIN".to_string(),
        other => format!("response code {}", u16::from(other)),
    };
    format!("the DNS server answered {name}")
}

#[cfg(test)]
mod tests {
    use hickory_resolver::net::NoRecords;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::{Name, RecordType};

    use super::*;

    fn none(code: ResponseCode) -> NetError {
        let q = Query::query(Name::from_ascii("gone.test.").expect("name"), RecordType::A);
        NetError::Dns(DnsError::NoRecordsFound(NoRecords::new(q, code)))
    }

    #[test]
    fn negative_answers_name_their_kind_not_the_query_struct() {
        assert_eq!(
            lookup_failure(&none(ResponseCode::NXDomain)),
            "no such name (NXDOMAIN)"
        );
        assert_eq!(
            lookup_failure(&none(ResponseCode::NoError)),
            "the name has no A or AAAA records (NOERROR, no data)"
        );
        assert_eq!(
            lookup_failure(&none(ResponseCode::ServFail)),
            "the DNS server answered SERVFAIL"
        );
        assert_eq!(
            lookup_failure(&NetError::Dns(DnsError::ResponseCode(
                ResponseCode::Refused
            ))),
            "the DNS server answered REFUSED"
        );
        assert_eq!(
            lookup_failure(&NetError::Dns(DnsError::ResponseCode(
                ResponseCode::Unknown(4000)
            ))),
            "the DNS server answered response code 4000"
        );
        assert_eq!(
            lookup_failure(&NetError::Timeout),
            "no answer from the DNS server in time"
        );
    }
}
