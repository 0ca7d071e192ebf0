//! The top-level `mcp:` block: default-deny tool allowlists for MCP servers.

use std::collections::HashMap;

use regex::Regex;
use serde_json::Value;

use super::decode::{int, str_with, Cx, Decode, Failed, MapDe, Res};
use super::values::first_line;
use super::yaml::{number, Kind, Node, Number, Pos};
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

/// Converts a node to JSON, plain scalars resolved as yaml.v3 resolves them
/// into an untyped value: `true`/`false`, integers (`0x`, `0o`, `0b`, `_`
/// separators, as in integer fields), YAML-style floats; the
/// rest, and every quoted scalar, a string. A decimal with a leading zero is
/// refused, as in integer fields: yaml.v3 reads `010` as octal 8.
fn json(node: &Node, cx: &mut Cx) -> Res<Value> {
    Ok(match &node.kind {
        _ if node.is_null() => Value::Null,
        Kind::Scalar { text, plain: false } => Value::String(text.clone()),
        Kind::Scalar { text, plain: true } => match text.as_str() {
            "true" | "True" | "TRUE" => Value::Bool(true),
            "false" | "False" | "FALSE" => Value::Bool(false),
            t => match number(t) {
                Ok(Number::Int(i)) => Value::from(i),
                Ok(Number::Float(f)) if f.is_finite() => Value::from(f),
                Err(hint) if !hint.is_empty() => {
                    return Err(cx.error(node.pos, format!("{t:?} is ambiguous{hint}")))
                }
                _ => Value::String(t.to_string()),
            },
        },
        Kind::Seq(items) => {
            Value::Array(items.iter().map(|n| json(n, cx)).collect::<Res<Vec<_>>>()?)
        }
        Kind::Map(entries) => {
            let mut out = serde_json::Map::new();
            for (k, v) in entries {
                out.insert(k.scalar().unwrap_or_default().to_string(), json(v, cx)?);
            }
            Value::Object(out)
        }
    })
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
            (Some("equals"), None) => match m.node("equals") {
                Some(n) => json(n, cx).map(ArgCondition::Equals),
                None => Ok(ArgCondition::Equals(Value::Null)),
            },
            (Some("in"), None) => m.req_with(cx, "in", |n, cx| match &n.kind {
                Kind::Seq(items) => items
                    .iter()
                    .map(|i| json(i, cx))
                    .collect::<Res<Vec<_>>>()
                    .map(ArgCondition::In),
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

/// A server's or a tool's `name`, which must not be empty: no `tools/call`
/// names the empty tool (an allowlist entry that allows nothing, and hides
/// a forgotten name), and the audit record names a server's policy by it.
fn non_empty_name(m: &MapDe<'_>, cx: &mut Cx) -> Res<String> {
    m.req_with(cx, "name", |n, cx| {
        str_with(n, cx, |s| {
            if s.is_empty() {
                Err("name must not be empty".to_string())
            } else {
                Ok(s.to_string())
            }
        })
    })
}

impl Decode for McpTool {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "when"])?;
        let (name, when) = (non_empty_name(&m, cx), m.or_default(cx, "when"));
        Ok(McpTool {
            name: name?,
            when: when?,
        })
    }
}

impl Decode for McpServer {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["name", "rules", "tools"])?;
        let name = non_empty_name(&m, cx);
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

/// The keys of `mcp`.
pub(super) const MCP_FIELDS: [&str; 2] = ["error", "servers"];

impl Decode for McpConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &MCP_FIELDS)?;
        let (error, servers) = (m.or_default(cx, "error"), m.or_default(cx, "servers"));
        let unique = m
            .node("servers")
            .map_or(Ok(()), |n| unique_server_names(n, cx));
        unique?;
        Ok(McpConfig {
            error: error?,
            servers: servers?,
        })
    }
}

