//! One `mcp.servers[]` policy: which requests it covers, and whether a
//! `tools/call` may go through. Default deny: a tool is allowed only when an
//! entry names it and all of that entry's `when` matchers pass (several
//! entries for one tool are alternatives).

use serde_json::Value;

use crate::config::{ArgCondition, ArgMatcher, McpServer, McpTool};
use crate::rules::{Scope, Target};

/// The decision on one `tools/call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward it.
    Allow,
    /// Refuse it; the reason names the tool or the argument path, never a value.
    Deny(String),
}

/// A built server policy.
#[derive(Debug)]
pub struct ServerPolicy {
    /// `name`, for the audit record.
    pub name: String,
    rules: Scope,
    tools: Vec<McpTool>,
}

impl ServerPolicy {
    /// The policy of one config entry.
    pub fn new(cfg: &McpServer) -> Self {
        ServerPolicy {
            name: cfg.name.clone(),
            rules: cfg.rules.clone(),
            tools: cfg.tools.clone(),
        }
    }

    /// True when a rule covers a request to `t`, with its path as sent or as
    /// a server reads it ([`Scope::covers_as_servers_read`]: percent-decoded,
    /// `/` runs collapsed, `;` parameters cut, either case). Matching more
    /// spellings only means inspecting more requests; matching fewer would
    /// let `POST /%6Dcp` or `POST /MCP` reach the server uninspected.
    pub fn covers(&self, t: &Target<'_>) -> bool {
        self.rules.covers_as_servers_read(t)
    }

    /// True when `tools/list` may show the tool (some entry names it).
    pub fn lists(&self, tool: &str) -> bool {
        self.tools.iter().any(|t| t.name == tool)
    }

    /// Judges a `tools/call` of `tool` with `arguments` (`Null` when absent).
    pub fn decide(&self, tool: &str, arguments: &Value) -> Decision {
        let mut entries = self.tools.iter().filter(|t| t.name == tool).peekable();
        if entries.peek().is_none() {
            return Decision::Deny("tool is not in the server's allowlist".into());
        }
        let mut failed = None;
        for entry in entries {
            match entry.when.iter().find(|m| !passes(m, arguments)) {
                None => return Decision::Allow,
                Some(m) => {
                    failed.get_or_insert_with(|| describe(m));
                }
            }
        }
        Decision::Deny(failed.unwrap_or_default())
    }
}

fn describe(m: &ArgMatcher) -> String {
    let test = match m.condition {
        ArgCondition::Equals(_) => "equals",
        ArgCondition::In(_) => "in",
        ArgCondition::Matches(_) => "matches",
    };
    format!(
        "argument '{}' does not satisfy its '{test}' matcher",
        m.path.join(".")
    )
}

fn passes(m: &ArgMatcher, arguments: &Value) -> bool {
    let Some(v) = lookup(arguments, &m.path) else {
        return false;
    };
    match &m.condition {
        ArgCondition::Equals(want) => json_eq(v, want),
        ArgCondition::In(list) => list.iter().any(|want| json_eq(v, want)),
        ArgCondition::Matches(re) => re.is_match(&stringify(v)),
    }
}

/// The value at a dotted path: object keys, or indexes into arrays.
fn lookup<'v>(root: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(root, |v, seg| match v {
        Value::Object(m) => m.get(seg),
        Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// JSON equality with numbers compared by value (`1` equals `1.0`).
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, a)| y.get(k).is_some_and(|b| json_eq(a, b)))
        }
        _ => a == b,
    }
}

/// Numbers by value: integers exactly, an integer and a float only when the
/// float is that very integer (`12345678901234567.0` is read as
/// 12345678901234568 by a server that parses floats, so it does not equal
/// `12345678901234567`: session 47's review), floats as floats.
fn number_eq(x: &serde_json::Number, y: &serde_json::Number) -> bool {
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    // `as` saturates; a float beyond i128 is no integer of JSON's anyway.
    let is = |i: i128, f: f64| f.is_finite() && f.fract() == 0.0 && f as i128 == i;
    match (int(x), int(y)) {
        (Some(a), Some(b)) => a == b,
        (Some(a), None) => y.as_f64().is_some_and(|f| is(a, f)),
        (None, Some(b)) => x.as_f64().is_some_and(|f| is(b, f)),
        (None, None) => x.as_f64() == y.as_f64(),
    }
}

