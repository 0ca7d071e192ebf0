//! Destination rules shared by every transform: host globs, CIDRs, methods,
//! path patterns and schemes, as in `allowlist.rules[]`. Parsing happens once,
//! at config load; matching is allocation-free.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;

/// What a rule is matched against: the normalized view of one request.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Lowercase host name without port or trailing dot (an IP literal is kept as text).
    pub host: &'a str,
    /// The host parsed as an IP literal, when it is one.
    pub ip: Option<IpAddr>,
    /// Uppercase HTTP method; empty for host-only (sni-only) requests.
    pub method: &'a str,
    /// The methods the request asks a server to perform instead
    /// (`X-HTTP-Method-Override` and its kin, a `_method` query parameter:
    /// Google APIs, Rack, Laravel and ASP.NET honour them), uppercased: a
    /// rule restricting methods matches only when it allows each of these
    /// as well as `method`.
    pub method_overrides: &'a [String],
    /// Path without the query; empty for host-only requests.
    pub path: &'a str,
    /// The request's scheme: `https` when the proxy forwards it over TLS.
    pub scheme: Scheme,
}

/// The target for an HTTPS request to `host` (parsed as an IP when it is one), for tests.
#[cfg(test)]
pub(crate) fn target<'a>(host: &'a str, method: &'a str, path: &'a str) -> Target<'a> {
    Target {
        host,
        ip: host.parse().ok(),
        method,
        method_overrides: &[],
        path,
        scheme: Scheme::Https,
    }
}

/// The scheme of a request, as `rules[].schemes` names it.
///
/// A request is `https` when the proxy forwards it over TLS: it reached the
/// proxy over TLS (`https_listen`, a MITM'd CONNECT or SOCKS5 tunnel, an
/// intercepted TLS connection, an sni-only connection), or it is an
/// absolute-form `https://` request (whose real credential then goes
/// upstream encrypted; the client leg carries only what the client sent).
/// Everything else is `http`. A WebSocket upgrade has the scheme of the
/// request that carries it: `wss://` is `https`, `ws://` is `http`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTP over TLS.
    Https,
}

impl Scheme {
    /// `Https` when the request goes over TLS, else `Http`.
    pub fn of_tls(tls: bool) -> Self {
        if tls {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }

    /// The lowercase name, as written in a config.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl FromStr for Scheme {
    type Err = RuleError;
    /// `http` or `https`, in any case.
    fn from_str(s: &str) -> Result<Self, RuleError> {
        if s.eq_ignore_ascii_case("http") {
            Ok(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Ok(Scheme::Https)
        } else {
            Err(RuleError::Scheme(s.to_string()))
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The schemes a rule matches (`schemes:`): both unless the rule narrows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemeSet {
    http: bool,
    https: bool,
}

impl Default for SchemeSet {
    /// Both schemes: a rule without `schemes:`.
    fn default() -> Self {
        SchemeSet {
            http: true,
            https: true,
        }
    }
}

impl SchemeSet {
    /// The set of a `schemes:` list: omitted means both; an empty list is
    /// refused, since the rule would match nothing.
    pub fn parse(list: Option<Vec<Scheme>>) -> Result<Self, RuleError> {
        let Some(list) = list else {
            return Ok(SchemeSet::default());
        };
        if list.is_empty() {
            return Err(RuleError::NoSchemes);
        }
        Ok(SchemeSet {
            http: list.contains(&Scheme::Http),
            https: list.contains(&Scheme::Https),
        })
    }

    /// True when `scheme` is in the set.
    pub fn matches(self, scheme: Scheme) -> bool {
        match scheme {
            Scheme::Http => self.http,
            Scheme::Https => self.https,
        }
    }

    /// True when some scheme is in both sets.
    pub fn intersects(self, other: SchemeSet) -> bool {
        (self.http && other.http) || (self.https && other.https)
    }
}

/// Errors in a rule or pattern, reported with the config location by the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RuleError {
    /// A host pattern that is empty or holds characters no host name can have.
    #[error("invalid host pattern {0:?}")]
    Host(String),
    /// An internationalized label with no ASCII (IDNA) form, which no client
    /// could send.
    #[error("host {pattern:?}: label {label:?} has no ASCII (IDNA) form: {why}")]
    Idna {
        /// The pattern as written.
        pattern: String,
        /// The label at fault.
        label: String,
        /// Why, naming the character at fault when one is.
        why: String,
    },
    /// A host pattern with a port (`host:8080`): patterns name hosts only, so
    /// it could never match.
    #[error("host pattern {0:?} holds a port; patterns match host names (and IP addresses), never ports")]
    Port(String),
    /// A host pattern with an empty label: it could never match a host.
    #[error("host pattern {pattern:?} has an empty label{hint}")]
    EmptyLabel {
        /// The pattern as written.
        pattern: String,
        /// What was probably meant, when that is clear (starts with "; ").
        hint: String,
    },
    /// A glob of IPv4 addresses (`10.0.*`): host patterns other than a bare
    /// `*` never match an IP literal, so it could never match.
    #[error(
        "host pattern {pattern:?} is a pattern of IP addresses, which host patterns never match \
         (an IP literal matches a bare \"*\", its exact address, or a CIDR); write a CIDR{hint}"
    )]
    AddressGlob {
        /// The pattern as written.
        pattern: String,
        /// The CIDR it probably means, when that is clear (starts with " ").
        hint: String,
    },
    /// A path pattern that does not start with '/'.
    #[error("path pattern {0:?} must start with '/'")]
    Path(String),
    /// Not a CIDR (a bare IP is not accepted: write 10.0.0.1/32).
    #[error("invalid CIDR {0:?}: expected address/prefix such as 10.0.0.0/8")]
    Cidr(String),
    /// Not an HTTP method token.
    #[error("invalid HTTP method {0:?}")]
    Method(String),
    /// Both or neither of host and cidr.
    #[error("a rule needs exactly one of 'host' or 'cidr'")]
    HostXorCidr,
    /// A scheme other than `http` or `https`.
    #[error("invalid scheme {0:?}: expected http or https")]
    Scheme(String),
    /// `schemes: []`.
    #[error("an empty 'schemes' list matches nothing: list http, https or both, or leave it out for both")]
    NoSchemes,
}

/// True for a glob whose labels are all numbers or `*` (`10.0.*`,
/// `192.168.*.*`): a pattern of IPv4 addresses, not of names (no top-level
/// domain is all digits).
fn is_address_glob(p: &str) -> bool {
    let labels: Vec<&str> = p.split('.').collect();
    labels.len() > 1
        && labels
            .iter()
            .all(|l| l.chars().all(|c| c.is_ascii_digit() || c == '*'))
        && labels.iter().any(|l| l.chars().any(|c| c.is_ascii_digit()))
}

/// The CIDR an address glob of whole leading octets means: `10.0.*` and
/// `10.0.*.*` are `10.0.0.0/16`.
fn cidr_of_glob(p: &str) -> Option<String> {
    let labels: Vec<&str> = p.split('.').collect();
    let fixed: Vec<u8> = labels
        .iter()
        .take_while(|l| **l != "*")
        .map(|l| l.parse().ok())
        .collect::<Option<_>>()?;
    let rest_is_wild = labels[fixed.len()..].iter().all(|l| *l == "*");
    if fixed.is_empty() || fixed.len() > 3 || labels.len() > 4 || !rest_is_wild {
        return None;
    }
    let mut octets = fixed.clone();
    octets.resize(4, 0);
    Some(format!(
        "{}.{}.{}.{}/{}",
        octets[0],
        octets[1],
        octets[2],
        octets[3],
        fixed.len() * 8
    ))
}

/// Normalizes a host for matching: lowercase, no port, no trailing dot, no IPv6 brackets.
pub fn normalize_host(raw: &str) -> String {
    let h = raw.trim();
    let h = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if h.matches(':').count() == 1 {
        h.split(':').next().unwrap_or(h)
    } else {
        h
    };
    h.trim_end_matches('.').to_ascii_lowercase()
}

/// A hostname glob: `*` alone matches every host, `*.x.com` matches x.com and
/// every subdomain, and any other `*` matches any run of characters.
///
/// IP literals are matched by `*` (the catch-all) and by an exact pattern
/// naming that address, never by another glob: `127.0.0.*` or `*.5` would
/// otherwise match addresses as text, which is what CIDRs (`cidrs`,
/// `rules[].cidr`) are for; see [`HostPattern::matches_target`].
#[derive(Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`
    Any,
    /// An exact name.
    Exact(String),
    /// `*.suffix`: the apex and every subdomain.
    Subdomains(String),
    /// Any other glob, split on `*`.
    Glob(Vec<String>),
}

impl HostPattern {
    /// True when the target's host matches: as [`HostPattern::matches`] for
    /// a name; for an IP literal, only `*` and an exact pattern do.
    pub fn matches_target(&self, t: &Target<'_>) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(e) => e == t.host,
            _ if t.ip.is_some() => false,
            _ => self.matches(t.host),
        }
    }

