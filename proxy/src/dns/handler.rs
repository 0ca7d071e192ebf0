//! The request handler of both transports: checks the query, resolves it
//! through the policy (records → passthrough → intercept, following static
//! CNAMEs), and encodes the answer ([`super::encode`]). [`super::udp`] and
//! [`super::tcp`] run each query in its own task, so a slow upstream never
//! holds up other queries.

use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tracing::{debug, warn};

use super::asker::Asker;
use super::encode;
use super::forward::{Forwarder, Question};
use super::policy::{self, Policy, Route, StaticEntry, MAX_CNAME_CHAIN};
use super::stats::{DnsStats, Outcome};
use crate::ops::warn_every::WarnEvery;

/// Largest UDP answer we send, whatever the client advertises.
const MAX_UDP_PAYLOAD: u16 = 4096;

/// The answer to one query, before encoding.
struct Resolution {
    rcode: ResponseCode,
    answers: Vec<Record>,
    authorities: Vec<Record>,
    additionals: Vec<Record>,
    authoritative: bool,
    authentic_data: bool,
    outcome: Outcome,
}

impl Resolution {
    fn local(answers: Vec<Record>, outcome: Outcome) -> Resolution {
        Resolution {
            rcode: ResponseCode::NoError,
            answers,
            authorities: Vec::new(),
            additionals: Vec::new(),
            authoritative: false,
            authentic_data: false,
            outcome,
        }
    }

    /// A local answer ending at `name`: the CNAME `chain` that led there, then
    /// `answers`, or the zone-apex records for SOA and NS
    /// ([`policy::apex_answers`]); with none of the asked type, the name's
    /// SOA in the authority section so that resolvers cache the "no data"
    /// ([`policy::local_soa`]).
    fn local_final(
        mut chain: Vec<Record>,
        mut answers: Vec<Record>,
        name: &hickory_proto::rr::Name,
        qtype: RecordType,
        outcome: Outcome,
    ) -> Resolution {
        if answers.is_empty() {
            answers = policy::apex_answers(name, qtype);
        }
        let nodata = answers.is_empty();
        chain.extend(answers);
        let mut r = Resolution::local(chain, outcome);
        if nodata {
            r.authorities.push(policy::local_soa(name));
        }
        r
    }

    fn error(rcode: ResponseCode, outcome: Outcome) -> Resolution {
        Resolution {
            rcode,
            ..Resolution::local(Vec::new(), outcome)
        }
    }
}

/// The server's request handler.
pub(crate) struct Handler {
    policy: Policy,
    forwarder: Forwarder,
    stats: Arc<DnsStats>,
    /// Each looped query would otherwise log a line.
    loop_warning: WarnEvery,
    /// Passthrough failures (a dead or slow upstream), likewise.
    upstream_warning: WarnEvery,
}

impl Handler {
    /// The server's counters.
    pub(crate) fn stats(&self) -> &DnsStats {
        &self.stats
    }

    pub(crate) fn new(policy: Policy, forwarder: Forwarder, stats: Arc<DnsStats>) -> Handler {
        Handler {
            policy,
            forwarder,
            stats,
            loop_warning: WarnEvery::new(std::time::Duration::from_secs(60)),
            upstream_warning: WarnEvery::new(std::time::Duration::from_secs(60)),
        }
    }

