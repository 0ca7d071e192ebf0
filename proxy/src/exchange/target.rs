//! Where a request goes: its host and port from the URI's authority or the
//! one Host header (RFC 9110 §7.2), the default port of its scheme, a Host
//! that disagrees with an absolute URI, a tunnel's target, and the absolute
//! URI it goes upstream with.

use http::header::{self, HeaderMap};
use http::{Request, Uri};

use super::ConnInfo;
use crate::rules::normalize_host;

/// Splits an authority (`host[:port]`) into a normalized host and a port;
/// `None` when it is not a valid authority.
fn split_authority(raw: &str, default_port: u16) -> Option<(String, u16)> {
    let a: http::uri::Authority = raw.parse().ok()?;
    host_port(&a, default_port)
}

/// The host and port of a request's authority. `None` for what a Host header
/// may not hold (RFC 9110 §7.2: `uri-host [":" port]`): userinfo, which
/// upstreams read in more than one way (`a.test@b.test`), brackets around
/// anything but an IPv6 address, and a port that is not a number from 1 to
/// 65535 (rather than quietly dialing the default).
/// An empty port (`a.test:`) means the default.
fn host_port(a: &http::uri::Authority, default_port: u16) -> Option<(String, u16)> {
    let text = a.as_str();
    if text.contains('@') {
        return None;
    }
    let raw_host = a.host();
    // A name's labels are not empty (`a..test`, `.a.test`, `a.test..`); one
    // trailing dot (the root) is allowed and dropped.
    if !raw_host.starts_with('[')
        && raw_host
            .strip_suffix('.')
            .unwrap_or(raw_host)
            .split('.')
            .any(str::is_empty)
    {
        return None;
    }
    let host = normalize_host(raw_host);
    if host.is_empty() {
        return None;
    }
    // Brackets hold an IPv6 address and nothing else (RFC 3986 §3.2.2):
    // `[a.test]` would be checked and dialed as a.test while the upstream
    // read `[a.test]`, and `[:]` was the host `:`.
    if raw_host.starts_with('[') && host.parse::<std::net::Ipv6Addr>().is_err() {
        return None;
    }
    // A bracket anywhere else is no part of a name (`0[::]:` was the host
    // `0[`, the http crate's reading: up to the first `:`).
    if !raw_host.starts_with('[') && raw_host.contains(['[', ']']) {
        return None;
    }
    // The port's text: right after the host (after `]` for IPv6), all of
    // what follows its `:`.
    let port_text = match text.strip_prefix('[') {
        Some(v6) => match v6.split_once(']')?.1 {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        },
        None => match text.get(raw_host.len()..)? {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        },
    };
    let port = match port_text {
        None | Some("") => default_port,
        // `u16::from_str` takes a leading `+`; a port is digits only.
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => p.parse::<u16>().ok()?,
        Some(_) => return None,
    };
    (port != 0).then_some((host, port))
}

/// The host and port of a tunnel target (a CONNECT's request target, a
/// SOCKS5 domain and port): RFC 9110 §9.3.6's `uri-host ":" port`, with the
/// port required and, as for Host, no userinfo (`CONNECT b.test@a.test:443`
/// names a.test to one reader and something else to another).
pub(crate) fn tunnel_target(a: &http::uri::Authority) -> Option<(String, u16)> {
    a.port()?;
    host_port(a, 0)
}

/// Why a request names no destination the proxy will dial.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum HostError {
    /// No Host header (or an empty one) and no absolute URI.
    Missing,
    /// More than one Host header. RFC 9112 §3.2 answers 400: the proxy and the
    /// upstream could each take a different one (domain fronting).
    Duplicate,
    /// A Host or `:authority` that is not `host[:port]`; the text as received
    /// (lossy, cut short).
    Invalid(String),
}

impl HostError {
    pub(super) fn reason(&self) -> &'static str {
        match self {
            HostError::Missing => "missing_host",
            HostError::Duplicate | HostError::Invalid(_) => "invalid_host",
        }
    }

    pub(super) fn message(&self) -> String {
        match self {
            HostError::Missing => "request names no host".into(),
            HostError::Duplicate => "request has more than one Host header".into(),
            HostError::Invalid(v) => format!("{v:?} is not a valid host[:port]"),
        }
    }
}

