//! Value types shared by several sections: listen addresses, Go durations and
//! header matchers, each parsed once at load.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use regex::Regex;

/// Whether the kernel has IPv6 (an `AF_INET6` socket can be made; a host
/// booted with `ipv6.disable=1` answers `EAFNOSUPPORT`), asked once. Without
/// it, `:port` (the default of `metrics.listen` and of the spec's listeners)
/// listens on IPv4 alone instead of failing to bind `[::]`, as Go's
/// `net.Listen(":9090")` does.
pub fn ipv6_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let made = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None);
        match made {
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                tracing::info!("this kernel has no IPv6: \":port\" listens on IPv4 only");
                false
            }
            _ => true,
        }
    })
}

/// Errors in a single value, reported by the caller with the field's location.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValueError {
    /// Not `host:port`, `:port` or `[v6]:port` with an IP literal host.
    #[error("invalid listen address {0:?}: expected host:port such as \":80\", \"127.0.0.1:9090\" or \"[::1]:53\"")]
    Listen(String),
    /// Not a Go duration such as `30s`, `5m`, `1h30m` or `250ms`.
    #[error("invalid duration {0:?}: expected a number with a unit such as \"30s\", \"5m\", \"1h30m\" or \"250ms\"")]
    Duration(String),
    /// A duration that must be positive is zero or negative.
    #[error("duration {0:?} must be positive")]
    NotPositive(String),
    /// A duration that must not be negative is.
    #[error("duration {0:?} must not be negative")]
    Negative(String),
    /// A `/regex/` entry that does not compile.
    #[error("invalid regex {pattern:?}: {reason}")]
    Regex {
        /// The pattern between the slashes.
        pattern: String,
        /// The compiler's message.
        reason: String,
    },
}

/// A listen address in Go's notation: `:80` (every interface), `0.0.0.0:80`,
/// `127.0.0.1:9092`, `[::1]:53`. `localhost` is accepted as 127.0.0.1. Port 0
/// (any free port) is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenAddr {
    /// `:port`: every interface, IPv4 and IPv6.
    AllInterfaces(u16),
    /// One address.
    Addr(SocketAddr),
}