/// A string as itself; anything else as its JSON text.
fn stringify(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ArgMatcher, McpServer};
    use crate::rules::Rule;
    use serde_json::json;

    fn policy() -> ServerPolicy {
        let rule: Rule = serde_yaml_rule(r#"{"host": "mcp.test", "paths": ["/mcp", "/mcp/*"]}"#);
        let m = |path: &str, condition| ArgMatcher {
            path: path.split('.').map(str::to_string).collect(),
            condition,
        };
        ServerPolicy::new(&McpServer {
            name: "github".into(),
            rules: Scope(vec![rule]),
            tools: vec![
                McpTool {
                    name: "search".into(),
                    when: vec![],
                },
                McpTool {
                    name: "create_issue".into(),
                    when: vec![
                        m("owner", ArgCondition::Equals(json!("ironsh"))),
                        m("repo", ArgCondition::In(vec![json!("a"), json!("b")])),
                    ],
                },
                McpTool {
                    name: "create_issue".into(),
                    when: vec![m("owner", ArgCondition::Equals(json!("sandbox")))],
                },
                McpTool {
                    name: "count".into(),
                    when: vec![
                        m("n", ArgCondition::Equals(json!(3))),
                        m(
                            "opts.title",
                            ArgCondition::Matches(regex::Regex::new("^\\[bot\\]").expect("re")),
                        ),
                    ],
                },
            ],
        })
    }

    fn serde_yaml_rule(json_text: &str) -> Rule {
        serde_json::from_str(json_text).expect("rule")
    }

    #[test]
    fn default_deny_with_matchers() {
        let p = policy();
        assert_eq!(p.decide("search", &Value::Null), Decision::Allow);
        assert!(
            matches!(p.decide("delete_repo", &json!({})), Decision::Deny(r) if r.contains("not in"))
        );
        assert_eq!(
            p.decide("create_issue", &json!({"owner": "ironsh", "repo": "b"})),
            Decision::Allow
        );
        // The second entry for the tool is an alternative.
        assert_eq!(
            p.decide("create_issue", &json!({"owner": "sandbox"})),
            Decision::Allow
        );
        let d = p.decide(
            "create_issue",
            &json!({"owner": "ironsh", "repo": "secret-repo"}),
        );
        assert!(
            matches!(&d, Decision::Deny(r) if r.contains("'owner'") || r.contains("'repo'")),
            "{d:?}"
        );
        assert!(!format!("{d:?}").contains("secret-repo"), "never the value");
        // A missing argument fails its matcher; so do wrong types.
        assert!(matches!(
            p.decide("create_issue", &json!({"repo": "a"})),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.decide("create_issue", &json!({"owner": ["ironsh"], "repo": "a"})),
            Decision::Deny(_)
        ));
        // Numbers by value, nested paths, regex on the stringified value.
        assert_eq!(
            p.decide("count", &json!({"n": 3.0, "opts": {"title": "[bot] x"}})),
            Decision::Allow
        );
        assert!(matches!(
            p.decide("count", &json!({"n": "3", "opts": {"title": "[bot] x"}})),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.decide("count", &json!({"n": 3, "opts": {"title": "x [bot]"}})),
            Decision::Deny(_)
        ));
        assert!(p.lists("create_issue") && !p.lists("delete_repo"));
        // Tool names are exact.
        assert!(matches!(
            p.decide("Search", &Value::Null),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn covers_the_paths_a_server_would_route_there() {
        let p = policy();
        let t = |path| Target {
            host: "mcp.test",
            ip: None,
            method: "POST",
            method_overrides: &[],
            path,
            scheme: crate::rules::Scheme::Https,
        };
        for path in [
            "/mcp",
            "/mcp/x",
            "/%6Dcp",
            "/%6dcp",
            "//mcp",
            "/mcp%2Fx",
            "/%2Fmcp",
            // Express and ASP.NET Core route without regard to case, servlet
            // containers cut `;` parameters (session 47's review).
            "/MCP",
            "/Mcp/x",
            "/mcp;jsessionid=1",
            "/MCP;a=b/x",
            "/%4Dcp",
            "/%4d%43P",
        ] {
            assert!(p.covers(&t(path)), "{path}");
        }
        for path in ["/", "/api", "/mcpx", "/%6Dcpx", "/MCPX", "/mc;p"] {
            assert!(!p.covers(&t(path)), "{path}");
        }
        assert!(!p.covers(&Target {
            host: "other.test",
            ..t("/mcp")
        }));
    }

    #[test]
    fn stringify_and_numbers() {
        assert_eq!(stringify(&json!("a")), "a");
        assert_eq!(stringify(&json!(42)), "42");
        assert_eq!(stringify(&json!(true)), "true");
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(!json_eq(&json!(1), &json!("1")));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(json_eq(&json!(u64::MAX), &json!(u64::MAX)));
        // An integer beyond 2^53 and the float a server reads for it (session 47's review).
        let big: Value = serde_json::from_str("12345678901234567").expect("json");
        let float: Value = serde_json::from_str("12345678901234567.0").expect("json");
        assert!(!json_eq(&big, &float) && !json_eq(&float, &big));
        assert!(json_eq(
            &json!(9007199254740992_i64),
            &json!(9007199254740992.0)
        ));
        assert!(!json_eq(&json!(3), &json!(3.5)));
    }
}