/// The port a request means when its authority names none (RFC 9110
/// §4.2.1, §4.2.2): the default port of the scheme its target URI names
/// (absolute form, HTTP/2 `:scheme`), 443 for `https` and 80 for `http`;
/// for origin form, the connection's (`http_listen` 80, `https_listen` 443,
/// a tunnel's or intercepted connection's destination port). `GET
/// https://a.test/` on a plain listener means a.test:443 (it goes upstream
/// over TLS), never port 80. An `http` URI on a TLS connection is served as
/// HTTPS (the client leg decides), so it keeps the connection's port.
pub(super) fn default_port(uri: &Uri, conn: &ConnInfo) -> u16 {
    match uri.scheme() {
        Some(s) if *s == http::uri::Scheme::HTTPS => 443,
        Some(s) if *s == http::uri::Scheme::HTTP && !conn.tls => 80,
        _ => conn.default_port,
    }
}

/// The request's destination: the URI's authority (absolute form, HTTP/2
/// `:authority`), else the Host header.
pub(super) fn destination<B>(
    req: &Request<B>,
    default_port: u16,
) -> Result<(String, u16), HostError> {
    destination_of(req.uri(), req.headers(), default_port)
}

fn destination_of(
    uri: &Uri,
    headers: &HeaderMap,
    default_port: u16,
) -> Result<(String, u16), HostError> {
    let invalid = |raw: &[u8]| {
        let text = String::from_utf8_lossy(raw);
        // Userinfo is refused, and may be a credential: not quoted.
        let text = crate::redact_url::userinfo_masked(&text);
        HostError::Invalid(text.chars().take(256).collect())
    };
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(HostError::Duplicate);
    }
    match uri.authority() {
        Some(a) => host_port(a, default_port).ok_or_else(|| invalid(a.as_str().as_bytes())),
        None => {
            let value = host.filter(|v| !v.is_empty()).ok_or(HostError::Missing)?;
            value
                .to_str()
                .ok()
                .and_then(|v| split_authority(v, default_port))
                .ok_or_else(|| invalid(value.as_bytes()))
        }
    }
}

/// Where a request names its host (its URI's authority and its Host
/// header), kept unparsed (the clones share the request head's bytes) for a
/// record written before [`destination`] ran: see `record::Pending`.
#[derive(Default)]
pub(super) struct NamedHost(Option<http::uri::Authority>, Option<header::HeaderValue>);

impl NamedHost {
    pub(super) fn of<B>(req: &Request<B>) -> Self {
        NamedHost(
            req.uri().authority().cloned(),
            req.headers().get(header::HOST).cloned(),
        )
    }

    /// The host, normalized, without its port; `None` when the request
    /// names none or an invalid one.
    pub(super) fn host(&self) -> Option<String> {
        match (&self.0, &self.1) {
            (Some(a), _) => host_port(a, 1).map(|(h, _)| h),
            (None, Some(v)) => split_authority(v.to_str().ok()?, 1).map(|(h, _)| h),
            (None, None) => None,
        }
    }
}

/// The Host header, when the URI also names an authority and the two disagree.
///
/// RFC 9112 §3.2.2 lets a proxy ignore Host for an absolute-form request, but
/// the header still reaches the upstream: `GET http://allowed/` with
/// `Host: other` would dial the allowed name and ask its server (a shared CDN
/// front, say) for another site. A boundary refuses instead, as it does when
/// Host and SNI disagree.
pub(super) fn conflicting_host_header(
    headers: &HeaderMap,
    uri: &Uri,
    dest: (&str, u16),
    default_port: u16,
) -> Option<String> {
    uri.authority()?;
    let value = headers.get(header::HOST)?;
    let text = String::from_utf8_lossy(value.as_bytes()).into_owned();
    match value
        .to_str()
        .ok()
        .and_then(|v| split_authority(v, default_port))
    {
        Some((host, port)) if host == dest.0 && port == dest.1 => None,
        _ => Some(text),
    }
}