    /// The pattern probably meant by a glob whose leading `*` is glued to a
    /// dotted name (`*example.com`): `*.example.com`. As written it is a
    /// glob whose `*` matches any run of characters, so it matches every
    /// name that ends in the text after it, `badexample.com` (a domain
    /// anyone can register) as well as `example.com` and its subdomains.
    /// `None` for every other pattern (`*-api.example.com`, `api*.test`).
    pub fn missing_dot(&self) -> Option<String> {
        let HostPattern::Glob(parts) = self else {
            return None;
        };
        match parts.as_slice() {
            [first, rest]
                if first.is_empty()
                    && rest.starts_with(|c: char| c.is_ascii_alphanumeric())
                    && rest.contains('.') =>
            {
                Some(format!("*.{rest}"))
            }
            _ => None,
        }
    }

    /// True when `host` (already normalized, a name rather than an IP
    /// literal) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Any => true,
            HostPattern::Exact(e) => e == host,
            HostPattern::Subdomains(apex) => {
                host == apex
                    || (host.len() > apex.len()
                        && host.ends_with(apex.as_str())
                        && host.as_bytes()[host.len() - apex.len() - 1] == b'.')
            }
            HostPattern::Glob(parts) => glob_match(parts, host),
        }
    }
}

/// `host` lowercased, with each internationalized label in its ASCII form
/// (`bücher.example` → `xn--bcher-kva.example`), as clients send it in SNI
/// and Host: UTS #46 processing (the `idna` crate's `domain_to_ascii`, as
/// browsers and the `url` crate do), which also maps compatibility forms
/// (fullwidth `ｅｘａｍｐｌｅ` is `example`) and drops invisible characters
/// (a zero-width space) as a browser would. A label that has no ASCII form,
/// or that mixes non-ASCII characters with a glob `*`, is refused, naming
/// the label and why.
pub fn ascii_host(host: &str) -> Result<String, RuleError> {
    if host.is_ascii() {
        return Ok(host.to_ascii_lowercase());
    }
    let refuse = |label: &str, why: String| RuleError::Idna {
        pattern: host.to_string(),
        label: label.to_string(),
        why,
    };
    let labels: Result<Vec<String>, RuleError> = host
        .split('.')
        .map(|label| {
            if label.is_ascii() {
                Ok(label.to_ascii_lowercase())
            } else if label.contains('*') {
                Err(refuse(
                    label,
                    "a glob '*' cannot be part of an internationalized label; write the \
                     label's ASCII form (xn--...) around the '*', or a '*' label of its own"
                        .into(),
                ))
            } else {
                match idna::domain_to_ascii(label) {
                    Ok(a) if a.chars().all(host_char) => Ok(a),
                    _ => Err(refuse(label, idna_failure(label))),
                }
            }
        })
        .collect();
    Ok(labels?.join("."))
}

