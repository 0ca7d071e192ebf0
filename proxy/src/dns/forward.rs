//! Forwarding of passthrough names to the upstream resolver.
//!
//! The client's packet is never relayed: a fresh query is built that carries
//! only the question (name, type, class IN), the RD and CD flags, and the DO
//! bit, so nothing else the client put in its packet leaves the proxy. The
//! query goes over UDP from a new socket with a random id and is retried over
//! TCP when the answer is truncated. The answer's records are returned
//! untouched, so TTLs are exactly the upstream's. Nothing is cached.
//!
//! Each exchange holds a socket until the upstream answers or the timeout,
//! so the exchanges in flight are bounded: [`MAX_IN_FLIGHT`] in all, and
//! [`MAX_IN_FLIGHT_PER_CLIENT`] for the queries of one client, so that one
//! workload flooding passthrough names at a slow or dead upstream cannot
//! take every place and have every other workload's passthrough names
//! answered SERVFAIL (Unbound's `ip-ratelimit`, BIND's `clients-per-query`,
//! the same idea). A client is its address, or the workload interception
//! says sent the query ([`super::asker`]): every workload redirected on this
//! host asks from loopback, and would otherwise share one place.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::{Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;
use tracing::debug;

use super::DnsError;
use crate::intercept::Client;

/// EDNS option code (local/experimental range, RFC 6891) that marks queries
/// this server forwards, so that a query coming back to it is recognized as a
/// forwarding loop instead of being forwarded again.
pub(crate) const LOOP_OPTION: u16 = 65_001;

/// UDP payload size we advertise upstream (the DNS flag day 2020 value).
const UPSTREAM_PAYLOAD: u16 = 1232;

/// Most upstream exchanges in flight at once. Each holds a socket for up to
/// the timeout, so a flood of passthrough queries to a dead upstream must not
/// exhaust file descriptors; past the limit a query gets SERVFAIL at once.
pub(crate) const MAX_IN_FLIGHT: usize = 1024;

/// Most upstream exchanges in flight at once for the queries of one client
/// (an address, or a workload interception identified): a quarter of [`MAX_IN_FLIGHT`], so that at least three others
/// flooding as well still leave room (a build resolving hundreds of names
/// at once stays well under it; past it, that client's query gets SERVFAIL
/// at once).
pub(crate) const MAX_IN_FLIGHT_PER_CLIENT: usize = MAX_IN_FLIGHT / 4;

/// What the client asked, as far as the upstream gets to see it.
#[derive(Debug, Clone)]
pub(crate) struct Question {
    pub(crate) name: Name,
    pub(crate) qtype: RecordType,
    pub(crate) recursion_desired: bool,
    pub(crate) checking_disabled: bool,
    pub(crate) dnssec_ok: bool,
}

/// Sends passthrough questions to the upstream nameservers, in order.
#[derive(Debug)]
pub(crate) struct Forwarder {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    loop_token: [u8; 16],
    in_flight: tokio::sync::Semaphore,
    by_client: Arc<Mutex<HashMap<Client, usize>>>,
}

/// One client's place among the exchanges in flight: counted until dropped.
struct ClientPlace {
    by_client: Arc<Mutex<HashMap<Client, usize>>>,
    client: Client,
}

impl ClientPlace {
    /// A place for `client`, or `None` when it has [`MAX_IN_FLIGHT_PER_CLIENT`].
    fn take(by_client: &Arc<Mutex<HashMap<Client, usize>>>, client: Client) -> Option<Self> {
        let mut map = by_client.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(client).or_insert(0);
        if *n >= MAX_IN_FLIGHT_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientPlace {
            by_client: by_client.clone(),
            client,
        })
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut map = self.by_client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.client) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.client);
            }
        }
    }
}

impl Forwarder {
    pub(crate) fn new(servers: Vec<SocketAddr>, timeout: Duration) -> Forwarder {
        Forwarder {
            servers,
            timeout,
            loop_token: *uuid::Uuid::new_v4().as_bytes(),
            in_flight: tokio::sync::Semaphore::new(MAX_IN_FLIGHT),
            by_client: Arc::default(),
        }
    }

    /// True when `opt` is the marker this process puts on forwarded queries.
    pub(crate) fn is_own_marker(&self, opt: &EdnsOption) -> bool {
        matches!(opt, EdnsOption::Unknown(LOOP_OPTION, data) if data.as_slice() == self.loop_token)
    }

