//! proptest strategies for the answers of the peers the proxy fetches
//! credentials from (secret backends, token endpoints, Google's STS and IAM,
//! S3), for the property tests of the functions that read them: any bytes,
//! JSON of any shape (wrong types, numbers beyond every integer and float
//! type, deep nesting, duplicate keys, very long strings, control
//! characters, non-UTF-8 bytes), and answers built around a valid shape
//! with each field present, absent, of the wrong type, or repeated, then
//! sometimes cut or damaged.
//!
//! Values are JSON text, not `serde_json::Value`s: a `Value` cannot hold
//! `1e400`, a duplicate key or a lone surrogate escape, which a peer can send.

use proptest::prelude::*;

/// Any bytes, short or long.
pub(crate) fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), 1000..3000),
    ]
}

/// A JSON string literal holding `s`.
pub(crate) fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Text a peer may put in a string: words, any characters, control
/// characters, long runs.
pub(crate) fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,24}",
        2 => "\\PC{0,24}",
        1 => any::<Vec<char>>().prop_map(|c| c.into_iter().collect::<String>()),
        1 => ("[\\x00-\\x1f\\x7f\u{85}\u{2028}\u{202e}a-z]{1,4}", 1usize..50).prop_map(|(s, n)| s.repeat(n)),
        1 => ("\\PC{1,3}", 2000usize..6000).prop_map(|(s, n)| s.repeat(n)),
    ]
}

/// A JSON string literal: escaped text, or escapes serde_json may refuse
/// (a lone surrogate) or must decode (`\u00e9`, `\/`).
pub(crate) fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => text().prop_map(|s| quoted(&s)),
        1 => Just(r#""\ud800""#.to_string()),
        1 => Just(r#""caf\u00e9 \/ \ud83d\ude00""#.to_string()),
        1 => Just(r#""""#.to_string()),
    ]
}

/// A JSON number as a peer may write it: small, at and beyond the integer
/// types' limits, negative, fractional, with exponents beyond f64.
pub(crate) fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => any::<i64>().prop_map(|n| n.to_string()),
        2 => (0u64..100_000).prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i128>().prop_map(|n| n.to_string()),
        1 => "-?[1-9][0-9]{20,60}",
        2 => any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
        1 => "-?(0|[1-9][0-9]{0,4})(\\.[0-9]{1,6})?[eE][+-]?[0-9]{1,4}",
        1 => prop::sample::select(vec!["0", "-0", "0.0", "-0.0", "1e400", "-1e400", "0.5", "1e-400"])
            .prop_map(str::to_string),
    ]
}

/// Any JSON value, as text, nested a few levels.
pub(crate) fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        number(),
        string(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec((string(), inner), 0..4).prop_map(|kv| object(&kv)),
        ]
    })
}

/// A JSON object of `fields` (key literal, value text), in order, repeats kept.
pub(crate) fn object(fields: &[(String, String)]) -> String {
    let inner: Vec<String> = fields.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    format!("{{{}}}", inner.join(","))
}

