//! JSON-RPC 2.0 as the MCP interceptor reads it: a strict parser (duplicate
//! object keys are refused, so the proxy and the server can never read two
//! different tool names out of one body), the classification of a message,
//! and the error envelopes the proxy answers with.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// Why a request body is not JSON-RPC the interceptor can judge.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or JSON with an object key twice (the message never names the
    /// key: after a secrets swap it could hold a real credential).
    #[error("request body is not valid JSON ({0})")]
    Json(String),
    /// JSON, but not a JSON-RPC message or a batch of them.
    #[error("request body is not a JSON-RPC message: {0}")]
    Shape(&'static str),
}

/// One message of a body.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects an answer.
    Request {
        /// The id to answer with.
        id: Value,
        /// Method name.
        method: String,
        /// `params`, `Null` when absent.
        params: Value,
    },
    /// A call without an id.
    Notification {
        /// Method name.
        method: String,
        /// `params`, `Null` when absent.
        params: Value,
    },
    /// An answer (the client answering a server's request, or a server's answer).
    Response {
        /// The id it answers.
        id: Value,
        /// `result`, when it has one.
        result: Option<Value>,
    },
}

impl Message {
    /// The method, for calls.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request { method, .. } | Message::Notification { method, .. } => Some(method),
            Message::Response { .. } => None,
        }
    }

    /// The id (`Null` for notifications).
    pub fn id(&self) -> &Value {
        match self {
            Message::Request { id, .. } | Message::Response { id, .. } => id,
            Message::Notification { .. } => &Value::Null,
        }
    }

    /// `request`, `notification` or `response`, for the audit record.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Request { .. } => "request",
            Message::Notification { .. } => "notification",
            Message::Response { .. } => "response",
        }
    }
}

/// A parsed body: one message, or a batch (a JSON array).
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// True when the body was an array.
    pub batch: bool,
}

/// Parses a body strictly (see the module doc).
pub fn parse(bytes: &[u8]) -> Result<Body, ParseError> {
    let value = parse_strict(bytes)?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(ParseError::Shape("an empty batch"));
            }
            let messages = items
                .into_iter()
                .map(classify)
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Body {
                messages,
                batch: true,
            })
        }
        v => Ok(Body {
            messages: vec![classify(v)?],
            batch: false,
        }),
    }
}

/// Parses JSON, refusing duplicate object keys at any depth.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Strict(v) = Strict::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(json_error)?;
    Ok(v)
}

fn json_error(e: serde_json::Error) -> ParseError {
    // serde_json's messages name positions and expectations, never content;
    // our own duplicate-key error says only that.
    ParseError::Json(e.to_string())
}

fn classify(v: Value) -> Result<Message, ParseError> {
    let Value::Object(mut m) = v else {
        return Err(ParseError::Shape("a message is not an object"));
    };
    let id = m.remove("id");
    match m.remove("method") {
        Some(Value::String(method)) => {
            let params = m.remove("params").unwrap_or(Value::Null);
            Ok(match id {
                Some(id) => Message::Request { id, method, params },
                None => Message::Notification { method, params },
            })
        }
        Some(_) => Err(ParseError::Shape("method is not a string")),
        None if m.contains_key("result") || m.contains_key("error") => Ok(Message::Response {
            id: id.unwrap_or(Value::Null),
            result: m.remove("result"),
        }),
        None => Err(ParseError::Shape(
            "a message has neither method nor result nor error",
        )),
    }
}

/// An error response to `id` (`None`: `null`), as text. The id is copied as
/// the client wrote it: through a `Value` a large number would come back
/// rounded (`1.2345678901234568e+29`) and the client could not match it.
pub fn error(id: Option<&RawValue>, code: i64, message: &str) -> String {
    let error = json!({"code": code, "message": message});
    let id = id.map_or("null", RawValue::get);
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
}

