//! Decoders for the building blocks every section uses: rules and scopes,
//! CIDRs, listen addresses, durations, header matchers, header names, URLs
//! and templates.

use ipnet::IpNet;

use super::decode::{one_of_any_case, parse_str, str_with, Cx, Decode, Res};
use super::lookalike;
use super::values::{GoDuration, HeaderMatcher, ListenAddr, NonNegativeDuration, PositiveDuration};
use super::yaml::Node;
use crate::rules::{
    parse_cidr, HostPattern, MethodSet, PathPattern, Rule, RuleError, RuleTarget, Scheme,
    SchemeSet, Scope,
};

macro_rules! decode_from_str {
    ($($t:ty),*) => {$(
        impl Decode for $t {
            fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
                parse_str(node, cx)
            }
        }
    )*};
}
decode_from_str!(
    ListenAddr,
    GoDuration,
    PositiveDuration,
    NonNegativeDuration,
    PathPattern
);

impl Decode for HostPattern {
    /// A host pattern; a glob whose `*` is glued to a dotted name
    /// (`*example.com`) loads with a warning ([`warn_missing_dot`]), as does
    /// an internationalized name that mixes scripts ([`warn_host_characters`]).
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let p: HostPattern = parse_str(node, cx)?;
        warn_missing_dot(&p, node, cx);
        warn_host_characters(node, &p.to_string(), cx);
        Ok(p)
    }
}

/// Warns at `node`, a host name or pattern as written whose ASCII (IDNA)
/// form is `ascii`, about what a reader cannot see in it: a label that mixes
/// scripts (`gіthub`, with a Cyrillic `і`) or is wholly written in letters
/// that look like ASCII ones (`аррӏе`), which matches only its own `xn--`
/// name, never the name it looks like; and invisible characters, which IDNA
/// drops. Warnings, not errors: `bücher.example` and `пример.рф` are real
/// names, and a label may mix scripts on purpose.
pub(crate) fn warn_host_characters(node: &Node, ascii: &str, cx: &mut Cx) {
    let Some(text) = node.scalar() else {
        return;
    };
    if text.is_ascii() {
        return;
    }
    for m in lookalike::mixed_scripts(text) {
        let shown = lookalike::odd(&m.label).map_or(m.label.clone(), |o| o.shown);
        let what = match m.scripts.as_slice() {
            [one] => format!("is written in {one}"),
            many => format!("mixes {}", and_list(many)),
        };
        let looks = match &m.reads_as {
            Some(reads) => {
                let meant: Vec<String> = text
                    .trim_end_matches('.')
                    .split('.')
                    .map(|l| {
                        if l == m.label {
                            reads.clone()
                        } else {
                            l.to_lowercase()
                        }
                    })
                    .collect();
                format!(", not {}, which it looks like", meant.join("."))
            }
            None => String::new(),
        };
        cx.warn(
            node.pos,
            format!(
                "label '{shown}' of {text:?} {what} ({}): it matches only {ascii}{looks}",
                m.characters.join(", ")
            ),
        );
    }
    if let Some(odd) = text
        .chars()
        .any(lookalike::is_invisible)
        .then(|| lookalike::odd(text))
        .flatten()
    {
        let invisible: Vec<String> = text
            .chars()
            .filter(|c| lookalike::is_invisible(*c))
            .map(lookalike::describe)
            .fold(Vec::new(), |mut v, d| {
                if !v.contains(&d) {
                    v.push(d);
                }
                v
            });
        cx.warn(
            node.pos,
            format!(
                "'{}' holds {}, which IDNA drops: it matches {ascii}",
                odd.shown,
                and_list(&invisible)
            ),
        );
    }
}

/// "a", "a and b", "a, b and c".
fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => format!(
            "{} and {}",
            rest.iter()
                .map(|s| s.as_ref())
                .collect::<Vec<&str>>()
                .join(", "),
            last.as_ref()
        ),
    }
}

/// Warns at `node` about a host pattern such as `*example.com`, which
/// matches `badexample.com` too, with the pattern probably meant
/// (`*.example.com`). A warning, not an error: the glob does what globs do,
/// and a name that ends so may be meant (`*corp.example` for `devcorp.example`).
pub(crate) fn warn_missing_dot(p: &HostPattern, node: &Node, cx: &mut Cx) {
    let Some(meant) = p.missing_dot() else {
        return;
    };
    let rest = &meant[2..];
    cx.warn(
        node.pos,
        format!(
            "\"{p}\" matches every host whose name ends in \"{rest}\", such as \
             bad{rest}, not only {rest} and its subdomains; for those write \"{meant}\""
        ),
    );
}

impl Decode for HeaderMatcher {
    /// A literal name or a `/regex/`; a literal no header can be named
    /// loads with a warning (the spec's CI example lists one).
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m: HeaderMatcher = parse_str(node, cx)?;
        if let Some(why) = m.never_matches() {
            cx.warn(node.pos, why);
        }
        Ok(m)
    }
}