    /// Checks what decoding has not checked yet, then resolves.
    async fn answer(&self, request: &Request, asker: &Asker) -> Resolution {
        if request.metadata.message_type != MessageType::Query
            || request.metadata.op_code != OpCode::Query
        {
            return Resolution::error(ResponseCode::NotImp, Outcome::Refused);
        }
        if let Some(edns) = &request.edns {
            if edns.version() > 0 {
                return Resolution::error(ResponseCode::BADVERS, Outcome::Refused);
            }
            if edns
                .options()
                .as_ref()
                .iter()
                .any(|(_, opt)| self.forwarder.is_own_marker(opt))
            {
                if let Some(held_back) = self.loop_warning.due(std::time::Instant::now()) {
                    warn!(
                        held_back,
                        "dns forwarding loop: the upstream resolver sent our own query back \
                         (answered SERVFAIL; warned at most once a minute)"
                    );
                }
                return Resolution::error(ResponseCode::ServFail, Outcome::Failed);
            }
        }
        let [query] = request.queries.queries() else {
            return Resolution::error(ResponseCode::FormErr, Outcome::Refused);
        };
        let qtype = query.query_type();
        if query.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Resolution::error(ResponseCode::Refused, Outcome::Refused);
        }
        let question = Question {
            name: query.original().name.clone(),
            qtype,
            recursion_desired: request.metadata.recursion_desired,
            checking_disabled: request.metadata.checking_disabled,
            dnssec_ok: request.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
        };
        self.resolve(question, asker).await
    }

    /// Records → passthrough → intercept, following static CNAMEs; the CNAMEs
    /// come first in the answer section, then the target's answers. `asker`
    /// is who asked, for its share of the upstream queries in flight (found
    /// out only if the query goes upstream).
    async fn resolve(&self, mut q: Question, asker: &Asker) -> Resolution {
        let mut chain: Vec<Record> = Vec::new();
        let mut first: Option<Outcome> = None;
        for _ in 0..=MAX_CNAME_CHAIN {
            let route = self.policy.route(&q.name);
            let step = match route {
                Route::Record(_) => Outcome::Record,
                Route::Passthrough => Outcome::Passthrough,
                Route::Intercept => Outcome::Intercepted,
            };
            let outcome = *first.get_or_insert(step);
            match route {
                Route::Record(StaticEntry::Cname(target)) => {
                    chain.push(policy::cname_record(&q.name, target));
                    if q.qtype == RecordType::CNAME {
                        return Resolution::local(chain, outcome);
                    }
                    q.name = target.clone();
                }
                Route::Record(StaticEntry::A(ips)) => {
                    let answers = policy::static_a_answers(&q.name, ips, q.qtype);
                    return Resolution::local_final(chain, answers, &q.name, q.qtype, outcome);
                }
                Route::Intercept => {
                    let answers = match policy::special(&q.name) {
                        None => self.policy.intercept_answers(&q.name, q.qtype),
                        Some(policy::Special::Loopback) => {
                            policy::loopback_answers(&q.name, q.qtype)
                        }
                        Some(policy::Special::NoSuchName) => {
                            let mut r = Resolution::local(chain, outcome);
                            r.rcode = ResponseCode::NXDomain;
                            r.authorities.push(policy::local_soa(&q.name.trim_to(1)));
                            return r;
                        }
                    };
                    return Resolution::local_final(chain, answers, &q.name, q.qtype, outcome);
                }
                Route::Passthrough => {
                    let msg = match self.forwarder.forward(&q, asker.client()).await {
                        Ok(msg) => msg,
                        Err(error) => {
                            let error = crate::error_chain(&error);
                            debug!(name = %q.name, %error, "passthrough failed");
                            if let Some(held_back) =
                                self.upstream_warning.due(std::time::Instant::now())
                            {
                                warn!(
                                    %error,
                                    held_back,
                                    "dns passthrough failing: the upstream resolver gave no \
                                     answer (answered SERVFAIL; warned at most once a minute)"
                                );
                            }
                            return Resolution::error(ResponseCode::ServFail, Outcome::Failed);
                        }
                    };
                    let kept = self.passthrough_part(&q.name, msg.answers);
                    chain.extend(kept.records);
                    if let Some(target) = kept.leaves_to {
                        // The upstream's chain goes on to a name that is not
                        // passthrough: that name is answered here, as if the
                        // workload had asked for it (never its real address).
                        q.name = target;
                        continue;
                    }
                    let local = |r: &Record| self.policy.route(&r.name) == Route::Passthrough;
                    let authorities: Vec<Record> =
                        msg.authorities.into_iter().filter(local).collect();
                    let additionals: Vec<Record> =
                        msg.additionals.into_iter().filter(local).collect();
                    return Resolution {
                        rcode: msg.metadata.response_code,
                        answers: chain,
                        authorities,
                        additionals,
                        authoritative: msg.metadata.authoritative && kept.whole,
                        authentic_data: msg.metadata.authentic_data && kept.whole,
                        outcome,
                    };
                }
            }
        }
        // Unreachable with validated records (chains are checked at start).
        Resolution::error(ResponseCode::ServFail, Outcome::Failed)
    }
}

