//! The `aws_sm` and `aws_ssm` sources: Secrets Manager `GetSecretValue` and
//! Parameter Store `GetParameter`, as AWS JSON 1.1 calls signed with SigV4.
//!
//! Credentials and the default region come from `aws-config`'s standard
//! chain (environment, shared config and credentials files, web identity,
//! ECS container credentials, IMDSv2), loaded once and shared by every AWS
//! source. Endpoints honour `AWS_ENDPOINT_URL_SECRETS_MANAGER`,
//! `AWS_ENDPOINT_URL_SSM` and `AWS_ENDPOINT_URL` (unless
//! `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`), else
//! `https://{service}.{region}.amazonaws.com` (`.com.cn` in China regions).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::http::{HttpClient, SdkHttp};
use super::{EnvLookup, Fetch, SecretError, SecretValue};

/// Replacements for the default chain, for tests and special deployments.
#[derive(Clone, Default)]
pub struct AwsOverrides {
    /// Use these credentials instead of the default chain.
    pub credentials: Option<Credentials>,
    /// Region for sources that name none, instead of the default chain's.
    pub region: Option<String>,
}

/// What every AWS source shares: the loaded SDK config and cached credentials.
#[derive(Clone)]
pub struct AwsShared {
    inner: Arc<AwsInner>,
}

struct AwsInner {
    overrides: AwsOverrides,
    http: HttpClient,
    env: EnvLookup,
    sdk: tokio::sync::OnceCell<SdkConfig>,
    creds: tokio::sync::Mutex<Option<Credentials>>,
}