impl Decode for IpNet {
    /// A CIDR; a bare address is refused. One with host bits set
    /// (`10.0.0.1/8`) loads as its network, with a warning: it is as likely
    /// a `/32` mistyped as the network meant, and an allowlist entry would
    /// then admit the whole range.
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let net = str_with(node, cx, |s| parse_cidr(s).map_err(|e| e.to_string()))?;
        // Addresses are compared as IPv4 once unmapped (`rules::canonical_ip`),
        // so `::ffff:a.b.c.d/n` would match nothing: a deny entry failing open.
        let net = match unmapped(net) {
            Some(v4) => {
                cx.warn(
                    node.pos,
                    format!(
                        "{net} is an IPv4-mapped IPv6 range: addresses are compared as IPv4, so \
                         it is read as {v4}; write that"
                    ),
                );
                v4
            }
            None => net,
        };
        if net.trunc() != net {
            let single = match net {
                IpNet::V4(_) => 32,
                IpNet::V6(_) => 128,
            };
            cx.warn(
                node.pos,
                format!(
                    "{net} has host bits set: it is read as the network {}; write that, or \
                     {}/{single} for the one address",
                    net.trunc(),
                    net.addr()
                ),
            );
        }
        Ok(net.trunc())
    }
}

/// The IPv4 range an IPv4-mapped IPv6 range (`::ffff:0:0/96` and within)
/// stands for.
fn unmapped(net: IpNet) -> Option<IpNet> {
    let IpNet::V6(v6) = net else {
        return None;
    };
    let v4 = v6.addr().to_ipv4_mapped()?;
    let len = v6.prefix_len().checked_sub(96)?;
    ipnet::Ipv4Net::new(v4, len).ok().map(IpNet::V4)
}

impl Decode for Scheme {
    /// `http` or `https`, in any case.
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        one_of_any_case(
            node,
            cx,
            "scheme",
            &[("http", Scheme::Http), ("https", Scheme::Https)],
        )
    }
}

impl Decode for Rule {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["host", "cidr", "methods", "paths", "schemes"])?;
        let host = m.opt::<HostPattern>(cx, "host");
        let cidr = m.opt::<IpNet>(cx, "cidr");
        let methods = m.opt_with(cx, "methods", |n, cx| {
            let list = Vec::<String>::decode(n, cx)?;
            MethodSet::parse(Some(list)).map_err(|e| cx.error(n.pos, e.to_string()))
        });
        let paths = m.or_default::<Vec<PathPattern>>(cx, "paths");
        let schemes = m.opt_with(cx, "schemes", |n, cx| {
            let list = Vec::<Scheme>::decode(n, cx)?;
            SchemeSet::parse(Some(list)).map_err(|e| cx.error(n.pos, e.to_string()))
        });
        let target = match (host?, cidr?) {
            (Some(h), None) => RuleTarget::Host(h),
            (None, Some(c)) => RuleTarget::Cidr(c),
            _ => return Err(cx.error(m.pos, RuleError::HostXorCidr.to_string())),
        };
        Ok(Rule {
            target,
            methods: methods?.unwrap_or_default(),
            paths: paths?,
            schemes: schemes?.unwrap_or_default(),
        })
    }
}

impl Decode for Scope {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        Vec::<Rule>::decode(node, cx).map(Scope)
    }
}

/// Decodes an HTTP header name (a token), as written.
pub(crate) fn header_name(node: &Node, cx: &mut Cx) -> Res<String> {
    str_with(node, cx, |s| {
        http::HeaderName::from_bytes(s.as_bytes())
            .map(|_| s.to_string())
            .map_err(|_| format!("invalid header name {s:?}"))
    })
}

/// Parses a template field and checks every field it reads against `fields`
/// (top-level names) and, for `.Credentials.<name>`, against `credentials`
/// (`None` when the credential names are unknown because they failed to decode).
pub(crate) fn template(
    node: &Node,
    cx: &mut Cx,
    fields: &[&str],
    credentials: Option<&[&str]>,
) -> Res<crate::template::Template> {
    let tmpl = str_with(node, cx, |s| {
        crate::template::Template::parse(s).map_err(|e| format!("invalid template: {e}"))
    })?;
    for path in tmpl.fields() {
        let dotted: String = path.iter().map(|p| format!(".{p}")).collect();
        let top = path[0].as_str();
        let problem = if !fields.contains(&top) {
            let names: Vec<String> = fields.iter().map(|f| format!(".{f}")).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            Some(match super::decode::suggest(&format!(".{top}"), &names) {
                Some(s) => format!(
                    "template uses unknown field {dotted}, did you mean {s}? (available: {})",
                    names.join(", ")
                ),
                None => format!(
                    "template uses unknown field {dotted} (available: {})",
                    names.join(", ")
                ),
            })
        } else if top == "Credentials" {
            match (path.get(1).map(String::as_str), credentials) {
                (Some(_), None) if path.len() == 2 => None,
                (Some(name), Some(credentials)) if path.len() == 2 && credentials.contains(&name) => None,
                (Some(name), Some(credentials)) if path.len() == 2 => Some(match super::decode::suggest(name, credentials) {
                    Some(s) => format!("template uses {dotted} but there is no credential '{name}', did you mean '{s}'?"),
                    None => format!("template uses {dotted} but there is no credential '{name}' (credentials: {})", credentials.join(", ")),
                }),
                _ => Some(format!("template uses {dotted}: write .Credentials.<name>")),
            }
        } else if path.len() > 1 {
            Some(format!("template uses {dotted}, but .{top} has no fields"))
        } else {
            None
        };
        if let Some(msg) = problem {
            return Err(cx.error(node.pos, msg));
        }
    }
    Ok(tmpl)
}