/// A character of a host name's ASCII form (a label's: IDNA maps the
/// ideographic and fullwidth full stops to '.', so a dot too).
fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Why `label` has no ASCII form: the first character IDNA refuses on its
/// own, or maps to what no host name holds (the no-break space to a space),
/// named; or the rule the label as a whole breaks.
fn idna_failure(label: &str) -> String {
    let refused = label.chars().find(|c| {
        !c.is_ascii()
            && !idna::domain_to_ascii(c.encode_utf8(&mut [0; 4]))
                .is_ok_and(|a| a.chars().all(host_char))
    });
    match refused {
        Some(c) => {
            let name = unicode_names2::name(c).map_or(String::new(), |n| format!(" {n}"));
            format!("U+{:04X}{name} is not allowed in a host name", c as u32)
        }
        None => "its characters are not a valid internationalized name (UTS #46: a label \
                 must not start with a combining mark, and right-to-left text must follow \
                 the bidi rule)"
            .into(),
    }
}

impl FromStr for HostPattern {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        // One trailing dot is the root (`example.com.`); more are empty labels.
        let written = s.trim();
        let p = ascii_host(written.strip_suffix('.').unwrap_or(written))?;
        if p == "*" && written != "*" {
            // `*.` read as "every name under the root" is every host: what
            // `*.${DOMAIN}` with an empty variable makes, allowing all.
            return Err(RuleError::EmptyLabel {
                pattern: s.to_string(),
                hint: " (nothing follows \"*.\"); write \"*\" if every host is meant".into(),
            });
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*' | ':');
        if p.is_empty() || !p.chars().all(valid) {
            return Err(RuleError::Host(s.to_string()));
        }
        if p == "*" {
            return Ok(HostPattern::Any);
        }
        // A ':' belongs to an IPv6 literal only.
        if p.contains(':') && p.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(RuleError::Port(s.to_string()));
        }
        if p.split('.').any(str::is_empty) {
            // squid's dstdomain and NO_PROXY read ".example.com" as the
            // domain and its subdomains; here that is "*.example.com".
            let hint = match p.strip_prefix('.') {
                Some(rest) if !rest.is_empty() && !rest.contains("..") => {
                    format!("; for {rest} and its subdomains write \"*.{rest}\"")
                }
                _ => " (two dots in a row)".to_string(),
            };
            return Err(RuleError::EmptyLabel {
                pattern: s.to_string(),
                hint,
            });
        }
        if p.contains('*') && is_address_glob(&p) {
            return Err(RuleError::AddressGlob {
                pattern: s.to_string(),
                hint: cidr_of_glob(&p).map_or(String::new(), |c| format!(" such as {c}")),
            });
        }
        if let Some(apex) = p.strip_prefix("*.") {
            if !apex.contains('*') && !apex.is_empty() {
                return Ok(HostPattern::Subdomains(apex.to_string()));
            }
        }
        if p.contains('*') {
            return Ok(HostPattern::Glob(
                p.split('*').map(str::to_string).collect(),
            ));
        }
        Ok(HostPattern::Exact(p))
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(e) => f.write_str(e),
            HostPattern::Subdomains(a) => write!(f, "*.{a}"),
            HostPattern::Glob(parts) => f.write_str(&parts.join("*")),
        }
    }
}

impl fmt::Debug for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostPattern({self})")
    }
}

/// A path pattern: must start with `/`; `*` matches any run of characters, `/` included.
#[derive(Clone, PartialEq, Eq)]
pub struct PathPattern {
    parts: Vec<String>,
}

impl PathPattern {
    /// True when `path` matches.
    pub fn matches(&self, path: &str) -> bool {
        glob_match(&self.parts, path)
    }

    /// True when `lowered`, a path in ASCII lowercase, matches the pattern
    /// read in ASCII lowercase too.
    fn matches_lowered(&self, lowered: &str) -> bool {
        let parts: Vec<String> = self.parts.iter().map(|p| p.to_ascii_lowercase()).collect();
        glob_match(&parts, lowered)
    }
}

impl FromStr for PathPattern {
    type Err = RuleError;
    fn from_str(s: &str) -> Result<Self, RuleError> {
        if !s.starts_with('/') {
            return Err(RuleError::Path(s.to_string()));
        }
        Ok(PathPattern {
            parts: s.split('*').map(str::to_string).collect(),
        })
    }
}

impl fmt::Debug for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPattern({})", self.parts.join("*"))
    }
}

/// Matches `text` against a glob split on `*` (`parts.len() - 1` wildcards).
fn glob_match(parts: &[String], text: &str) -> bool {
    match parts {
        [] => text.is_empty(),
        [only] => only == text,
        [first, middle @ .., last] => {
            if text.len() < first.len() + last.len()
                || !text.starts_with(first.as_str())
                || !text.ends_with(last.as_str())
            {
                return false;
            }
            let mut rest = &text[first.len()..text.len() - last.len()];
            for part in middle {
                match rest.find(part.as_str()) {
                    Some(i) => rest = &rest[i + part.len()..],
                    None => return false,
                }
            }
            true
        }
    }
}

/// The ways servers read `path`, in ASCII lowercase: as sent,
/// percent-decoded, with runs of `/` collapsed, each also with `;`
/// parameters cut from its segments.
fn path_readings(path: &str) -> Vec<String> {
    let decoded = percent_decode(path);
    let collapsed = collapse_slashes(&decoded);
    let mut out = Vec::with_capacity(6);
    for p in [path, decoded.as_str(), collapsed.as_str()] {
        for q in [p.to_ascii_lowercase(), cut_params(p).to_ascii_lowercase()] {
            if !out.contains(&q) {
                out.push(q);
            }
        }
    }
    out
}

