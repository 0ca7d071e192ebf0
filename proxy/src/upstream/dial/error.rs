//! Why a dial failed: the full detail for the audit record and the log, and
//! a class of failure (with the host) for the workload, which must not learn
//! the addresses the proxy resolved or tried.

use std::io;
use std::net::IpAddr;

/// Why an upstream could not be reached. `Display` is the full detail, for
/// the audit record and the operator's log (addresses included);
/// [`DialError::client_message`] is what the workload is told.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// A resolved address is inside `upstream_deny_cidrs`.
    #[error("{host} resolves to {ip}, inside denied range {net}")]
    Denied {
        /// The name dialed.
        host: String,
        /// The offending address.
        ip: IpAddr,
        /// The deny range it falls in.
        net: ipnet::IpNet,
    },
    /// A resolved address is one of the proxy's own listeners: dialing it
    /// would send the request back into the proxy, again and again.
    #[error("{host} resolves to {addr}, iron-proxy's own listener {listener}")]
    OwnListener {
        /// The name dialed.
        host: String,
        /// The address and port it would dial.
        addr: std::net::SocketAddr,
        /// The listener that would answer.
        listener: std::net::SocketAddr,
    },
    /// Name resolution failed.
    #[error("{detail}")]
    Resolve {
        /// The name dialed.
        host: String,
        /// The resolver's error (it may name nameservers).
        detail: String,
    },
    /// The lookup found no turn among the lookups in flight in time
    /// (`upstream::resolve`): the proxy's resolver is busy, not the name bad.
    #[error("{detail}")]
    ResolveBusy {
        /// The name dialed.
        host: String,
        /// How long it waited and the bounds.
        detail: String,
    },
    /// Every address refused or timed out.
    #[error("connecting to {host}:{port}: {detail}")]
    Connect {
        /// The name dialed.
        host: String,
        /// The port dialed.
        port: u16,
        /// How the last attempt failed.
        failure: ConnectFailure,
        /// Last failure, with the address tried.
        detail: String,
    },
    /// The TLS handshake with the upstream failed (including certificate verification).
    #[error("TLS handshake with {host}: {detail}")]
    Tls {
        /// The name dialed.
        host: String,
        /// What kind of failure it was.
        failure: TlsFailure,
        /// The handshake error.
        detail: String,
    },
    /// The request URI had no host.
    #[error("request has no upstream host")]
    NoHost,
    /// A connection a client connection's own client waited to open was no
    /// longer wanted once it could be: every request to the host had one
    /// (see `own_h2::limit`). Only hyper's background connect sees it.
    #[error("no request waits for a new connection")]
    Unwanted,
}

/// The class of a failed TCP connect, safe to show to the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The upstream refused the connection (RST).
    Refused,
    /// No answer within the connect timeout.
    TimedOut,
    /// No route to the host or its network.
    Unreachable,
    /// Anything else.
    Other,
}

impl ConnectFailure {
    pub(super) fn of(e: &io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
            io::ErrorKind::TimedOut => ConnectFailure::TimedOut,
            io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                ConnectFailure::Unreachable
            }
            _ => ConnectFailure::Other,
        }
    }

    /// The words for the workload.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectFailure::Refused => "connection refused",
            ConnectFailure::TimedOut => "connection timed out",
            ConnectFailure::Unreachable => "host unreachable",
            ConnectFailure::Other => "connection failed",
        }
    }
}

/// The class of a failed upstream TLS handshake, safe to show to the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFailure {
    /// The certificate does not chain to a trusted root (or its signature is bad).
    NotTrusted,
    /// The certificate is not valid for the name dialed.
    WrongName,
    /// The certificate has expired or is not valid yet.
    Expired,
    /// The certificate was rejected for another reason (revoked, malformed, ...).
    BadCertificate,
    /// The upstream aborted the handshake with an alert.
    Alert,
    /// The host is not a valid TLS server name.
    BadServerName,
    /// Anything else (the connection closed mid-handshake, a protocol error).
    Other,
}

/// The words webpki uses for a CA certificate in the server's place, which
/// rustls shows only as a debug name.
const CA_AS_SERVER: &str = "CaUsedAsEndEntity";

/// A failed handshake's detail for the audit record: the error, and what a
/// debug name in it means.
pub(super) fn tls_detail(e: &io::Error) -> String {
    let text = e.to_string();
    if text.contains(CA_AS_SERVER) {
        format!(
            "{text} (the upstream presented a CA certificate as its own: a self-signed \
             certificate, or its CA sent in its place)"
        )
    } else {
        text
    }
}

impl TlsFailure {
    pub(super) fn of(e: &io::Error) -> Self {
        use rustls::CertificateError as C;
        let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
            return TlsFailure::Other;
        };
        match err {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => TlsFailure::NotTrusted,
                C::Other(o) if o.to_string().contains(CA_AS_SERVER) => TlsFailure::NotTrusted,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsFailure::WrongName,
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsFailure::Expired,
                _ => TlsFailure::BadCertificate,
            },
            rustls::Error::AlertReceived(_) => TlsFailure::Alert,
            _ => TlsFailure::Other,
        }
    }

    /// The words for the workload.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::NotTrusted => "certificate not trusted",
            TlsFailure::WrongName => "certificate not valid for this host",
            TlsFailure::Expired => "certificate expired or not yet valid",
            TlsFailure::BadCertificate => "certificate rejected",
            TlsFailure::Alert => "the upstream aborted the handshake",
            TlsFailure::BadServerName => "not a valid TLS server name",
            TlsFailure::Other => "handshake failed",
        }
    }
}