/// The raw `id` of each message of a body (`None` where a message has none,
/// or `null`), in order; `None` when the body does not parse as messages.
pub fn raw_ids(bytes: &[u8]) -> Option<Vec<Option<Box<RawValue>>>> {
    #[derive(Deserialize)]
    struct IdOf<'a> {
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
    }
    let raw: &RawValue = serde_json::from_slice(bytes).ok()?;
    let ids: Vec<IdOf<'_>> = if raw.get().trim_start().starts_with('[') {
        serde_json::from_str(raw.get()).ok()?
    } else {
        vec![serde_json::from_str(raw.get()).ok()?]
    };
    Some(
        ids.into_iter()
            .map(|m| m.id.map(ToOwned::to_owned))
            .collect(),
    )
}

/// JSON-RPC's "Parse error" code.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC's "Invalid Request" code.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC's "Internal error" code: the proxy could not pass an answer on.
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON value whose objects had no duplicate keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom("an object has the same key twice"));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_requests_notifications_and_responses() {
        let b = parse(br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"x"}}"#)
            .expect("request");
        assert!(!b.batch);
        assert_eq!(b.messages[0].method(), Some("tools/call"));
        assert_eq!(b.messages[0].id(), &json!(7));
        assert_eq!(b.messages[0].kind(), "request");

        let b = parse(br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":"a","result":{}}]"#)
            .expect("batch");
        assert!(b.batch);
        assert_eq!(b.messages[0].kind(), "notification");
        assert_eq!(b.messages[1].kind(), "response");
        assert_eq!(b.messages[1].id(), &json!("a"));
    }

    #[test]
    fn refuses_what_a_server_might_read_differently() {
        // The classic parser differential: which `name` wins?
        let dup = br#"{"id":1,"method":"tools/call","params":{"name":"ok","name":"evil"}}"#;
        let e = parse(dup).expect_err("duplicate key");
        assert!(
            matches!(e, ParseError::Json(ref m) if m.contains("same key twice")),
            "{e}"
        );
        assert!(!e.to_string().contains("name"), "never names the key: {e}");
        for (body, why) in [
            (&b"not json"[..], "not json"),
            (b"{\"id\":1,\"method\":\"x\"} trailing", "trailing data"),
            (b"[]", "empty batch"),
            (b"42", "not an object"),
            (b"{\"id\":1,\"method\":5}", "method not a string"),
            (b"{\"id\":1}", "no method, result or error"),
            (
                b"[{\"id\":1,\"method\":\"a\"}, 3]",
                "a batch entry not an object",
            ),
        ] {
            assert!(parse(body).is_err(), "{why}");
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z\\\"\u{e9}\u{1f600} ]{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = parse(&bytes);
        }

        /// JSON without duplicate keys reads as serde_json reads it.
        #[test]
        fn strict_agrees_with_serde_json_on_valid_json(v in json_value()) {
            let text = serde_json::to_vec(&v).expect("serializes");
            proptest::prop_assert_eq!(parse_strict(&text).expect("valid"), v);
        }
    }

    #[test]
    fn error_envelopes_keep_the_id() {
        let id = RawValue::from_string(r#""r-1""#.into()).expect("raw");
        let text = error(Some(&id), -32001, "no");
        assert_eq!(
            serde_json::from_str::<Value>(&text).expect("json"),
            json!({"jsonrpc":"2.0","id":"r-1","error":{"code":-32001,"message":"no"}})
        );
        assert_eq!(
            serde_json::from_str::<Value>(&error(None, -1, "x")).expect("json")["id"],
            Value::Null
        );
    }

    #[test]
    fn large_ids_come_back_digit_for_digit() {
        let body = br#"[{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"a"},
            {"jsonrpc":"2.0","method":"n"},{"id":null,"method":"b"},{"id":"s","method":"c"}]"#;
        let ids = raw_ids(body).expect("ids");
        let shown: Vec<Option<&str>> = ids
            .iter()
            .map(|i| i.as_deref().map(RawValue::get))
            .collect();
        assert_eq!(
            shown,
            [
                Some("123456789012345678901234567890"),
                None,
                None,
                Some(r#""s""#)
            ]
        );
        let text = error(ids[0].as_deref(), -32001, "no");
        assert!(
            text.contains(r#""id":123456789012345678901234567890,"#),
            "{text}"
        );
        assert!(raw_ids(b"not json").is_none());
    }
}