/// Signs `req` (its method, URL and headers, and `body`) with SigV4 for
/// `service` in `region`, adding the signature headers to it.
pub(crate) fn sign_request(
    req: &mut Request<()>,
    body: &[u8],
    creds: Credentials,
    region: &str,
    service: &str,
    settings: SigningSettings,
) -> Result<(), String> {
    let identity = creds.into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = req.uri().to_string();
    let headers: Vec<(&str, &str)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

/// Credentials closer than this to expiry are fetched again.
const CREDENTIALS_REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl AwsShared {
    /// Shared state; nothing is loaded until the first fetch.
    pub fn new(overrides: AwsOverrides, http: HttpClient, env: EnvLookup) -> Self {
        AwsShared {
            inner: Arc::new(AwsInner {
                overrides,
                http,
                env,
                sdk: tokio::sync::OnceCell::new(),
                creds: tokio::sync::Mutex::new(None),
            }),
        }
    }

    async fn sdk(&self) -> &SdkConfig {
        self.inner
            .sdk
            .get_or_init(|| async {
                // The credential chain's calls (STS, SSO, ECS, IMDS) go
                // through the backend client like every other backend call.
                let http = aws_smithy_runtime_api::client::http::SharedHttpClient::new(SdkHttp(
                    self.inner.http.clone(),
                ));
                let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
                if let Some(r) = &self.inner.overrides.region {
                    loader = loader.region(aws_config::Region::new(r.clone()));
                }
                loader.load().await
            })
            .await
    }

    async fn region(
        &self,
        configured: &Option<String>,
        backend: &'static str,
    ) -> Result<String, SecretError> {
        if let Some(r) = configured.as_ref().or(self.inner.overrides.region.as_ref()) {
            return Ok(r.clone());
        }
        self.sdk()
            .await
            .region()
            .map(|r| r.to_string())
            .ok_or_else(|| SecretError::Backend {
                backend,
                detail: "no AWS region: set `region` on the source or AWS_REGION".into(),
            })
    }

    /// Credentials from the overrides or the default chain, cached until
    /// five minutes before they expire. `backend` names the user in errors.
    pub(crate) async fn credentials(
        &self,
        backend: &'static str,
    ) -> Result<Credentials, SecretError> {
        if let Some(c) = &self.inner.overrides.credentials {
            return Ok(c.clone());
        }
        let mut cached = self.inner.creds.lock().await;
        if let Some(c) = cached.as_ref() {
            let fresh = c
                .expiry()
                .is_none_or(|e| e > SystemTime::now() + CREDENTIALS_REFRESH_MARGIN);
            if fresh {
                return Ok(c.clone());
            }
        }
        let err = |detail: String| SecretError::Backend { backend, detail };
        let provider = self
            .sdk()
            .await
            .credentials_provider()
            .ok_or_else(|| err("no AWS credentials provider is configured".into()))?;
        let c = provider.provide_credentials().await.map_err(|e| {
            err(format!(
                "loading AWS credentials: {}",
                crate::error_chain(&e)
            ))
        })?;
        *cached = Some(c.clone());
        Ok(c)
    }

    /// The region the default chain (or the overrides) names, if any.
    pub(crate) async fn default_region(&self) -> Option<String> {
        if let Some(r) = &self.inner.overrides.region {
            return Some(r.clone());
        }
        self.sdk().await.region().map(|r| r.to_string())
    }

    /// The backend HTTP client every AWS call goes through.
    pub(crate) fn http(&self) -> &HttpClient {
        &self.inner.http
    }

    /// The endpoint the environment configures for a service:
    /// `service_var`, else `AWS_ENDPOINT_URL`, unless
    /// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`.
    pub(crate) fn configured_endpoint(&self, service_var: &str) -> Option<String> {
        let env = &self.inner.env;
        let ignore = env
            .var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        if ignore {
            return None;
        }
        [service_var, "AWS_ENDPOINT_URL"]
            .into_iter()
            .find_map(|var| env.var(var).filter(|u| !u.is_empty()))
    }

    /// The endpoint for a service: the override variables, else the public one.
    fn endpoint(&self, service_var: &str, prefix: &str, region: &str) -> String {
        if let Some(url) = self.configured_endpoint(service_var) {
            return url;
        }
        format!("https://{prefix}.{region}.{}", dns_suffix(region))
    }

    /// One signed AWS JSON 1.1 call; returns the 200 response body.
    async fn call(
        &self,
        api: Api,
        region: &str,
        body: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>, SecretError> {
        let backend = api.backend;
        let err = |detail: String| SecretError::Backend { backend, detail };
        let creds = self.credentials(backend).await?;
        let mut url = self.endpoint(api.endpoint_var, api.prefix, region);
        // The endpoint may come from `AWS_ENDPOINT_URL*`, with a user and
        // password or a query: errors name it without them.
        let shown = || crate::redact_url::for_log(&url);
        let uri: http::Uri = url
            .parse()
            .map_err(|_| err(format!("invalid endpoint URL {:?}", shown())))?;
        if uri.host().is_none() || uri.scheme().is_none() {
            return Err(err(format!(
                "endpoint URL {:?} needs a scheme and a host",
                shown()
            )));
        }
        if uri.path().is_empty() || uri.path_and_query().is_none() {
            url.push('/');
        }
        let mut req = Request::builder()
            .method("POST")
            .uri(&url)
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", api.target)
            .body(())
            .map_err(|e| err(format!("building request: {e}")))?;
        sign_request(
            &mut req,
            &body,
            creds.clone(),
            region,
            api.signing_name,
            SigningSettings::default(),
        )
        .map_err(|e| err(format!("signing: {e}")))?;
        let req = req.map(|()| Full::new(Bytes::from(body)));
        let (status, rsp) = self
            .inner
            .http
            .send(req)
            .await
            .map_err(|e| err(format!("{}: {e}", crate::redact_url::for_log(&url))))?;
        if status.is_success() {
            return Ok(rsp);
        }
        Err(err(error_detail(status, &rsp, &creds)))
    }
}

/// An AWS JSON 1.1 error answer in words: its status, then the error
/// document's `__type` (without its namespace) and `message`, each shown as
/// peer text is. The service's text (the `__type` as much as the message)
/// is not ours to trust with the keys: the signing credentials are scrubbed
/// from it.
fn error_detail(status: http::StatusCode, body: &[u8], creds: &Credentials) -> String {
    #[derive(Deserialize)]
    struct AwsError {
        #[serde(rename = "__type")]
        kind: Option<String>,
        #[serde(alias = "Message")]
        message: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<AwsError>(body) else {
        return format!("{status}");
    };
    let scrub = super::scrub::Scrubber::new(
        [Some(creds.secret_access_key()), creds.session_token()]
            .into_iter()
            .flatten(),
    );
    let kind = e
        .kind
        .as_deref()
        .map(|k| k.rsplit('#').next().unwrap_or(k))
        .unwrap_or("error");
    format!(
        "{status}: {}: {}",
        scrub.peer_text(kind),
        scrub.peer_text(&e.message.unwrap_or_default())
    )
}

/// One AWS operation.
#[derive(Clone, Copy)]
struct Api {
    backend: &'static str,
    signing_name: &'static str,
    prefix: &'static str,
    endpoint_var: &'static str,
    target: &'static str,
}

const GET_SECRET_VALUE: Api = Api {
    backend: "aws_sm",
    signing_name: "secretsmanager",
    prefix: "secretsmanager",
    endpoint_var: "AWS_ENDPOINT_URL_SECRETS_MANAGER",
    target: "secretsmanager.GetSecretValue",
};

const GET_PARAMETER: Api = Api {
    backend: "aws_ssm",
    signing_name: "ssm",
    prefix: "ssm",
    endpoint_var: "AWS_ENDPOINT_URL_SSM",
    target: "AmazonSSM.GetParameter",
};

/// `aws_sm`: one Secrets Manager secret (`SecretString`, or UTF-8 `SecretBinary`).
pub struct SecretsManager {
    aws: AwsShared,
    secret_id: String,
    region: Option<String>,
}

impl SecretsManager {
    /// A source for `secret_id`.
    pub fn new(aws: AwsShared, secret_id: String, region: Option<String>) -> Self {
        SecretsManager {
            aws,
            secret_id,
            region,
        }
    }
}

#[async_trait]
impl Fetch for SecretsManager {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let region = self
            .aws
            .region(&self.region, GET_SECRET_VALUE.backend)
            .await?;
        let body = serde_json::json!({ "SecretId": self.secret_id }).to_string();
        let rsp = self
            .aws
            .call(GET_SECRET_VALUE, &region, body.into_bytes())
            .await?;
        secret_value(&rsp)
    }
}

/// The secret in a `GetSecretValue` answer: `SecretString`, else
/// `SecretBinary` (base64) holding UTF-8 text.
fn secret_value(rsp: &[u8]) -> Result<SecretValue, SecretError> {
    #[derive(Deserialize)]
    struct Out {
        #[serde(rename = "SecretString")]
        string: Option<String>,
        #[serde(rename = "SecretBinary")]
        binary: Option<String>,
    }
    let bad = |detail: &str| SecretError::Backend {
        backend: "aws_sm",
        detail: detail.to_string(),
    };
    let out: Out =
        serde_json::from_slice(rsp).map_err(|_| bad("malformed GetSecretValue response"))?;
    let binary = out.binary.map(Zeroizing::new);
    match (out.string, binary) {
        (Some(s), _) => Ok(SecretValue::from(Zeroizing::new(s))),
        (None, Some(b64)) => {
            let bytes = Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.as_bytes())
                    .map_err(|_| bad("SecretBinary is not base64"))?,
            );
            let s =
                std::str::from_utf8(&bytes).map_err(|_| bad("SecretBinary is not UTF-8 text"))?;
            Ok(SecretValue::new(s.to_string()))
        }
        (None, None) => Err(bad("the secret has neither SecretString nor SecretBinary")),
    }
}

