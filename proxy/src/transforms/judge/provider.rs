//! The two LLM backends a judge can call: Anthropic's Messages API and
//! OpenAI's Chat Completions API. One request in, the model's text and token
//! counts out; the API key goes only into the request's (sensitive) header.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::json;

use crate::config::{JudgeProvider, ProviderConfig};
use crate::secrets::http::HttpClient;
use crate::secrets::SecretValue;

/// Why a call produced no model text.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The request could not be sent or its answer read.
    #[error("calling {endpoint}: {detail}")]
    Transport {
        /// Where the call went.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// The API answered with an error status.
    #[error("{endpoint} answered {status}{}{}",
        kind.as_deref().map(|k| format!(" ({k})")).unwrap_or_default(),
        retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    Status {
        /// Where the call went.
        endpoint: String,
        /// The status.
        status: u16,
        /// The API's error type, when it sent one (`authentication_error`, ...).
        kind: Option<String>,
        /// How long a 429 or 503 asked callers to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// The answer is not the API's response shape.
    #[error("{endpoint}: {detail}")]
    Shape {
        /// Where the call went.
        endpoint: String,
        /// What was wrong.
        detail: &'static str,
    },
}

/// What the model said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The text of the answer.
    pub text: String,
    /// Prompt tokens billed.
    pub input_tokens: Option<u64>,
    /// Answer tokens billed.
    pub output_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    Anthropic,
    OpenAi,
}

/// A configured backend.
pub struct Provider {
    api: Api,
    /// The model id.
    pub model: String,
    endpoint: String,
    /// `endpoint` as errors name it: without a user, password or query
    /// (`base_url` may carry one; errors reach the audit record and the log).
    shown: String,
    key: SecretValue,
    max_tokens: u32,
}

impl Provider {
    /// The backend of `cfg`, with its API key.
    pub fn new(cfg: &JudgeProvider, key: SecretValue) -> Self {
        let (api, c, path): (Api, &ProviderConfig, &str) = match cfg {
            JudgeProvider::Anthropic(c) => (Api::Anthropic, c, "v1/messages"),
            JudgeProvider::OpenAi(c) => (Api::OpenAi, c, "v1/chat/completions"),
        };
        let base = c.base_url.as_str().trim_end_matches('/');
        let endpoint = format!("{base}/{path}");
        Provider {
            api,
            model: c.model.clone(),
            shown: crate::redact_url::for_log(&endpoint),
            endpoint,
            key,
            max_tokens: c.max_tokens,
        }
    }

    /// The API key (for redacting it from what the judge records).
    pub fn key(&self) -> &SecretValue {
        &self.key
    }