impl ListenAddr {
    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            ListenAddr::AllInterfaces(p) => *p,
            ListenAddr::Addr(a) => a.port(),
        }
    }

    /// The addresses to bind one socket each: for `:port`, `0.0.0.0:port` and
    /// `[::]:port` (bind the IPv6 one with `IPV6_V6ONLY` set so both fit);
    /// `0.0.0.0:port` alone on a kernel without IPv6 ([`ipv6_available`]).
    pub fn socket_addrs(&self) -> Vec<SocketAddr> {
        self.socket_addrs_with(ipv6_available())
    }

    fn socket_addrs_with(&self, ipv6: bool) -> Vec<SocketAddr> {
        match self {
            ListenAddr::AllInterfaces(p) => {
                let mut out = vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *p)];
                if ipv6 {
                    out.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), *p));
                }
                out
            }
            ListenAddr::Addr(a) => vec![*a],
        }
    }

    /// One address for a single socket: for `:port`, `[::]:port`, which serves
    /// IPv4 too when the socket clears `IPV6_V6ONLY` (as Go does), or
    /// `0.0.0.0:port` on a kernel without IPv6 ([`ipv6_available`]).
    pub fn to_socket_addr(&self) -> SocketAddr {
        self.socket_addr_with(ipv6_available())
    }

    fn socket_addr_with(&self, ipv6: bool) -> SocketAddr {
        match self {
            ListenAddr::AllInterfaces(p) if ipv6 => {
                SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), *p)
            }
            ListenAddr::AllInterfaces(p) => SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), *p),
            ListenAddr::Addr(a) => *a,
        }
    }

    /// The same address with another port (tests bind port 0 then learn the real one).
    pub fn with_port(&self, port: u16) -> ListenAddr {
        match self {
            ListenAddr::AllInterfaces(_) => ListenAddr::AllInterfaces(port),
            ListenAddr::Addr(a) => ListenAddr::Addr(SocketAddr::new(a.ip(), port)),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::Listen(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() {
            return Ok(ListenAddr::AllInterfaces(port));
        }
        let ip: IpAddr = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        {
            IpAddr::V6(v6.parse().map_err(|_| bad())?)
        } else if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V4(host.parse().map_err(|_| bad())?)
        };
        Ok(ListenAddr::Addr(SocketAddr::new(ip, port)))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::AllInterfaces(p) => write!(f, ":{p}"),
            ListenAddr::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// A Go duration (`time.ParseDuration`): a signed sequence of decimal numbers
/// with units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, e.g. `1h30m`, `1.5s`, `-2m`.
/// Stored as nanoseconds, like Go's `time.Duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GoDuration(pub i64);

impl FromStr for GoDuration {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::Duration(s.to_string());
        let (neg, mut rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        if rest == "0" {
            return Ok(GoDuration(0));
        }
        if rest.is_empty() {
            return Err(bad());
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            let (num, tail) = rest.split_at(num_len);
            if num.is_empty() || num == "." || num.matches('.').count() > 1 {
                return Err(bad());
            }
            let unit_len = tail
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(tail.len());
            let (unit, tail) = tail.split_at(unit_len);
            let scale: f64 = match unit {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                _ => return Err(bad()),
            };
            total += num.parse::<f64>().map_err(|_| bad())? * scale;
            rest = tail;
        }
        if total > i64::MAX as f64 {
            return Err(bad());
        }
        // Rounded to whole nanoseconds; f64 is exact for every duration a config plausibly holds.
        let nanos = total.round() as i64;
        Ok(GoDuration(if neg { -nanos } else { nanos }))
    }
}

impl fmt::Display for GoDuration {
    /// Go's canonical form, e.g. `1h30m0s`, `250ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n < 0 {
            f.write_str("-")?;
        }
        let d = Duration::from_nanos(n.unsigned_abs());
        fmt_duration(d, f)
    }
}

fn fmt_duration(d: Duration, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        return match nanos {
            0 => f.write_str("0s"),
            n if n % 1_000_000 == 0 => write!(f, "{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => write!(f, "{}µs", n / 1_000),
            n => write!(f, "{n}ns"),
        };
    }
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        write!(f, "{h}h")?;
    }
    if h > 0 || m > 0 {
        write!(f, "{m}m")?;
    }
    if nanos == 0 {
        write!(f, "{s}s")
    } else {
        let frac = format!("{nanos:09}");
        write!(f, "{s}.{}s", frac.trim_end_matches('0'))
    }
}

/// A duration that must be positive (timeouts, cooldowns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PositiveDuration(Duration);

impl PositiveDuration {
    /// `d` if it is not zero.
    pub fn new(d: Duration) -> Option<Self> {
        (!d.is_zero()).then_some(PositiveDuration(d))
    }

    /// The duration.
    pub fn get(&self) -> Duration {
        self.0
    }
}

impl FromStr for PositiveDuration {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let GoDuration(n) = s.parse()?;
        if n <= 0 {
            return Err(ValueError::NotPositive(s.to_string()));
        }
        Ok(PositiveDuration(Duration::from_nanos(n.unsigned_abs())))
    }
}

impl fmt::Display for PositiveDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_duration(self.0, f)
    }
}

/// A duration that may be zero but not negative (secret `ttl`: 0 = never refresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct NonNegativeDuration(Duration);

impl NonNegativeDuration {
    /// The duration.
    pub fn get(&self) -> Duration {
        self.0
    }

    /// True for zero.
    pub fn is_zero(&self) -> bool {
        self.0.is_zero()
    }
}

impl From<Duration> for NonNegativeDuration {
    fn from(d: Duration) -> Self {
        NonNegativeDuration(d)
    }
}

impl FromStr for NonNegativeDuration {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        let GoDuration(n) = s.parse()?;
        if n < 0 {
            return Err(ValueError::Negative(s.to_string()));
        }
        Ok(NonNegativeDuration(Duration::from_nanos(n.unsigned_abs())))
    }
}