/// Server names must be unique: a name is what the audit record's trace
/// (`server`) and its `mcp` section say judged a message, and what the
/// spec's MCP policies API keys a policy by ("unique within the
/// organization"). Two servers of one name would make those records
/// ambiguous. Checked on the document, so a duplicate is reported even when
/// other entries have errors; each repeat is an error at its `name`, naming
/// the first server that has it.
fn unique_server_names(servers: &Node, cx: &mut Cx) -> Res<()> {
    let Kind::Seq(items) = &servers.kind else {
        return Ok(());
    };
    let mut seen: HashMap<&str, (usize, Pos)> = HashMap::with_capacity(items.len());
    let mut ok = true;
    for (i, entry) in items.iter().enumerate() {
        let Some(name_node) = entry.get("name") else {
            continue;
        };
        let Some(name) = name_node.scalar().filter(|_| !name_node.is_null()) else {
            continue;
        };
        match seen.get(name) {
            Some(&(first, at)) => {
                let place = match at {
                    Pos::File { line, column } => format!(" (line {line}, column {column})"),
                    Pos::Env(var) => format!(" (set by {var})"),
                };
                let msg = format!(
                    "duplicate MCP server name '{name}': mcp.servers[{first}]{place} has it too; \
                     server names must be unique, since the audit record names the server policy \
                     that judged each message by it"
                );
                cx.error_at_path(name_node.pos, format!("mcp.servers[{i}].name"), msg);
                ok = false;
            }
            None => {
                seen.insert(name, (i, name_node.pos));
            }
        }
    }
    if ok {
        Ok(())
    } else {
        Err(Failed)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The values of `equals` and `in` as yaml.v3 reads an untyped value:
    /// `0x10`, `0o20`, `0b10000` and `1_6` are the integer 16, a float
    /// stays a float, quoted scalars and other words stay strings.
    #[test]
    fn plain_scalars_resolve_as_yaml_v3_resolves_them() {
        let yaml = "mcp:\n  servers:\n    - name: s\n      rules: [{host: m.test}]\n      tools:\n        - name: t\n          when:\n            - path: n\n              in: [0x10, 0o20, 0b10000, 1_6, 16, -0x10, 2.5, '0x10', yes, .inf, ~]\n            - path: m\n              equals: {a: [0x1F, \"b\"]}\n";
        let text = format!("{}{yaml}", crate::config::tests::BASE);
        let cfg = crate::config::parse(&text, "proxy.yaml", &|_| None).expect("config");
        let mcp = cfg.mcp.expect("mcp");
        let when = &mcp.servers[0].tools[0].when;
        let ArgCondition::In(values) = &when[0].condition else {
            panic!("not in")
        };
        assert_eq!(
            Value::Array(values.clone()),
            json!([16, 16, 16, 16, 16, -16, 2.5, "0x10", "yes", ".inf", null])
        );
        let ArgCondition::Equals(v) = &when[1].condition else {
            panic!("not equals")
        };
        assert_eq!(v, &json!({"a": [31, "b"]}));
    }

    /// Two servers of one name would leave the audit record unable to say
    /// which policy judged a message: the repeat is an error at its `name`,
    /// naming the first server's index and line, even when another entry has
    /// an error of its own; a third use is reported too.
    #[test]
    fn a_server_name_used_twice_is_an_error_naming_both_places() {
        let server = |name: &str| {
            format!(
                "    - name: {name}\n      rules: [{{host: m.test}}]\n      tools: [{{name: t}}]\n"
            )
        };
        let text = format!(
            "{}mcp:\n  servers:\n{}{}{}    - name: other\n      rules: []\n{}",
            crate::config::tests::BASE,
            server("github"),
            server("linear"),
            server("github"),
            server("github"),
        );
        let errors: Vec<String> = crate::config::parse(&text, "proxy.yaml", &|_| None)
            .expect_err("duplicate names")
            .iter()
            .map(ToString::to_string)
            .collect();
        let dup = |i: usize, line: usize| {
            format!(
                "proxy.yaml:{line}:13: mcp.servers[{i}].name: duplicate MCP server name 'github': \
                 mcp.servers[0] (line 6, column 13) has it too; server names must be unique, \
                 since the audit record names the server policy that judged each message by it"
            )
        };
        assert_eq!(
            errors,
            [
                dup(2, 12),
                "proxy.yaml:16:14: mcp.servers[3].rules: at least one rule is required".to_string(),
                dup(4, 17),
            ]
        );
        // Distinct names load.
        let text = format!(
            "{}mcp:\n  servers:\n{}{}",
            crate::config::tests::BASE,
            server("github"),
            server("GitHub"),
        );
        let cfg = crate::config::parse(&text, "proxy.yaml", &|_| None).expect("distinct names");
        assert_eq!(cfg.mcp.expect("mcp").servers.len(), 2);
    }
}