/// `path` with each segment's `;` parameters cut (`/mcp;jsessionid=1/x` →
/// `/mcp/x`).
fn cut_params(path: &str) -> String {
    if !path.contains(';') {
        return path.to_string();
    }
    path.split('/')
        .map(|seg| seg.split(';').next().unwrap_or(seg))
        .collect::<Vec<_>>()
        .join("/")
}

/// `path` percent-decoded once, leniently (a `%` without two hex digits
/// stays); bytes that are not UTF-8 become U+FFFD.
fn percent_decode(path: &str) -> String {
    if !path.contains('%') {
        return path.to_string();
    }
    String::from_utf8_lossy(&percent_encoding::percent_decode_str(path).collect::<Vec<u8>>())
        .into_owned()
}

/// `path` with each run of `/` made one.
fn collapse_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && out.ends_with('/')) {
            out.push(c);
        }
    }
    out
}

/// Parses a CIDR strictly: a bare address is refused.
pub fn parse_cidr(s: &str) -> Result<IpNet, RuleError> {
    if !s.contains('/') {
        return Err(RuleError::Cidr(s.to_string()));
    }
    s.trim()
        .parse::<IpNet>()
        .map_err(|_| RuleError::Cidr(s.to_string()))
}

/// Unmaps IPv4-mapped IPv6 addresses so v4 CIDRs apply to them.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The allowed methods of a rule: all, or a list of uppercase tokens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum MethodSet {
    /// Omitted, or `["*"]`.
    #[default]
    All,
    /// Only these, as written.
    Only(Vec<String>),
}

impl MethodSet {
    /// Parses a `methods:` list: omitted, empty or containing `*` means all.
    pub fn parse(list: Option<Vec<String>>) -> Result<Self, RuleError> {
        let Some(list) = list else {
            return Ok(MethodSet::All);
        };
        if list.is_empty() || list.iter().any(|m| m == "*") {
            return Ok(MethodSet::All);
        }
        let mut out = Vec::with_capacity(list.len());
        for m in list {
            // Any HTTP token (RFC 9110 §9.1): WebDAV's and UPnP's methods too.
            if http::Method::from_bytes(m.as_bytes()).is_err() {
                return Err(RuleError::Method(m));
            }
            out.push(m);
        }
        Ok(MethodSet::Only(out))
    }

    /// True when `method` is allowed. A host-only request (empty method) matches only `All`.
    /// Methods are case-sensitive (RFC 9110 §9.1), and the request goes upstream as it was
    /// sent: a `get` passed by a `GET` rule would reach a server that may route it as
    /// something other than a GET. So a request's method matches an entry spelled the same,
    /// or, when the request's method has no lowercase letter (`GET`, `M-SEARCH`), an entry
    /// spelled in another case (`get`, `post` in a config mean `GET`, `POST`).
    pub fn matches(&self, method: &str) -> bool {
        match self {
            MethodSet::All => true,
            MethodSet::Only(list) => {
                let canonical = !method.bytes().any(|b| b.is_ascii_lowercase());
                list.iter()
                    .any(|m| m == method || (canonical && m.eq_ignore_ascii_case(method)))
            }
        }
    }
}

/// Where a rule points: a host glob or a CIDR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleTarget {
    /// `host:`
    Host(HostPattern),
    /// `cidr:`, matched against IP-literal hosts only.
    Cidr(IpNet),
}

/// One entry of `rules[]`, as used by allowlist and every scoped transform.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawRule")]
pub struct Rule {
    /// Host or CIDR.
    pub target: RuleTarget,
    /// Allowed methods.
    pub methods: MethodSet,
    /// Allowed paths; empty means all.
    pub paths: Vec<PathPattern>,
    /// Allowed schemes (both by default).
    pub schemes: SchemeSet,
}

/// The YAML shape of a rule, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    host: Option<String>,
    cidr: Option<String>,
    methods: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    schemes: Option<Vec<String>>,
}

impl TryFrom<RawRule> for Rule {
    type Error = RuleError;
    fn try_from(raw: RawRule) -> Result<Self, RuleError> {
        let target = match (raw.host, raw.cidr) {
            (Some(h), None) => RuleTarget::Host(h.parse()?),
            (None, Some(c)) => RuleTarget::Cidr(parse_cidr(&c)?),
            _ => return Err(RuleError::HostXorCidr),
        };
        let paths = raw
            .paths
            .unwrap_or_default()
            .iter()
            .map(|p| p.parse())
            .collect::<Result<Vec<PathPattern>, _>>()?;
        let schemes = raw
            .schemes
            .map(|list| list.iter().map(|s| s.parse()).collect())
            .transpose()?;
        Ok(Rule {
            target,
            methods: MethodSet::parse(raw.methods)?,
            paths,
            schemes: SchemeSet::parse(schemes)?,
        })
    }
}

impl Rule {
    /// True when the target (host or IP) matches, ignoring method, path and
    /// scheme (a tunnel's target, whose inner requests are checked in full).
    pub fn matches_host(&self, t: &Target<'_>) -> bool {
        match &self.target {
            RuleTarget::Host(h) => h.matches_target(t),
            RuleTarget::Cidr(net) => t.ip.is_some_and(|ip| net.contains(&canonical_ip(ip))),
        }
    }

    /// True when host, scheme, method and path all match, for a scope that
    /// grants something (admits the request, gives it a credential): the
    /// rule must allow the request's method and every method it asks a
    /// server to perform instead ([`Target::method_overrides`]). A host-only
    /// request (sni-only mode) matches only rules without method or path
    /// restrictions.
    pub fn matches(&self, t: &Target<'_>) -> bool {
        self.schemes.matches(t.scheme)
            && self.matches_host(t)
            && self.methods.matches(t.method)
            && t.method_overrides.iter().all(|m| self.methods.matches(m))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(t.path)))
    }

    /// Whether the rule allows a method some server may perform for `t`,
    /// for a scope that decides what is *inspected*: the request's method or
    /// any override it carries, in any letter case (a server that reads
    /// `post` as POST, or honours `X-HTTP-Method-Override`, would otherwise
    /// get a request no inspection saw).
    fn allows_any_method(&self, t: &Target<'_>) -> bool {
        let allows = |m: &str| {
            self.methods.matches(m)
                || (m.bytes().any(|b| b.is_ascii_lowercase())
                    && self.methods.matches(&m.to_ascii_uppercase()))
        };
        allows(t.method) || t.method_overrides.iter().any(|m| allows(m))
    }
}