/// A character no HTTP header value may hold (RFC 9110's field-value: a
/// control character other than tab, or DEL), and where it is.
pub(crate) struct BadHeaderChar {
    /// The character.
    pub ch: char,
    /// Its 1-based character index in the text looked at.
    pub at: usize,
    /// It is a line feed that ends the text: most often a YAML block scalar.
    pub trailing_newline: bool,
}

impl BadHeaderChar {
    /// The character as errors name it: "a line feed (LF)".
    pub fn what(&self) -> String {
        match self.ch {
            '\n' => "a line feed (LF)".to_string(),
            '\r' => "a carriage return (CR)".to_string(),
            '\0' => "a NUL character".to_string(),
            '\u{7f}' => "a DEL character (U+007F)".to_string(),
            c => format!("the control character U+{:04X}", c as u32),
        }
    }

    /// The advice for a trailing newline, else nothing.
    pub fn hint(&self) -> &'static str {
        if self.trailing_newline {
            " (a YAML block scalar written with '|' or '>' ends with a newline: write '|-' or \
             '>-', or a quoted string)"
        } else {
            ""
        }
    }
}

/// The first character of `text` that no HTTP header value may hold, if
/// any. The text itself is never repeated in errors: the field may be next
/// to a secret.
pub(crate) fn bad_header_char(text: &str) -> Option<BadHeaderChar> {
    let (i, ch) = text
        .chars()
        .enumerate()
        .find(|&(_, c)| c.is_ascii_control() && c != '\t')?;
    let trailing_newline = ch == '\n' && text.chars().count() == i + 1;
    Some(BadHeaderChar {
        ch,
        at: i + 1,
        trailing_newline,
    })
}

/// Refuses, at `node`, text written into a header value (`what`:
/// "value_prefix") that holds what no header value may: the header could
/// never be sent, and every request the field applies to would fail with
/// an error about the secret rather than about this field.
pub(crate) fn header_text(node: &Node, cx: &mut Cx, what: &str, text: &str) -> Res<()> {
    let Some(bad) = bad_header_char(text) else {
        return Ok(());
    };
    Err(cx.error(
        node.pos,
        format!(
            "{what} holds {} at character {}, which no HTTP header value may hold: every \
             request it applies to would fail{}",
            bad.what(),
            bad.at,
            bad.hint()
        ),
    ))
}

/// [`template`] for a header value: what it writes whatever its values
/// ([`Template::fixed_text`]: its text and string literals) is checked as
/// [`header_text`] checks text.
///
/// [`Template::fixed_text`]: crate::template::Template::fixed_text
pub(crate) fn header_template(
    node: &Node,
    cx: &mut Cx,
    fields: &[&str],
    credentials: Option<&[&str]>,
) -> Res<crate::template::Template> {
    let tmpl = template(node, cx, fields, credentials)?;
    check_header_template(node, cx, &tmpl)?;
    Ok(tmpl)
}

/// The check of [`header_template`], for a template decoded before it is
/// known to make a header value (`inject.formatter`).
pub(crate) fn check_header_template(
    node: &Node,
    cx: &mut Cx,
    tmpl: &crate::template::Template,
) -> Res<()> {
    let Some(bad) = tmpl.fixed_text().into_iter().find_map(bad_header_char) else {
        return Ok(());
    };
    // Placed in the template as written, when it is there as it is (not
    // an escape in a string literal).
    let source = tmpl.as_str();
    let placed = bad_header_char(source).filter(|s| s.ch == bad.ch);
    let at = placed
        .as_ref()
        .map_or(String::new(), |s| format!(" at character {}", s.at));
    let hint = placed.as_ref().unwrap_or(&bad).hint();
    Err(cx.error(
        node.pos,
        format!(
            "the template writes {}{at} into the header value, which no HTTP header value may \
             hold: every request it applies to would fail{hint}",
            bad.what()
        ),
    ))
}

/// An http(s) URL with a host.
pub(crate) fn http_url(node: &Node, cx: &mut Cx) -> Res<url::Url> {
    str_with(node, cx, |s| match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Ok(u),
        // Named without a user, password or query: a key may be in either.
        _ => Err(format!(
            "invalid URL {:?}: expected http(s)://host[/path]",
            crate::redact_url::for_log(s)
        )),
    })
}