/// An answer built around a valid shape: each of `fields` (name, a strategy
/// for its valid values) present with a valid value, present with any
/// value, repeated, or absent; other fields beside them; the order shuffled;
/// then, now and then, damaged ([`damaged`]).
pub(crate) fn answer(
    fields: Vec<(&'static str, BoxedStrategy<String>)>,
) -> impl Strategy<Value = Vec<u8>> {
    let each: Vec<BoxedStrategy<Vec<(String, String)>>> = fields
        .into_iter()
        .map(|(name, valid)| {
            let key = quoted(name);
            let k = key.clone();
            prop_oneof![
                6 => valid.clone().prop_map(move |v| vec![(k.clone(), v)]),
                2 => value().prop_map({
                    let k = key.clone();
                    move |v| vec![(k.clone(), v)]
                }),
                1 => (valid, value()).prop_map({
                    let k = key.clone();
                    move |(a, b)| vec![(k.clone(), a), (k.clone(), b)]
                }),
                2 => Just(Vec::new()),
            ]
            .boxed()
        })
        .collect();
    let extra = prop::collection::vec((string(), value()), 0..3);
    (each, extra)
        .prop_flat_map(|(each, extra)| {
            let mut all: Vec<(String, String)> = each.into_iter().flatten().collect();
            all.extend(extra);
            Just(all).prop_shuffle()
        })
        .prop_flat_map(|fields| damaged(object(&fields).into_bytes()))
}

/// `body` as sent, or now and then damaged: cut short, a byte replaced by
/// one that is not UTF-8, wrapped in nesting deeper than any parser's limit,
/// prefixed with a byte order mark, followed by garbage.
pub(crate) fn damaged(body: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = body.len();
    prop_oneof![
        12 => Just(body.clone()),
        1 => (0..=len).prop_map({
            let b = body.clone();
            move |at| b[..at].to_vec()
        }),
        1 => (0..len.max(1), 0x80u8..=0xff).prop_map({
            let b = body.clone();
            move |(at, byte)| {
                let mut b = b.clone();
                if let Some(x) = b.get_mut(at) {
                    *x = byte;
                }
                b
            }
        }),
        1 => (100usize..3000).prop_map({
            let b = body.clone();
            move |depth| {
                let mut out = "[".repeat(depth).into_bytes();
                out.extend_from_slice(&b);
                out.extend_from_slice("]".repeat(depth).as_bytes());
                out
            }
        }),
        1 => Just([b"\xef\xbb\xbf".as_slice(), &body].concat()),
        1 => bytes().prop_map({
            let b = body.clone();
            move |tail| [b.as_slice(), &tail].concat()
        }),
    ]
}

/// How a peer echoes a credential: in one of the forms it takes on the
/// wire (as it is, percent- or form-encoded, base64, inside a Basic pair,
/// JSON-escaped), with text around it.
#[derive(Debug, Clone)]
pub(crate) struct Echo {
    form: usize,
    before: String,
    after: String,
}

/// An [`Echo`].
pub(crate) fn echo() -> impl Strategy<Value = Echo> {
    (0..6usize, "[a-zA-Z :=,]{0,20}", "[a-zA-Z :=,.]{0,20}").prop_map(|(form, before, after)| {
        Echo {
            form,
            before,
            after,
        }
    })
}

impl Echo {
    /// The peer's text, echoing `secret`.
    pub(crate) fn of(&self, secret: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let form = match self.form {
            0 => secret.to_string(),
            1 => percent_encoding::utf8_percent_encode(secret, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
            2 => url::form_urlencoded::byte_serialize(secret.as_bytes()).collect(),
            3 => b64.encode(secret),
            4 => format!("Basic {}", b64.encode(format!("client:{secret}"))),
            _ => serde_json::to_string(secret).expect("json"),
        };
        format!("{}{form}{}", self.before, self.after)
    }
}

/// Peer text: any [`text`], or an [`Echo`] of one of two credentials
/// (`true`: the first), filled in by [`Said::of`].
#[derive(Debug, Clone)]
pub(crate) enum Said {
    Text(String),
    Echo(Echo, bool),
}

/// A [`Said`].
pub(crate) fn said() -> impl Strategy<Value = Said> {
    prop_oneof![
        2 => text().prop_map(Said::Text),
        1 => (echo(), any::<bool>()).prop_map(|(e, first)| Said::Echo(e, first)),
    ]
}

impl Said {
    /// The text, echoing `first` or `second` when it is an echo.
    pub(crate) fn of(&self, first: &str, second: &str) -> String {
        match self {
            Said::Text(t) => t.clone(),
            Said::Echo(e, true) => e.of(first),
            Said::Echo(e, false) => e.of(second),
        }
    }
}

/// Whether `text` holds `secret`, or a run of 8 or more of its characters.
pub(crate) fn holds_part_of(text: &str, secret: &str) -> bool {
    let chars: Vec<(usize, char)> = secret.char_indices().collect();
    chars.iter().enumerate().any(|(i, &(start, _))| {
        let end = chars.get(i + 8).map_or(secret.len(), |&(e, _)| e);
        i + 8 <= chars.len() && text.contains(&secret[start..end])
    }) || text.contains(secret)
}

/// Whether `text` has a control character (a log line or a terminal would
/// take it as its own).
pub(crate) fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}