/// A scope made of rules: empty means "everything".
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Scope(pub Vec<Rule>);

impl Scope {
    /// True when the scope is empty or any rule matches.
    pub fn applies(&self, t: &Target<'_>) -> bool {
        self.0.is_empty() || self.0.iter().any(|r| r.matches(t))
    }

    /// True when a rule matches `t` with its path as sent or as some server
    /// reads it: percent-decoded, with runs of `/` collapsed, with `;`
    /// path parameters cut from each segment (servlet containers, Spring),
    /// and with letters in either case (Express, ASP.NET Core route without
    /// regard to case). For a scope that decides what is *inspected* (an
    /// MCP server's paths, a judge's rules): matching more spellings only
    /// means inspecting more requests, matching fewer would let `POST /MCP`
    /// or `/%6Dcp` reach the server uninspected. An empty scope matches
    /// nothing here.
    ///
    /// Methods are matched the same way: a rule covers a request when it
    /// allows its method or any method the request asks a server to perform
    /// instead, in any letter case (`Rule::allows_any_method`).
    pub fn covers_as_servers_read(&self, t: &Target<'_>) -> bool {
        let mut readings: Option<Vec<String>> = None;
        self.0.iter().any(|r| {
            if !(r.schemes.matches(t.scheme) && r.matches_host(t) && r.allows_any_method(t)) {
                return false;
            }
            if r.paths.is_empty() || r.paths.iter().any(|p| p.matches(t.path)) {
                return true;
            }
            // Readings are made only for a rule whose host, method and
            // scheme match.
            let readings = readings.get_or_insert_with(|| path_readings(t.path));
            readings
                .iter()
                .any(|p| r.paths.iter().any(|pat| pat.matches_lowered(p)))
        })
    }

    /// For a scope that decides what is inspected or filtered (a judge, a
    /// `grpc` policy server, `header_allowlist`, `annotate`,
    /// `body_capture`): empty, or [`Scope::covers_as_servers_read`].
    pub fn inspects(&self, t: &Target<'_>) -> bool {
        self.0.is_empty() || self.covers_as_servers_read(t)
    }

    /// False only when no request can be in both scopes: no host can match a
    /// rule of each whose schemes intersect (conservative: globs, methods and
    /// paths are taken to overlap).
    pub fn may_overlap(&self, other: &Scope) -> bool {
        if self.0.is_empty() || other.0.is_empty() {
            return true;
        }
        self.0.iter().any(|a| {
            other.0.iter().any(|b| {
                a.schemes.intersects(b.schemes) && targets_may_overlap(&a.target, &b.target)
            })
        })
    }
}