/// What of an upstream's answer section a passthrough answer keeps.
struct Kept {
    /// The records of the chain from the question's name, as long as its
    /// names are passthrough.
    records: Vec<Record>,
    /// The CNAME target where the chain leaves passthrough, to be answered
    /// locally (intercepted: the proxy's address; a static record).
    leaves_to: Option<hickory_proto::rr::Name>,
    /// Whether nothing was left out.
    whole: bool,
}

impl Handler {
    /// The part of `answers` a workload may have: the records owned by
    /// `name` and, following CNAMEs, by each passthrough name the chain
    /// reaches. A CNAME to a name that is not passthrough ends it there
    /// (`leaves_to`), and records owned by any other name are dropped: an
    /// upstream answering `jira.corp CNAME github.com` with github.com's
    /// address, or adding records for other names, would hand the workload a
    /// real address for an intercepted name, and a caching stub resolver in
    /// front would serve it for every later lookup.
    fn passthrough_part(&self, name: &hickory_proto::rr::Name, answers: Vec<Record>) -> Kept {
        let total = answers.len();
        let mut pending = answers;
        let mut kept = Vec::with_capacity(total);
        let mut at = name.clone();
        let mut leaves_to = None;
        for _ in 0..=MAX_CNAME_CHAIN {
            let (mine, rest): (Vec<Record>, Vec<Record>) =
                pending.into_iter().partition(|r| r.name == at);
            pending = rest;
            let next = mine.iter().find_map(|r| match &r.data {
                hickory_proto::rr::RData::CNAME(c) => Some(c.0.clone()),
                _ => None,
            });
            kept.extend(mine);
            match next {
                Some(target) if self.policy.route(&target) == Route::Passthrough => at = target,
                Some(target) => {
                    leaves_to = Some(target);
                    break;
                }
                None => break,
            }
        }
        Kept {
            whole: kept.len() == total && leaves_to.is_none(),
            records: kept,
            leaves_to,
        }
    }
}

impl Handler {
    /// The encoded answer to one message `query` received from `peer` over
    /// `protocol`, asked by `asker`; `None` for what gets no answer: fewer than 12 bytes, or a
    /// message that is itself a response (no reflection). A message whose
    /// header decodes and whose body does not gets FORMERR with its id.
    pub(crate) async fn respond(
        &self,
        query: Vec<u8>,
        peer: SocketAddr,
        protocol: Protocol,
        asker: &Asker,
    ) -> Option<Vec<u8>> {
        let header = Header::read(&mut BinDecoder::new(&query)).ok()?;
        if header.metadata.message_type == MessageType::Response {
            return None;
        }
        let request = match Request::from_bytes(query, peer, protocol) {
            Ok(r) => r,
            Err(error) => {
                debug!(id = header.metadata.id, %error, %protocol,
                    "dns query does not decode; FORMERR");
                return encode::formerr(&header);
            }
        };
        let res = self.answer(&request, asker).await;
        self.stats.count(res.outcome);
        if let [q] = request.queries.queries() {
            debug!(name = %q.name(), qtype = %q.query_type(), outcome = %res.outcome,
                rcode = %res.rcode, answers = res.answers.len(), "dns query");
        } else {
            debug!(outcome = %res.outcome, rcode = %res.rcode, "dns query");
        }

        let response_edns = request.edns.as_ref().map(|req| {
            let mut edns = Edns::new();
            edns.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
            edns.set_dnssec_ok(req.flags().dnssec_ok);
            edns.set_version(0);
            edns
        });
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = res.rcode;
        metadata.recursion_available = true;
        metadata.authoritative = res.authoritative;
        metadata.authentic_data = res.authentic_data;
        let udp_limit = match protocol {
            Protocol::Udp => Some(response_edns.as_ref().map_or(512, Edns::max_payload)),
            _ => None,
        };
        let sections = encode::Sections {
            answers: &res.answers,
            authorities: &res.authorities,
            additionals: &res.additionals,
        };
        Some(encode::response(
            &request,
            &metadata,
            &sections,
            response_edns.as_ref(),
            udp_limit,
        ))
    }
}