impl DialError {
    /// The audit `reason` for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            DialError::Denied { .. } => "deny_cidr",
            DialError::OwnListener { .. } => "proxy_loop",
            DialError::Resolve { .. } => "dns_failure",
            DialError::ResolveBusy { .. } => "dns_lookup_busy",
            DialError::Connect { .. } => "connect_failed",
            DialError::Tls { .. } => "upstream_tls_failed",
            DialError::NoHost => "bad_request",
            DialError::Unwanted => "upstream_error",
        }
    }

    /// What the workload is told: the host and the class of failure, never
    /// an address the proxy resolved or tried, a deny range, or a
    /// nameserver (those stay in the audit record's `error` and the log).
    pub fn client_message(&self) -> String {
        match self {
            DialError::Denied { host, .. } => {
                format!("{host}: the upstream address is in a denied range")
            }
            DialError::OwnListener { host, .. } => {
                format!("{host}: the upstream is this proxy itself")
            }
            DialError::Resolve { host, .. } => format!("{host}: name did not resolve"),
            DialError::ResolveBusy { host, .. } => {
                format!("{host}: the proxy is resolving as many names as it may; try again later")
            }
            DialError::Connect {
                host,
                port,
                failure,
                ..
            } => format!("connecting to {host}:{port}: {}", failure.as_str()),
            DialError::Tls { host, failure, .. } => {
                format!("TLS handshake with {host} failed: {}", failure.as_str())
            }
            DialError::NoHost | DialError::Unwanted => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every IP address in `s`: runs of characters an address can contain,
    /// also cut at a colon (an IPv4 address with a port).
    fn ips_in(s: &str) -> Vec<IpAddr> {
        s.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':'))
            .flat_map(|w| {
                let w = w.trim_end_matches('.');
                std::iter::once(w).chain(w.split(':'))
            })
            .filter_map(|w| w.parse().ok())
            .collect()
    }

    #[test]
    fn the_client_message_names_the_host_and_the_class_but_no_address() {
        let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cases = [
            (
                DialError::Denied {
                    host: "rebind.test".into(),
                    ip: "10.1.2.3".parse().expect("ip"),
                    net: "10.0.0.0/8".parse().expect("net"),
                },
                "rebind.test: the upstream address is in a denied range",
            ),
            (
                DialError::Resolve {
                    host: "nx.test".into(),
                    detail: "resolving nx.test: no connections available via 192.168.1.53:53"
                        .into(),
                },
                "nx.test: name did not resolve",
            ),
            (
                DialError::Connect {
                    host: "api.test".into(),
                    port: 443,
                    failure: ConnectFailure::of(&io::Error::from(io::ErrorKind::ConnectionRefused)),
                    detail: "[fd00::7]:443: Connection refused (os error 111)".into(),
                },
                "connecting to api.test:443: connection refused",
            ),
            (
                DialError::Connect {
                    host: "api.test".into(),
                    port: 80,
                    failure: ConnectFailure::of(&io::Error::from(io::ErrorKind::HostUnreachable)),
                    detail: "10.9.9.9:80: No route to host".into(),
                },
                "connecting to api.test:80: host unreachable",
            ),
            (
                DialError::Tls {
                    host: "self-signed.test".into(),
                    failure: TlsFailure::of(&tls(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer,
                    ))),
                    detail: "invalid peer certificate: UnknownIssuer (dialed 203.0.113.9)".into(),
                },
                "TLS handshake with self-signed.test failed: certificate not trusted",
            ),
            (
                DialError::Tls {
                    host: "wrong.test".into(),
                    failure: TlsFailure::of(&tls(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::NotValidForName,
                    ))),
                    detail: "certificate is only valid for 172.16.0.4".into(),
                },
                "TLS handshake with wrong.test failed: certificate not valid for this host",
            ),
        ];
        for (err, want) in cases {
            // The detail (audit record, log) keeps the address; the client's message does not.
            assert!(!ips_in(&err.to_string()).is_empty(), "{err}");
            let msg = err.client_message();
            assert_eq!(msg, want, "{err:?}");
            assert_eq!(ips_in(&msg), Vec::<IpAddr>::new(), "an address in {msg:?}");
        }
    }

    #[test]
    fn failure_classes() {
        let kind = |k| ConnectFailure::of(&io::Error::from(k));
        assert_eq!(kind(io::ErrorKind::TimedOut), ConnectFailure::TimedOut);
        assert_eq!(
            kind(io::ErrorKind::NetworkUnreachable),
            ConnectFailure::Unreachable
        );
        assert_eq!(kind(io::ErrorKind::PermissionDenied), ConnectFailure::Other);
        let tls = |e: rustls::Error| TlsFailure::of(&io::Error::new(io::ErrorKind::InvalidData, e));
        assert_eq!(
            tls(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
            )),
            TlsFailure::Expired
        );
        assert_eq!(
            tls(rustls::Error::AlertReceived(
                rustls::AlertDescription::HandshakeFailure
            )),
            TlsFailure::Alert
        );
        assert_eq!(
            TlsFailure::of(&io::Error::from(io::ErrorKind::UnexpectedEof)),
            TlsFailure::Other
        );
    }

    /// webpki's error for a self-signed (CA) certificate in the server's
    /// place, which rustls carries as an opaque `Other`.
    #[derive(Debug)]
    struct CaUsedAsEndEntity;
    impl std::fmt::Display for CaUsedAsEndEntity {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }
    impl std::error::Error for CaUsedAsEndEntity {}

    #[test]
    fn a_ca_certificate_as_the_server_is_untrusted_and_said_in_words() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                std::sync::Arc::new(CaUsedAsEndEntity),
            ))),
        );
        assert_eq!(TlsFailure::of(&e), TlsFailure::NotTrusted);
        let detail = tls_detail(&e);
        assert!(detail.contains("a self-signed certificate"), "{detail}");
    }
}
