//! The top-level `mcp:` block: default-deny tool allowlists for MCP servers.

use regex::Regex;
use serde_json::Value;

use super::decode::{int, str_with, Cx, Decode, Res};
use super::values::first_line;
use super::yaml::{Kind, Node};
use crate::rules::{Rule, Scope};

/// `mcp:`. Absent means no MCP interception.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// The JSON-RPC error returned for denied calls.
    pub error: McpErrorConfig,
    /// Server policies.
    pub servers: Vec<McpServer>,
}

/// `mcp.error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpErrorConfig {
    /// JSON-RPC error code (default -32001).
    pub code: i64,
    /// Message (default "blocked by iron-proxy policy").
    pub message: String,
}

impl Default for McpErrorConfig {
    fn default() -> Self {
        McpErrorConfig {
            code: -32001,
            message: "blocked by iron-proxy policy".into(),
        }
    }
}

/// `mcp.servers[]`.
#[derive(Debug, Clone)]
pub struct McpServer {
    /// Policy name for the audit log.
    pub name: String,
    /// Destinations the policy covers (at least one rule).
    pub rules: Scope,
    /// Allowed tools; anything else is denied.
    pub tools: Vec<McpTool>,
}

/// `tools[]`.
#[derive(Debug, Clone)]
pub struct McpTool {
    /// Tool name.
    pub name: String,
    /// Argument matchers; all must pass (empty: any arguments).
    pub when: Vec<ArgMatcher>,
}

/// `when[]`.
#[derive(Debug, Clone)]
pub struct ArgMatcher {
    /// Dotted path within `params.arguments`, split on '.'.
    pub path: Vec<String>,
    /// The condition on the value there.
    pub condition: ArgCondition,
}

/// Exactly one of `equals`, `in`, `matches`.
#[derive(Debug, Clone)]
pub enum ArgCondition {
    /// Exact match (any JSON value).
    Equals(Value),
    /// Any of the values.
    In(Vec<Value>),
    /// Regex against the stringified value (unanchored, as Go's MatchString).
    Matches(Regex),
}

/// Converts a node to JSON with YAML 1.2 core scalar resolution (quoted scalars stay strings).
fn json(node: &Node) -> Value {
    match &node.kind {
        _ if node.is_null() => Value::Null,
        Kind::Scalar { text, plain: false } => Value::String(text.clone()),
        Kind::Scalar { text, plain: true } => match text.as_str() {
            "true" | "True" | "TRUE" => Value::Bool(true),
            "false" | "False" | "FALSE" => Value::Bool(false),
            t => t
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    t.parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Value::from)
                })
                .unwrap_or_else(|| Value::String(t.to_string())),
        },
        Kind::Seq(items) => Value::Array(items.iter().map(json).collect()),
        Kind::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| (k.scalar().unwrap_or_default().to_string(), json(v)))
                .collect(),
        ),
    }
}

impl Decode for ArgMatcher {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["path", "equals", "in", "matches"])?;
        let path = m.req_with(cx, "path", |n, cx| {
            str_with(n, cx, |s| {
                let parts: Vec<String> = s.split('.').map(str::to_string).collect();
                if parts.iter().any(String::is_empty) {
                    return Err(format!("invalid argument path {s:?}: expected dotted names such as \"owner\" or \"repo.name\""));
                }
                Ok(parts)
            })
        });
        // `equals: null` is a real condition, so presence is checked on the key.
        let present: Vec<&str> = ["equals", "in", "matches"]
            .into_iter()
            .filter(|k| m.key_pos(k).is_some())
            .collect();
        let condition = match (present.first().copied(), present.get(1)) {
            (None, _) => Err(cx.error(m.pos, "one of 'equals', 'in' or 'matches' is required")),
            (Some(_), Some(second)) => {
                let pos = m.key_pos(second).unwrap_or(m.pos);
                Err(cx.error(pos, "'equals', 'in' and 'matches' are mutually exclusive"))
            }
            (Some("equals"), None) => Ok(ArgCondition::Equals(
                m.node("equals").map_or(Value::Null, json),
            )),
            (Some("in"), None) => m.req_with(cx, "in", |n, cx| match &n.kind {
                Kind::Seq(items) => Ok(ArgCondition::In(items.iter().map(json).collect())),
                _ => Err(cx.error(n.pos, format!("expected a list, found {}", n.type_name()))),
            }),
            (Some(_), None) => m.req_with(cx, "matches", |n, cx| {
                str_with(n, cx, |s| {
                    Regex::new(s)
                        .map(ArgCondition::Matches)
                        .map_err(|e| format!("invalid regex {s:?}: {}", first_line(&e.to_string())))
                })
            }),
        };
        Ok(ArgMatcher {
            path: path?,
            condition: condition?,
        })
    }
}

impl Decode for McpTool {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "when"])?;
        let (name, when) = (m.req(cx, "name"), m.or_default(cx, "when"));
        Ok(McpTool {
            name: name?,
            when: when?,
        })
    }
}

impl Decode for McpServer {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "rules", "tools"])?;
        let name = m.req(cx, "name");
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        let tools = m.or_default(cx, "tools");
        Ok(McpServer {
            name: name?,
            rules: Scope(rules?),
            tools: tools?,
        })
    }
}

impl Decode for McpErrorConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["code", "message"])?;
        let code = m.opt_with(cx, "code", |n, cx| int(n, cx, i64::MIN, i64::MAX));
        let message = m.opt::<String>(cx, "message");
        let d = McpErrorConfig::default();
        Ok(McpErrorConfig {
            code: code?.unwrap_or(d.code),
            message: message?.unwrap_or(d.message),
        })
    }
}

impl Decode for McpConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["error", "servers"])?;
        let (error, servers) = (m.or_default(cx, "error"), m.or_default(cx, "servers"));
        Ok(McpConfig {
            error: error?,
            servers: servers?,
        })
    }
}