    /// Asks the upstreams for `client`'s question, within the overall
    /// timeout. Returns the first answer that is not SERVFAIL, REFUSED,
    /// FORMERR or NOTIMP, else the last such answer, else the error.
    pub(crate) async fn forward(&self, q: &Question, client: Client) -> Result<Message, DnsError> {
        if self.servers.is_empty() {
            return Err(DnsError::NoUpstream);
        }
        let _place =
            ClientPlace::take(&self.by_client, client).ok_or(DnsError::ClientUpstreamBusy)?;
        let _permit = self
            .in_flight
            .try_acquire()
            .map_err(|_| DnsError::UpstreamBusy)?;
        let deadline = Instant::now() + self.timeout;
        let mut fallback = None;
        let mut last_err = DnsError::NoUpstream;
        for (i, server) in self.servers.iter().enumerate() {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break;
            }
            // Leave the later servers their share of the time.
            let left = u32::try_from(self.servers.len() - i).unwrap_or(u32::MAX);
            let budget = remaining / left;
            match tokio::time::timeout(budget, self.ask(*server, q)).await {
                Ok(Ok(msg)) => {
                    let rcode = msg.metadata.response_code;
                    // An upstream that fails, refuses, or cannot read the
                    // question: the next one may answer.
                    if matches!(
                        rcode,
                        ResponseCode::ServFail
                            | ResponseCode::Refused
                            | ResponseCode::FormErr
                            | ResponseCode::NotImp
                    ) {
                        debug!(upstream = %server, %rcode, "upstream refused or failed");
                        fallback = Some(msg);
                        continue;
                    }
                    return Ok(msg);
                }
                Ok(Err(e)) => last_err = e,
                Err(_) => last_err = DnsError::UpstreamTimeout(*server),
            }
        }
        fallback.ok_or(last_err)
    }

    async fn ask(&self, server: SocketAddr, q: &Question) -> Result<Message, DnsError> {
        let answer = self.exchange(server, q, true).await?;
        if answer.metadata.response_code != ResponseCode::FormErr || answer.edns.is_some() {
            return Ok(answer);
        }
        // FORMERR without an OPT record: an upstream that does not speak
        // EDNS (or objects to our option). Ask once more without it, as BIND
        // and Unbound do (RFC 6891 §7). A loop cannot hide here: this
        // server answers its own marked queries SERVFAIL, never FORMERR.
        debug!(upstream = %server, name = %q.name, "FORMERR to EDNS; asking again without it");
        self.exchange(server, q, false).await
    }

    /// One query for `q` to `server` (with our EDNS record and loop marker
    /// when `edns`), over UDP, then TCP when the answer is truncated.
    async fn exchange(
        &self,
        server: SocketAddr,
        q: &Question,
        edns: bool,
    ) -> Result<Message, DnsError> {
        let mut query = Message::query();
        query.metadata.recursion_desired = q.recursion_desired;
        query.metadata.checking_disabled = q.checking_disabled;
        query.add_query(Query::query(q.name.clone(), q.qtype));
        if edns {
            let mut opt = Edns::new();
            opt.set_max_payload(UPSTREAM_PAYLOAD);
            opt.set_dnssec_ok(q.dnssec_ok);
            opt.options_mut()
                .insert(EdnsOption::Unknown(LOOP_OPTION, self.loop_token.to_vec()));
            query.set_edns(opt);
        }
        let id = query.metadata.id;
        let bytes = query.to_vec().map_err(|e| invalid(server, e))?;

        let answer = udp_exchange(server, &bytes, id, q).await?;
        if !answer.metadata.truncation {
            return Ok(answer);
        }
        debug!(upstream = %server, name = %q.name, "truncated over udp; retrying over tcp");
        tcp_exchange(server, &bytes, id, q).await
    }
}

async fn udp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    q: &Question,
) -> Result<Message, DnsError> {
    let io = |source| DnsError::UpstreamIo {
        addr: server,
        source,
    };
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    // Connected: the kernel drops datagrams from any other source.
    socket.connect(server).await.map_err(io)?;
    socket.send(query).await.map_err(io)?;
    let mut buf = vec![0u8; 65_535];
    loop {
        let n = socket.recv(&mut buf).await.map_err(io)?;
        // Garbage or a stale/forged answer: keep waiting for the real one
        // (the caller's timeout bounds the wait).
        match check_answer(server, &buf[..n], id, q) {
            Ok(msg) => return Ok(msg),
            Err(e) => debug!(error = %e, "ignoring udp datagram from upstream"),
        }
    }
}

async fn tcp_exchange(
    server: SocketAddr,
    query: &[u8],
    id: u16,
    q: &Question,
) -> Result<Message, DnsError> {
    let io = |source| DnsError::UpstreamIo {
        addr: server,
        source,
    };
    let len = u16::try_from(query.len()).map_err(|_| invalid(server, "query too long"))?;
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.map_err(io)?;
    check_answer(server, &buf, id, q)
}

/// Parses an upstream packet and checks it answers our question.
fn check_answer(
    server: SocketAddr,
    raw: &[u8],
    id: u16,
    q: &Question,
) -> Result<Message, DnsError> {
    let msg = Message::from_vec(raw).map_err(|e| invalid(server, e))?;
    if msg.metadata.id != id || msg.metadata.message_type != MessageType::Response {
        return Err(invalid(server, "id mismatch or not a response"));
    }
    let asked = match msg.queries.as_slice() {
        [only] => only.name == q.name && only.query_type == q.qtype,
        _ => false,
    };
    if !asked {
        return Err(invalid(server, "answer is for another question"));
    }
    Ok(msg)
}

fn invalid(addr: SocketAddr, reason: impl ToString) -> DnsError {
    DnsError::UpstreamInvalid {
        addr,
        reason: reason.to_string(),
    }
}