/// Whether one host or IP could match both targets.
fn targets_may_overlap(a: &RuleTarget, b: &RuleTarget) -> bool {
    use HostPattern::{Any, Exact, Glob, Subdomains};
    match (a, b) {
        (RuleTarget::Cidr(x), RuleTarget::Cidr(y)) => {
            x.contains(&y.network()) || y.contains(&x.network())
        }
        // Globs other than `*` match no IP literal (see HostPattern).
        (RuleTarget::Cidr(net), RuleTarget::Host(h))
        | (RuleTarget::Host(h), RuleTarget::Cidr(net)) => match h {
            Any => true,
            Exact(e) => e
                .parse::<IpAddr>()
                .is_ok_and(|ip| net.contains(&canonical_ip(ip))),
            Subdomains(_) | Glob(_) => false,
        },
        (RuleTarget::Host(x), RuleTarget::Host(y)) => match (x, y) {
            (Any, _) | (_, Any) | (Glob(_), _) | (_, Glob(_)) => true,
            (Exact(e), p) | (p, Exact(e)) => p.matches_target(&Target {
                host: e,
                ip: e.parse().ok(),
                method: "",
                method_overrides: &[],
                path: "",
                scheme: Scheme::Https,
            }),
            (Subdomains(s), Subdomains(t)) => {
                Subdomains(s.clone()).matches(t) || Subdomains(t.clone()).matches(s)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::target as t;
    use super::*;
    use proptest::prelude::*;

    fn scope(hosts: &[&str]) -> Scope {
        Scope(
            hosts
                .iter()
                .map(|h| {
                    let target = match h.strip_prefix("cidr:") {
                        Some(c) => RuleTarget::Cidr(parse_cidr(c).expect("cidr")),
                        None => RuleTarget::Host(h.parse().expect("host")),
                    };
                    Rule {
                        target,
                        methods: MethodSet::All,
                        paths: vec![],
                        schemes: SchemeSet::default(),
                    }
                })
                .collect(),
        )
    }

    #[test]
    fn scopes_overlap_unless_no_host_can_be_in_both() {
        for (a, b, overlap) in [
            (&["api.openai.com"][..], &["api.github.com"][..], false),
            (&["api.openai.com"][..], &["api.openai.com"][..], true),
            (&["*.openai.com"][..], &["api.openai.com"][..], true),
            (&["*.openai.com"][..], &["openai.com"][..], true),
            (&["*.openai.com"][..], &["*.api.openai.com"][..], true),
            (&["*.openai.com"][..], &["*.github.com"][..], false),
            (&["api-*.test"][..], &["x.example"][..], true),
            (&["*"][..], &["x.example"][..], true),
            (&["cidr:10.0.0.0/8"][..], &["cidr:10.1.0.0/16"][..], true),
            (
                &["cidr:10.0.0.0/8"][..],
                &["cidr:192.168.0.0/16"][..],
                false,
            ),
            (&["cidr:10.0.0.0/8"][..], &["10.2.3.4"][..], true),
            (&["cidr:10.0.0.0/8"][..], &["api.test"][..], false),
            (&[][..], &["api.test"][..], true),
            (&["a.test", "b.test"][..], &["c.test", "b.test"][..], true),
        ] {
            assert_eq!(scope(a).may_overlap(&scope(b)), overlap, "{a:?} / {b:?}");
            assert_eq!(scope(b).may_overlap(&scope(a)), overlap, "{b:?} / {a:?}");
        }
    }

    #[test]
    fn host_patterns() {
        let sub: HostPattern = "*.Anthropic.com".parse().expect("valid");
        assert!(sub.matches("anthropic.com"));
        assert!(sub.matches("api.anthropic.com"));
        assert!(sub.matches("a.b.anthropic.com"));
        assert!(!sub.matches("evilanthropic.com"));
        assert!(!sub.matches("anthropic.com.evil.net"));
        let any: HostPattern = "*".parse().expect("valid");
        assert!(any.matches("whatever.example"));
        let glob: HostPattern = "api-*.example.com".parse().expect("valid");
        assert!(glob.matches("api-eu.example.com"));
        assert!(!glob.matches("www.example.com"));
        assert_eq!(
            "bad host!".parse::<HostPattern>(),
            Err(RuleError::Host("bad host!".into()))
        );
    }

    #[test]
    fn a_host_pattern_with_an_empty_label_is_refused_with_what_was_meant() {
        let e = ".example.com"
            .parse::<HostPattern>()
            .expect_err("never matches");
        assert_eq!(
            e.to_string(),
            "host pattern \".example.com\" has an empty label; for example.com and its \
             subdomains write \"*.example.com\""
        );
        for p in ["foo..com", "*..com", "api.example..com"] {
            let e = p.parse::<HostPattern>().expect_err(p);
            assert_eq!(
                e.to_string(),
                format!("host pattern {p:?} has an empty label (two dots in a row)")
            );
        }
        // A trailing dot is the root, not an empty label; IPv6 literals have none.
        assert_eq!(
            "example.com.".parse::<HostPattern>(),
            Ok(HostPattern::Exact("example.com".into()))
        );
        assert!("::1".parse::<HostPattern>().is_ok());
        // `*.` is not a way to write `*` (an empty template variable makes it).
        assert!("*..".parse::<HostPattern>().is_err());
        for p in ["*.", " *. "] {
            let e = p.parse::<HostPattern>().expect_err(p);
            assert_eq!(
                e.to_string(),
                format!(
                    "host pattern {p:?} has an empty label (nothing follows \"*.\"); \
                     write \"*\" if every host is meant"
                )
            );
        }
        assert_eq!("*".parse::<HostPattern>(), Ok(HostPattern::Any));
        let e = "example.com.."
            .parse::<HostPattern>()
            .expect_err("two dots");
        assert!(e.to_string().contains("two dots in a row"), "{e}");
    }

    /// What `*example.com` (the dot of `*.example.com` left out) matches:
    /// any name ending in `example.com`, so `badexample.com` too; the
    /// pattern meant is named by `missing_dot`, and only for such globs.
    #[test]
    fn a_leading_star_without_its_dot_matches_other_domains() {
        let glued: HostPattern = "*example.com".parse().expect("a valid glob");
        for host in [
            "example.com",
            "api.example.com",
            "badexample.com",
            "evil-example.com",
        ] {
            assert!(glued.matches(host), "{host}");
        }
        assert_eq!(glued.missing_dot().as_deref(), Some("*.example.com"));
        let meant: HostPattern = "*.example.com".parse().expect("valid");
        assert!(meant.matches("api.example.com") && !meant.matches("badexample.com"));
        for p in [
            "*.example.com",
            "*-api.example.com",
            "api*.test",
            "*",
            "*com",
            "a*b.test",
            "*a*.test",
        ] {
            let pattern: HostPattern = p.parse().expect(p);
            assert_eq!(pattern.missing_dot(), None, "{p}");
        }
        let p: HostPattern = "*Example.COM.".parse().expect("valid");
        assert_eq!(p.missing_dot().as_deref(), Some("*.example.com"));
    }

    #[test]
    fn a_host_pattern_with_a_port_is_refused() {
        for p in [
            "localhost:18000",
            "api.test:443",
            "*.api.test:8080",
            "fd00::1:x",
        ] {
            assert_eq!(
                p.parse::<HostPattern>(),
                Err(RuleError::Port(p.into())),
                "{p}"
            );
        }
        assert_eq!(
            "fd00::1".parse::<HostPattern>(),
            Ok(HostPattern::Exact("fd00::1".into()))
        );
    }

    #[test]
    fn normalize() {
        assert_eq!(normalize_host("API.Example.com:443"), "api.example.com");
        assert_eq!(normalize_host("example.com."), "example.com");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("::1"), "::1");
    }

    #[test]
    fn paths_and_methods() {
        let rule: Rule =
            serde_yaml_ng::from_str("host: api.openai.com\nmethods: [post]\npaths: [\"/v1/*\"]")
                .expect("valid rule");
        assert!(rule.matches(&t("api.openai.com", "POST", "/v1/chat/completions")));
        assert!(!rule.matches(&t("api.openai.com", "GET", "/v1/models")));
        assert!(!rule.matches(&t("api.openai.com", "POST", "/v2/x")));
        assert!(
            !rule.matches(&t("api.openai.com", "", "")),
            "host-only request vs method rule"
        );
    }

    #[test]
    fn a_scope_covers_the_paths_servers_read_as_its_own() {
        let rule: Rule = serde_yaml_ng::from_str(
            "host: mcp.test\nmethods: [post]\npaths: [\"/MCP\", \"/v1/*/tools\"]",
        )
        .expect("valid rule");
        let scope = Scope(vec![rule]);
        for path in [
            "/MCP",
            "/mcp",
            "/%6dcp",
            "/mcp;jsessionid=1",
            "//Mcp",
            "/V1/x/TOOLS",
            "/v1/x;a=b/tools;c",
            "/v1%2Fx%2Ftools",
        ] {
            assert!(
                scope.covers_as_servers_read(&t("mcp.test", "POST", path)),
                "{path}"
            );
        }
        for path in ["/mcpx", "/mc;p", "/v1/tools", "/v2/x/tools"] {
            assert!(
                !scope.covers_as_servers_read(&t("mcp.test", "POST", path)),
                "{path}"
            );
        }
        // Host, method and scheme are matched as they are.
        assert!(!scope.covers_as_servers_read(&t("mcp.test", "GET", "/mcp")));
        assert!(!scope.covers_as_servers_read(&t("other.test", "POST", "/MCP")));
        assert!(!Scope::default().covers_as_servers_read(&t("mcp.test", "POST", "/mcp")));
    }

    #[test]
    fn methods_are_any_http_token() {
        let set = MethodSet::parse(Some(vec!["M-SEARCH".into(), "x_custom".into()]))
            .expect("tokens with - and _ are methods");
        assert!(set.matches("M-SEARCH") && set.matches("X_CUSTOM"));
        assert!(set.matches("x_custom"), "as written");
        assert!(!set.matches("GET"));
        // A request's method in another case than the entry's is another method, unless
        // the request's is all capitals.
        let get = MethodSet::parse(Some(vec!["GET".into()])).expect("GET");
        assert!(get.matches("GET"));
        assert!(!get.matches("get") && !get.matches("gEt"));
        let lower = MethodSet::parse(Some(vec!["get".into()])).expect("get");
        assert!(lower.matches("GET") && lower.matches("get"));
        assert!(!lower.matches("Get"));
        for bad in ["GET POST", "", "G(ET", "GÉT"] {
            assert!(
                matches!(
                    MethodSet::parse(Some(vec![bad.into()])),
                    Err(RuleError::Method(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn internationalized_names_match_their_ascii_form() {
        for (pattern, host) in [
            ("bücher.example", "xn--bcher-kva.example"),
            ("*.bücher.example", "shop.xn--bcher-kva.example"),
            ("BÜCHER.example.", "xn--bcher-kva.example"),
        ] {
            let p: HostPattern = pattern.parse().expect(pattern);
            assert!(p.matches(host), "{pattern} must match {host}: {p:?}");
        }
        for bad in ["bü*.example", "a\u{0}b.example"] {
            assert!(bad.parse::<HostPattern>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rule_errors() {
        let e = serde_yaml_ng::from_str::<Rule>("host: a.com\ncidr: 10.0.0.0/8")
            .expect_err("must be refused");
        assert!(e.to_string().contains("exactly one"), "{e}");
        let e = serde_yaml_ng::from_str::<Rule>("cidr: 10.0.0.1").expect_err("must be refused");
        assert!(e.to_string().contains("invalid CIDR"), "{e}");
        let e = serde_yaml_ng::from_str::<Rule>("host: a.com\npaths: [v1]")
            .expect_err("must be refused");
        assert!(e.to_string().contains("must start with '/'"), "{e}");
        let e = serde_yaml_ng::from_str::<Rule>("host: a.com\nmethod: [GET]")
            .expect_err("must be refused");
        assert!(e.to_string().contains("unknown field"), "{e}");
    }

    #[test]
    fn ip_literals_match_the_catch_all_and_exact_patterns_only() {
        let rule = |host: &str| -> Rule {
            serde_yaml_ng::from_str(&format!("host: {host:?}")).expect("valid")
        };
        let ip = t("127.0.0.5", "GET", "/");
        assert!(rule("*").matches(&ip), "a bare * is the catch-all");
        assert!(rule("127.0.0.5").matches(&ip), "an exact address");
        assert!(
            !rule("*.example").matches(&ip),
            "a name glob matches no IP literal"
        );
        assert!(rule("*").matches(&t("::1", "GET", "/")));
        // A glob of addresses could never match: refused, with the CIDR meant.
        for (glob, hint) in [
            ("127.0.0.*", " such as 127.0.0.0/24"),
            ("127.*", " such as 127.0.0.0/8"),
            ("10.0.*.*", " such as 10.0.0.0/16"),
            ("*.0.0.5", ""),
            ("*.5", ""),
            ("10.*.0.1", ""),
        ] {
            let e = HostPattern::from_str(glob).expect_err(glob);
            assert_eq!(
                e,
                RuleError::AddressGlob {
                    pattern: glob.into(),
                    hint: hint.into()
                },
                "{glob}"
            );
        }
        assert!(HostPattern::from_str("*.example.com").is_ok());
        assert!(HostPattern::from_str("api-*.example.com").is_ok());
        assert!(
            HostPattern::from_str("1password.*").is_ok(),
            "not all digits"
        );
    }

    #[test]
    fn cidr_rules_match_ip_literals_only() {
        let rule: Rule = serde_yaml_ng::from_str("cidr: 10.0.0.0/8").expect("valid");
        assert!(rule.matches(&t("10.1.2.3", "GET", "/")));
        assert!(!rule.matches(&t("ten.example", "GET", "/")));
        let mapped = Target {
            host: "::ffff:10.1.2.3",
            ip: "::ffff:10.1.2.3".parse().ok(),
            method: "GET",
            method_overrides: &[],
            path: "/",
            scheme: Scheme::Http,
        };
        assert!(rule.matches(&mapped), "v4-mapped v6 is unmapped first");
    }

    #[test]
    fn a_rule_restricting_methods_must_allow_each_method_the_request_asks_for() {
        let rule: Rule =
            serde_yaml_ng::from_str("host: api.test\nmethods: [POST, GET]").expect("valid");
        let delete = ["DELETE".to_string()];
        let get = ["GET".to_string()];
        let post = t("api.test", "POST", "/v1/items/42");
        assert!(rule.matches(&post));
        assert!(
            !rule.matches(&Target {
                method_overrides: &delete,
                ..post
            }),
            "a POST a server performs as DELETE"
        );
        assert!(rule.matches(&Target {
            method_overrides: &get,
            ..post
        }));
        let any: Rule = serde_yaml_ng::from_str("host: api.test").expect("valid");
        assert!(any.matches(&Target {
            method_overrides: &delete,
            ..post
        }));
    }

    #[test]
    fn an_inspecting_scope_covers_a_request_by_its_method_or_any_override_in_any_case() {
        let scope: Scope =
            serde_yaml_ng::from_str("[{host: api.test, methods: [POST, DELETE]}]").expect("valid");
        let (x, delete) = (["X".to_string()], ["DELETE".to_string()]);
        let post = t("api.test", "POST", "/repos/a");
        let with = |method, overrides| Target {
            method,
            method_overrides: overrides,
            ..post
        };
        // Granting needs every method allowed; inspecting, any.
        assert!(!scope.applies(&with("POST", &x)));
        assert!(scope.inspects(&with("POST", &x)), "the POST itself");
        assert!(
            scope.inspects(&with("GET", &delete)),
            "a GET asking for DELETE"
        );
        assert!(
            scope.inspects(&with("post", &[])),
            "read as POST by some servers"
        );
        assert!(!scope.inspects(&with("GET", &[])));
        assert!(!scope.inspects(&with("GET", &x)));
        assert!(
            Scope::default().inspects(&with("GET", &[])),
            "empty: everything"
        );
        let paths: Scope =
            serde_yaml_ng::from_str("[{host: api.test, methods: [POST], paths: [/mcp]}]")
                .expect("valid");
        assert!(paths.inspects(&Target {
            path: "/%6Dcp",
            ..with("get", &["post".to_string()])
        }));
    }

    #[test]
    fn schemes_limit_a_rule_to_http_or_https() {
        let rule = |yaml: &str| -> Rule { serde_yaml_ng::from_str(yaml).expect(yaml) };
        let https = t("api.test", "GET", "/v1");
        let http = Target {
            scheme: Scheme::Http,
            ..https
        };
        let both = rule("host: api.test");
        assert!(both.matches(&https) && both.matches(&http), "default: both");
        let only_tls = rule("host: api.test\nschemes: [https]");
        assert!(only_tls.matches(&https));
        assert!(!only_tls.matches(&http));
        let only_plain = rule("host: api.test\nschemes: [HTTP]");
        assert!(only_plain.matches(&http), "names are case-insensitive");
        assert!(!only_plain.matches(&https));
        assert_eq!(
            rule("host: api.test\nschemes: [Https, http]"),
            both,
            "both listed is the default"
        );
        // A tunnel's target is checked by host alone.
        assert!(only_tls.matches_host(&http));
        // The scheme is one more condition: the host still has to match.
        assert!(!only_tls.matches(&t("other.test", "GET", "/v1")));
    }

    #[test]
    fn bad_schemes_are_refused() {
        for (yaml, want) in [
            (
                "host: a.test\nschemes: [ftp]",
                RuleError::Scheme("ftp".into()),
            ),
            (
                "host: a.test\nschemes: [https, \"wss\"]",
                RuleError::Scheme("wss".into()),
            ),
            ("host: a.test\nschemes: []", RuleError::NoSchemes),
        ] {
            let e = serde_yaml_ng::from_str::<Rule>(yaml).expect_err(yaml);
            assert!(e.to_string().contains(&want.to_string()), "{yaml}: {e}");
        }
        assert_eq!(
            "https:".parse::<Scheme>(),
            Err(RuleError::Scheme("https:".into()))
        );
        assert_eq!(
            RuleError::Scheme("ftp".into()).to_string(),
            "invalid scheme \"ftp\": expected http or https"
        );
    }

    #[test]
    fn scopes_with_disjoint_schemes_never_overlap() {
        let scope = |yaml: &str| -> Scope { serde_yaml_ng::from_str(yaml).expect(yaml) };
        let tls = scope("[{host: api.test, schemes: [https]}]");
        let plain = scope("[{host: api.test, schemes: [http]}]");
        let both = scope("[{host: api.test}]");
        let other_tls = scope("[{host: other.test, schemes: [https]}]");
        for (a, b, overlap) in [
            (&tls, &plain, false),
            (&tls, &both, true),
            (&plain, &both, true),
            (&tls, &tls, true),
            (&tls, &other_tls, false),
            (&plain, &Scope::default(), true),
        ] {
            assert_eq!(a.may_overlap(b), overlap, "{a:?} / {b:?}");
            assert_eq!(b.may_overlap(a), overlap, "{b:?} / {a:?}");
        }
    }

    proptest! {
        #[test]
        fn subdomain_glob_matches_exactly_suffixes(label in "[a-z0-9]{1,10}", apex in "[a-z]{1,8}\\.[a-z]{2,3}") {
            let p: HostPattern = format!("*.{apex}").parse().expect("valid");
            let sub = format!("{label}.{apex}");
            let glued = format!("{label}{apex}");
            prop_assert!(p.matches(&apex));
            prop_assert!(p.matches(&sub));
            prop_assert!(!p.matches(&glued));
        }

        #[test]
        fn literal_paths_match_only_themselves(a in "/[a-z/]{0,12}", b in "/[a-z/]{0,12}") {
            let p: PathPattern = a.parse().expect("starts with /");
            prop_assert_eq!(p.matches(&b), a == b);
        }

        #[test]
        fn trailing_star_is_prefix(prefix in "/[a-z/]{0,8}", rest in "[a-z/]{0,8}") {
            let p: PathPattern = format!("{prefix}*").parse().expect("starts with /");
            let path = format!("{prefix}{rest}");
            prop_assert!(p.matches(&path));
        }
    }
}
