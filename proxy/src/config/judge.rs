//! The `judge` transform: an LLM that may deny matching requests. Names are
//! unique across instances (checked in `mod.rs`, which sees every entry).

use url::Url;

use super::common::http_url;
use super::decode::{env_var_name, int, one_of, str_with, Cx, Decode, Res};
use super::sections::secs;
use super::values::PositiveDuration;
use super::yaml::Node;
use crate::rules::{Rule, Scope};

/// `judge`: an LLM that may deny matching requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeConfig {
    /// Instance name, unique across judges.
    pub name: String,
    /// The natural-language policy.
    pub prompt: String,
    /// Where it applies (at least one rule).
    pub rules: Scope,
    /// The LLM backend.
    pub provider: JudgeProvider,
    /// What a failed call does (default deny).
    pub fallback: JudgeFallback,
    /// Per-call timeout (default 8s).
    pub timeout: PositiveDuration,
    /// In-flight call cap (default 100, at least 1).
    pub max_concurrent: u32,
    /// Consecutive-failure breaker.
    pub circuit_breaker: CircuitBreakerConfig,
}

/// `judge.fallback`. There is deliberately no `allow`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JudgeFallback {
    /// Reject with 403 (default).
    #[default]
    Deny,
    /// Continue with the next transform.
    Skip,
}

/// `judge.circuit_breaker`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Failures in a row that open the breaker (default 5, at least 1).
    pub consecutive_failures: u32,
    /// How long it stays open (default 10s).
    pub cooldown: PositiveDuration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            consecutive_failures: 5,
            cooldown: secs(10),
        }
    }
}

/// `judge.provider`, by `type`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JudgeProvider {
    /// Anthropic Messages API (base_url default `https://api.anthropic.com`).
    Anthropic(ProviderConfig),
    /// OpenAI Chat Completions (base_url default `https://api.openai.com`).
    OpenAi(ProviderConfig),
}

/// The fields both providers share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    /// Model id.
    pub model: String,
    /// Variable holding the API key.
    pub api_key_env: String,
    /// API base URL.
    pub base_url: Url,
    /// Response token cap (default 256).
    pub max_tokens: u32,
}

impl Decode for JudgeProvider {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &["type", "model", "api_key_env", "base_url", "max_tokens"],
        )?;
        let kind = m.req_with(cx, "type", |n, cx| {
            one_of(
                n,
                cx,
                "provider type",
                &[("anthropic", true), ("openai", false)],
            )
        });
        let model = m.req(cx, "model");
        let api_key_env = m.req_with(cx, "api_key_env", env_var_name);
        let base_url = m.opt_with(cx, "base_url", http_url);
        let max_tokens = m.opt_with(cx, "max_tokens", |n, cx| int(n, cx, 1, i64::from(u32::MAX)));
        let anthropic = kind?;
        let default_url = if anthropic {
            "https://api.anthropic.com"
        } else {
            "https://api.openai.com"
        };
        let cfg = ProviderConfig {
            model: model?,
            api_key_env: api_key_env?,
            base_url: base_url?
                .unwrap_or_else(|| Url::parse(default_url).expect("constant URL is valid")),
            max_tokens: max_tokens?.map_or(256, |v| u32::try_from(v).unwrap_or(u32::MAX)),
        };
        Ok(if anthropic {
            JudgeProvider::Anthropic(cfg)
        } else {
            JudgeProvider::OpenAi(cfg)
        })
    }
}

fn positive_u32(node: &Node, cx: &mut Cx) -> Res<u32> {
    int(node, cx, 1, i64::from(u32::MAX)).map(|v| u32::try_from(v).unwrap_or(u32::MAX))
}

impl Decode for CircuitBreakerConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(node, &["consecutive_failures", "cooldown"])?;
        let failures = m.opt_with(cx, "consecutive_failures", positive_u32);
        let cooldown = m.or(cx, "cooldown", secs(10));
        Ok(CircuitBreakerConfig {
            consecutive_failures: failures?.unwrap_or(5),
            cooldown: cooldown?,
        })
    }
}

impl Decode for JudgeConfig {
    fn decode(node: &Node, cx: &mut Cx) -> Res<Self> {
        let m = cx.map(
            node,
            &[
                "name",
                "prompt",
                "rules",
                "provider",
                "fallback",
                "timeout",
                "max_concurrent",
                "circuit_breaker",
            ],
        )?;
        let name = m.req_with(cx, "name", |n, cx| {
            str_with(n, cx, |s| {
                if s.trim().is_empty() {
                    Err("name must not be empty".into())
                } else {
                    Ok(s.to_string())
                }
            })
        });
        let prompt = m.req_with(cx, "prompt", |n, cx| {
            str_with(n, cx, |s| {
                if s.trim().is_empty() {
                    Err("prompt must not be empty".into())
                } else {
                    Ok(s.to_string())
                }
            })
        });
        let rules = m.non_empty::<Rule>(cx, "rules", "rule");
        let provider = m.req(cx, "provider");
        let fallbacks = [("deny", JudgeFallback::Deny), ("skip", JudgeFallback::Skip)];
        let fallback = m.opt_with(cx, "fallback", |n, cx| {
            if n.scalar() == Some("allow") {
                return Err(cx.error(n.pos, "invalid judge fallback 'allow' (expected one of: deny, skip): a failing judge cannot approve a request"));
            }
            one_of(n, cx, "judge fallback", &fallbacks)
        });
        let timeout = m.or(cx, "timeout", secs(8));
        let max_concurrent = m.opt_with(cx, "max_concurrent", positive_u32);
        let circuit_breaker = m.or_default(cx, "circuit_breaker");
        Ok(JudgeConfig {
            name: name?,
            prompt: prompt?,
            rules: Scope(rules?),
            provider: provider?,
            fallback: fallback?.unwrap_or_default(),
            timeout: timeout?,
            max_concurrent: max_concurrent?.unwrap_or(100),
            circuit_breaker: circuit_breaker?,
        })
    }
}