/// The absolute URI a request goes upstream with: its path and query as they
/// came (no copy, no re-parse) under the destination's scheme and authority.
pub(super) fn upstream_uri(
    tls: bool,
    host: &str,
    ipv6: bool,
    port: u16,
    pq: http::uri::PathAndQuery,
) -> Result<Uri, http::Error> {
    let scheme = if tls {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    // Built by hand: `format!` was about 800 instructions of every request.
    let mut digits = itoa::Buffer::new();
    let port = digits.format(port);
    let mut authority = String::with_capacity(host.len() + port.len() + 3);
    if ipv6 {
        authority.push('[');
        authority.push_str(host);
        authority.push(']');
    } else {
        authority.push_str(host);
    }
    authority.push(':');
    authority.push_str(port);
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(pq)
        .build()
}

// Beside this file, not in `target/`: .gitignore's `target/` (the build
// directory) matches that name anywhere.
#[cfg(test)]
#[path = "target_fuzz.rs"]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use http::header::HeaderValue;

    use crate::audit::Mode;

    #[test]
    fn host_header_must_agree_with_an_absolute_uri() {
        let conflict = |uri: &str, host: Option<&str>| {
            let uri: Uri = uri.parse().expect("uri");
            let mut h = HeaderMap::new();
            if let Some(v) = host {
                h.insert(header::HOST, HeaderValue::from_str(v).expect("value"));
            }
            let (dest, port) = match uri.authority() {
                Some(a) => split_authority(a.as_str(), 80).expect("authority"),
                None => ("origin.test".to_string(), 80),
            };
            conflicting_host_header(&h, &uri, (&dest, port), 80)
        };
        assert_eq!(conflict("http://a.test/x", Some("a.test")), None);
        assert_eq!(conflict("http://a.test/x", Some("A.Test.:80")), None);
        assert_eq!(conflict("http://a.test:8080/x", Some("a.test:8080")), None);
        assert_eq!(conflict("http://a.test/x", None), None, "HTTP/1.0 or h2");
        assert_eq!(conflict("/x", Some("b.test")), None, "origin form");
        assert_eq!(
            conflict("http://a.test/x", Some("b.test")),
            Some("b.test".into())
        );
        assert_eq!(
            conflict("http://a.test/x", Some("a.test:8080")),
            Some("a.test:8080".into())
        );
        assert_eq!(
            conflict("http://a.test/x", Some("a.test/evil")),
            Some("a.test/evil".into())
        );
    }

    #[test]
    fn a_bracket_outside_an_ipv6_literal_is_refused() {
        // Found by the property test: read as the host `0[`, written back as `0[:443`.
        assert_eq!(split_authority("0[::]:", 443), None);
        assert_eq!(split_authority("a.test]:443", 443), None);
        assert_eq!(split_authority("a:b:443", 443), None);
        assert_eq!(
            split_authority("a.test:8443", 443),
            Some(("a.test".into(), 8443))
        );
    }

    #[test]
    fn a_host_is_host_and_port_and_nothing_else() {
        let ok = |raw: &str| split_authority(raw, 443);
        assert_eq!(ok("A.Test."), Some(("a.test".into(), 443)));
        assert_eq!(ok("a.test:8443"), Some(("a.test".into(), 8443)));
        assert_eq!(ok("a.test:"), Some(("a.test".into(), 443)), "empty port");
        assert_eq!(ok("a.test:0443"), Some(("a.test".into(), 443)));
        assert_eq!(ok("[::1]:8080"), Some(("::1".into(), 8080)));
        assert_eq!(ok("[::1]"), Some(("::1".into(), 443)));
        assert_eq!(ok("10.0.0.1:80"), Some(("10.0.0.1".into(), 80)));
        for bad in [
            "denied.test@allowed.test",
            "user:pw@a.test",
            "a.test:99999",
            "a.test:0",
            "a.test:+5",
            "a.test:8o",
            "[::1]x",
            "a.test/evil",
            "a test",
            "a.test..",
            "a..test",
            ".a.test",
            ".",
            "",
        ] {
            assert_eq!(ok(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_tunnel_target_is_host_and_port_without_userinfo() {
        let target = |raw: &str| {
            raw.parse::<http::uri::Authority>()
                .ok()
                .and_then(|a| tunnel_target(&a))
        };
        assert_eq!(target("A.Test:443"), Some(("a.test".into(), 443)));
        assert_eq!(target("[::1]:8443"), Some(("::1".into(), 8443)));
        for bad in [
            "b.test@a.test:443",
            "user:pw@a.test:443",
            "a.test",
            "a.test:",
            "a.test:0",
            "[::1]",
        ] {
            assert_eq!(target(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_destination_comes_from_one_valid_host() {
        let req = |uri: &str, hosts: &[&str]| {
            let mut b = Request::builder().uri(uri);
            for h in hosts {
                b = b.header(header::HOST, *h);
            }
            b.body(()).expect("request")
        };
        let dest = |r: &Request<()>| destination_of(r.uri(), r.headers(), 80);
        assert_eq!(dest(&req("/", &["a.test"])), Ok(("a.test".into(), 80)));
        assert_eq!(
            dest(&req("/", &["a.test", "b.test"])),
            Err(HostError::Duplicate)
        );
        assert_eq!(
            dest(&req("/", &["a.test", "a.test"])),
            Err(HostError::Duplicate),
            "even when they agree"
        );
        assert_eq!(
            dest(&req("http://a.test/", &["a.test", "b.test"])),
            Err(HostError::Duplicate),
            "absolute form too"
        );
        assert_eq!(dest(&req("/", &[])), Err(HostError::Missing));
        assert_eq!(dest(&req("/", &[""])), Err(HostError::Missing));
        assert_eq!(
            dest(&req("/", &["b.test@a.test"])),
            Err(HostError::Invalid("***@a.test".into()))
        );
        assert_eq!(
            dest(&req("http://b.test@a.test/", &[])),
            Err(HostError::Invalid("***@a.test".into()))
        );
        assert_eq!(HostError::Duplicate.reason(), "invalid_host");
        assert_eq!(HostError::Missing.reason(), "missing_host");
    }

    #[test]
    fn a_port_left_out_is_the_default_of_the_uris_scheme() {
        let remote: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let plain = ConnInfo::new(remote, Mode::Http, false, 80);
        let tls = ConnInfo::new(remote, Mode::Tunnel, true, 8443);
        let port = |uri: &str, conn: &ConnInfo| {
            let uri: Uri = uri.parse().expect("uri");
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("a.test"));
            let d = default_port(&uri, conn);
            let dest = destination_of(&uri, &h, d).expect("a destination");
            if uri.port().is_none() {
                // Host without a port agrees with the URI: it means the same default.
                assert_eq!(
                    conflicting_host_header(&h, &uri, (&dest.0, dest.1), d),
                    None
                );
            }
            dest.1
        };
        assert_eq!(port("https://a.test/p", &plain), 443);
        assert_eq!(port("http://a.test/p", &plain), 80);
        assert_eq!(port("https://a.test:8443/p", &plain), 8443);
        assert_eq!(port("/p", &plain), 80, "origin form: the listener's");
        assert_eq!(port("/p", &tls), 8443, "origin form: the tunnel's");
        assert_eq!(port("https://a.test/p", &tls), 443);
        assert_eq!(port("http://a.test/p", &tls), 8443, "TLS decides");
    }

    #[test]
    fn upstream_uris() {
        let uri = |tls, host, v6, port, pq: &str| {
            upstream_uri(tls, host, v6, port, pq.parse().expect("pq")).map(|u| u.to_string())
        };
        assert_eq!(
            uri(true, "a.test", false, 443, "/x?y=1&z").ok().as_deref(),
            Some("https://a.test:443/x?y=1&z")
        );
        assert_eq!(
            uri(false, "::1", true, 8080, "/").ok().as_deref(),
            Some("http://[::1]:8080/")
        );
        assert_eq!(
            uri(false, "10.0.0.1", false, 80, "*").ok().as_deref(),
            Some("http://10.0.0.1:80*")
        );
        assert!(uri(false, "a b", false, 80, "/").is_err());
    }
}