impl fmt::Display for NonNegativeDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_duration(self.0, f)
    }
}

/// A header-name matcher: a literal name (case-insensitive, casing kept for the
/// wire) or a `/regex/` compiled case-insensitively, matched unanchored like Go's
/// `regexp.MatchString` (write `^...$` to anchor).
#[derive(Clone)]
pub enum HeaderMatcher {
    /// A literal header name as written.
    Literal(String),
    /// A compiled `/regex/`.
    Regex(Regex),
}

impl HeaderMatcher {
    /// True when `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HeaderMatcher::Literal(l) => l.eq_ignore_ascii_case(name),
            HeaderMatcher::Regex(r) => r.is_match(name),
        }
    }

    /// The literal name with its written casing, if this is a literal.
    pub fn literal(&self) -> Option<&str> {
        match self {
            HeaderMatcher::Literal(l) => Some(l),
            HeaderMatcher::Regex(_) => None,
        }
    }
}

impl FromStr for HeaderMatcher {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            Some(pattern) if s.len() >= 2 => {
                let err = |reason: String| ValueError::Regex {
                    pattern: pattern.to_string(),
                    reason,
                };
                if pattern.is_empty() {
                    return Err(err("empty pattern matches every header".into()));
                }
                regex::RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .build()
                    .map(HeaderMatcher::Regex)
                    .map_err(|e| err(first_line(&e.to_string())))
            }
            _ => Ok(HeaderMatcher::Literal(s.to_string())),
        }
    }
}

impl HeaderMatcher {
    /// For a literal entry that no header can be named (it matches nothing:
    /// `header_allowlist` strips the header meant, `match_headers` never
    /// swaps it), what is wrong with it and what was probably meant.
    pub(crate) fn never_matches(&self) -> Option<String> {
        let HeaderMatcher::Literal(s) = self else {
            return None;
        };
        if http::HeaderName::from_bytes(s.as_bytes()).is_ok() {
            return None;
        }
        let hint = if s.starts_with('/') {
            "; a regex goes between two slashes, such as \"/^x-trace-.*$/\""
        } else if s.trim_end().ends_with(':') {
            "; write the name without the colon"
        } else {
            " (a header name is one token: letters, digits and !#$%&'*+-.^_`|~)"
        };
        Some(format!(
            "{s:?} is no header name, so this entry matches nothing{hint}"
        ))
    }
}

/// The most informative line of a multi-line regex error.
pub(crate) fn first_line(msg: &str) -> String {
    msg.lines()
        .rev()
        .find(|l| l.starts_with("error:"))
        .unwrap_or(msg)
        .trim_start_matches("error: ")
        .to_string()
}

impl fmt::Debug for HeaderMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderMatcher::Literal(l) => write!(f, "Literal({l:?})"),
            HeaderMatcher::Regex(r) => write!(f, "Regex(/{}/)", r.as_str()),
        }
    }
}

impl PartialEq for HeaderMatcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (HeaderMatcher::Literal(a), HeaderMatcher::Literal(b)) => a == b,
            (HeaderMatcher::Regex(a), HeaderMatcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_interfaces_without_ipv6_is_ipv4_alone() {
        let all = ListenAddr::AllInterfaces(9090);
        let s = |a: Vec<SocketAddr>| a.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            s(all.socket_addrs_with(true)),
            ["0.0.0.0:9090", "[::]:9090"]
        );
        assert_eq!(s(all.socket_addrs_with(false)), ["0.0.0.0:9090"]);
        assert_eq!(all.socket_addr_with(true).to_string(), "[::]:9090");
        assert_eq!(all.socket_addr_with(false).to_string(), "0.0.0.0:9090");
        let one = ListenAddr::Addr("[::1]:53".parse().expect("addr"));
        assert_eq!(
            s(one.socket_addrs_with(false)),
            ["[::1]:53"],
            "named: as written"
        );
        assert!(ipv6_available(), "this test machine has IPv6");
    }
}