/// `aws_ssm`: one Parameter Store parameter.
pub struct ParameterStore {
    aws: AwsShared,
    name: String,
    region: Option<String>,
    with_decryption: bool,
}

impl ParameterStore {
    /// A source for parameter `name`.
    pub fn new(
        aws: AwsShared,
        name: String,
        region: Option<String>,
        with_decryption: bool,
    ) -> Self {
        ParameterStore {
            aws,
            name,
            region,
            with_decryption,
        }
    }
}

#[async_trait]
impl Fetch for ParameterStore {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        let region = self.aws.region(&self.region, GET_PARAMETER.backend).await?;
        let body = serde_json::json!({ "Name": self.name, "WithDecryption": self.with_decryption })
            .to_string();
        let rsp = self
            .aws
            .call(GET_PARAMETER, &region, body.into_bytes())
            .await?;
        parameter_value(&rsp)
    }
}

/// The value in a `GetParameter` answer.
fn parameter_value(rsp: &[u8]) -> Result<SecretValue, SecretError> {
    #[derive(Deserialize)]
    struct Out {
        #[serde(rename = "Parameter")]
        parameter: Param,
    }
    #[derive(Deserialize)]
    struct Param {
        #[serde(rename = "Value")]
        value: String,
    }
    let out: Out = serde_json::from_slice(rsp).map_err(|_| SecretError::Backend {
        backend: "aws_ssm",
        detail: "malformed GetParameter response".into(),
    })?;
    Ok(SecretValue::from(Zeroizing::new(out.parameter.value)))
}

/// The domain of a region's public endpoints (`amazonaws.com.cn` in China).
pub(crate) fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    }
}

#[cfg(test)]
mod fuzz;