    /// The API request for a system prompt and a user message.
    pub fn request(&self, system: &str, user: &str) -> Result<Request<Full<Bytes>>, http::Error> {
        let (body, auth_name, auth_value) = match self.api {
            Api::Anthropic => (
                json!({
                    "model": self.model,
                    "max_tokens": self.max_tokens,
                    "system": system,
                    "messages": [{"role": "user", "content": user}],
                }),
                "x-api-key",
                zeroize::Zeroizing::new(self.key.expose().to_string()),
            ),
            Api::OpenAi => (
                json!({
                    "model": self.model,
                    "max_completion_tokens": self.max_tokens,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": user},
                    ],
                }),
                "authorization",
                zeroize::Zeroizing::new(format!("Bearer {}", self.key.expose())),
            ),
        };
        // The key's one copy outside its SecretValue is wiped when dropped.
        let mut auth = HeaderValue::from_str(&auth_value).map_err(http::Error::from)?;
        auth.set_sensitive(true);
        let mut b = Request::post(&self.endpoint)
            .header("content-type", "application/json")
            .header(auth_name, auth);
        if self.api == Api::Anthropic {
            b = b.header("anthropic-version", "2023-06-01");
        }
        b.body(Full::new(Bytes::from(body.to_string())))
    }

    /// Reads an answer with `status` and `body`.
    pub fn parse(&self, status: u16, body: &[u8]) -> Result<Completion, ProviderError> {
        if !(200..300).contains(&status) {
            #[derive(Deserialize)]
            struct ErrBody {
                error: Option<ErrDetail>,
            }
            #[derive(Deserialize)]
            struct ErrDetail {
                #[serde(rename = "type")]
                kind: Option<String>,
            }
            let kind = serde_json::from_slice::<ErrBody>(body)
                .ok()
                .and_then(|b| b.error)
                .and_then(|d| d.kind)
                .map(|k| k.chars().take(64).collect());
            return Err(ProviderError::Status {
                endpoint: self.shown.clone(),
                status,
                kind,
                retry_after: None,
            });
        }
        let shape = |detail| ProviderError::Shape {
            endpoint: self.shown.clone(),
            detail,
        };
        match self.api {
            Api::Anthropic => {
                #[derive(Deserialize)]
                struct Msg {
                    content: Vec<Block>,
                    usage: Option<Usage>,
                }
                #[derive(Deserialize)]
                struct Block {
                    #[serde(rename = "type")]
                    kind: String,
                    text: Option<String>,
                }
                #[derive(Deserialize)]
                struct Usage {
                    input_tokens: Option<u64>,
                    output_tokens: Option<u64>,
                }
                let m: Msg = serde_json::from_slice(body)
                    .map_err(|_| shape("the answer is not a Messages API response"))?;
                let text: String = m
                    .content
                    .into_iter()
                    .filter(|b| b.kind == "text")
                    .filter_map(|b| b.text)
                    .collect();
                Ok(Completion {
                    text,
                    input_tokens: m.usage.as_ref().and_then(|u| u.input_tokens),
                    output_tokens: m.usage.as_ref().and_then(|u| u.output_tokens),
                })
            }
            Api::OpenAi => {
                #[derive(Deserialize)]
                struct Chat {
                    choices: Vec<Choice>,
                    usage: Option<Usage>,
                }
                #[derive(Deserialize)]
                struct Choice {
                    message: ChoiceMsg,
                }
                #[derive(Deserialize)]
                struct ChoiceMsg {
                    content: Option<String>,
                }
                #[derive(Deserialize)]
                struct Usage {
                    prompt_tokens: Option<u64>,
                    completion_tokens: Option<u64>,
                }
                let c: Chat = serde_json::from_slice(body)
                    .map_err(|_| shape("the answer is not a Chat Completions response"))?;
                let text = c
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|ch| ch.message.content)
                    .ok_or_else(|| shape("the answer has no message content"))?;
                Ok(Completion {
                    text,
                    input_tokens: c.usage.as_ref().and_then(|u| u.prompt_tokens),
                    output_tokens: c.usage.as_ref().and_then(|u| u.completion_tokens),
                })
            }
        }
    }

    /// One call.
    pub async fn complete(
        &self,
        http: &HttpClient,
        system: &str,
        user: &str,
    ) -> Result<Completion, ProviderError> {
        let transport = |detail: String| ProviderError::Transport {
            endpoint: self.shown.clone(),
            detail,
        };
        let req = self
            .request(system, user)
            .map_err(|e| transport(format!("building the request: {e}")))?;
        let rsp = http.send_full(req).await.map_err(transport)?;
        let (status, headers) = (rsp.status(), rsp.headers());
        match self.parse(status.as_u16(), rsp.body()) {
            Err(ProviderError::Status {
                endpoint,
                status,
                kind,
                retry_after: None,
            }) if status == 429 || status == 503 => Err(ProviderError::Status {
                endpoint,
                status,
                kind,
                retry_after: headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| retry_after(v, SystemTime::now())),
            }),
            other => other,
        }
    }
}

impl ProviderError {
    /// How long the provider asked to be left alone (a 429 or 503 with `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A `Retry-After` value (RFC 9110 10.2.3): delay seconds or an HTTP date,
/// as the time left from `now`, at most the breaker's longest hold
/// ([`super::MAX_RETRY_AFTER`], so the reason says the wait that applies).
/// A date in the past is no wait (`None`).
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    let wait = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        // Longer than u64 seconds: as long as can be said.
        Duration::from_secs(v.parse().unwrap_or(u64::MAX))
    } else {
        let at = httpdate::parse_http_date(v).ok()?;
        at.duration_since(now).ok()?
    };
    (!wait.is_zero()).then(|| wait.min(super::MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use url::Url;

    fn provider(anthropic: bool, base: &str) -> Provider {
        let c = ProviderConfig {
            model: "m-1".into(),
            api_key_env: "K".into(),
            base_url: Url::parse(base).expect("url"),
            max_tokens: 99,
        };
        let cfg = if anthropic {
            JudgeProvider::Anthropic(c)
        } else {
            JudgeProvider::OpenAi(c)
        };
        Provider::new(&cfg, SecretValue::new("sk-test".into()))
    }

    async fn body(req: Request<Full<Bytes>>) -> serde_json::Value {
        let b = req.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&b).expect("json")
    }

    /// `base_url` may carry a user and password or a key in its query; an
    /// error (it reaches the judge's audit annotations and the log) names
    /// the endpoint without them, the request still goes to the URL as given.
    #[tokio::test]
    async fn errors_name_the_endpoint_without_userinfo_or_query() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
            l.local_addr().expect("its address")
        };
        let p = provider(true, &format!("http://gw:GATEWAYPW@{addr}/anthropic/"));
        let req = p.request("sys", "user").expect("request");
        assert_eq!(
            req.uri().to_string(),
            format!("http://gw:GATEWAYPW@{addr}/anthropic/v1/messages")
        );
        let shown = format!("http://{addr}/anthropic/v1/messages");
        let refused = p
            .complete(&HttpClient::new(), "sys", "user")
            .await
            .expect_err("nobody listens")
            .to_string();
        let status = p.parse(401, b"{}").expect_err("401").to_string();
        let shape = p.parse(200, b"[]").expect_err("not JSON").to_string();
        for e in [&refused, &status, &shape] {
            assert!(e.contains(&shown), "names the endpoint: {e}");
            assert!(!e.contains("GATEWAYPW") && !e.contains("gw:"), "{e}");
        }
        let p = provider(false, &format!("http://{addr}/openai/?key=GATEWAYQ"));
        let e = p.parse(500, b"{}").expect_err("500").to_string();
        assert!(
            e.starts_with(&format!("http://{addr}/openai/ answered 500")),
            "{e}"
        );
        assert!(!e.contains("GATEWAYQ"), "{e}");
    }

    #[tokio::test]
    async fn anthropic_requests_and_answers() {
        let p = provider(true, "https://gw.test/anthropic/");
        let req = p.request("sys", "user").expect("request");
        assert_eq!(req.uri(), "https://gw.test/anthropic/v1/messages");
        assert_eq!(req.headers()["x-api-key"], "sk-test");
        assert!(req.headers()["x-api-key"].is_sensitive());
        assert_eq!(req.headers()["anthropic-version"], "2023-06-01");
        let b = body(req).await;
        assert_eq!(b["system"], "sys");
        assert_eq!(b["max_tokens"], 99);
        assert_eq!(b["messages"], json!([{"role": "user", "content": "user"}]));
        let ok = br#"{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":"{\"decision\":"},{"type":"text","text":"\"ALLOW\"}"}],"usage":{"input_tokens":10,"output_tokens":3}}"#;
        assert_eq!(
            p.parse(200, ok).expect("parsed"),
            Completion {
                text: r#"{"decision":"ALLOW"}"#.into(),
                input_tokens: Some(10),
                output_tokens: Some(3)
            }
        );
        let e = p
            .parse(401, br#"{"type":"error","error":{"type":"authentication_error","message":"bad key sk-test"}}"#)
            .expect_err("status");
        assert_eq!(
            e.to_string(),
            "https://gw.test/anthropic/v1/messages answered 401 (authentication_error)"
        );
        assert!(p.parse(200, b"<html>").is_err());
    }

    #[tokio::test]
    async fn openai_requests_and_answers() {
        let p = provider(false, "https://api.openai.com");
        let req = p.request("sys", "user").expect("request");
        assert_eq!(req.uri(), "https://api.openai.com/v1/chat/completions");
        assert_eq!(req.headers()["authorization"], "Bearer sk-test");
        let b = body(req).await;
        assert_eq!(b["max_completion_tokens"], 99);
        assert_eq!(
            b["messages"][0],
            json!({"role": "system", "content": "sys"})
        );
        let ok = br#"{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"{\"decision\":\"DENY\"}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":7,"completion_tokens":2,"total_tokens":9}}"#;
        let c = p.parse(200, ok).expect("parsed");
        assert_eq!((c.input_tokens, c.output_tokens), (Some(7), Some(2)));
        assert!(p.parse(200, br#"{"choices":[]}"#).is_err());
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").expect("date");
        assert_eq!(retry_after(" 30 ", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("0", now), None);
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            None,
            "past"
        );
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-5", now), None);
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(super::super::MAX_RETRY_AFTER)
        );
    }
}
