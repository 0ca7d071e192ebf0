//! Tests of the oauth_token transform that need no real token server: the endpoint stub, the
//! RS256 assertion (verified with the public key), failing closed (also on a stub token
//! answered by a local stand-in), entry selection, the state a rebuilt (reloaded) entry keeps
//! (against a local endpoint that rotates refresh tokens). Minting against a real authorization
//! server is the e2e test `secrets::oauth` (Authlib).

use base64::Engine as _;
use serde_json::json;

use super::*;
use crate::config::TransformConfig;
use crate::pipeline::PhaseOutcome;
use crate::transforms::test_support::{header, request, run, sources, token_endpoint};

fn transform(tokens: &str, env: &[(&str, &str)]) -> OAuthToken {
    let text = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
         transforms:\n  - name: oauth_token\n    config:\n      tokens:\n{tokens}"
    );
    let cfg = crate::config::parse(&text, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::OauthToken(c)) = cfg.transforms.first() else {
        panic!("not oauth_token");
    };
    OAuthToken::new(c, &sources(env)).expect("build")
}

const CC: &str = "        - grant: client_credentials
          client_id: {type: env, var: ID}
          client_secret: {type: env, var: SECRET}
          token_endpoint: \"https://login.example.com/oauth2/token\"
          rules: [{host: api.example.com}]
";

fn flow(host: &str, method: &str, path: &str) -> Flow {
    crate::pipeline::test_flow(host, method, path)
}

#[tokio::test]
async fn the_token_endpoint_is_answered_with_the_stub() {
    let t = transform(CC, &[]);
    let mut req = request(
        "POST",
        "/oauth2/token",
        &[],
        Some("grant_type=client_credentials"),
    );
    let mut cx = flow("login.example.com", "POST", "/oauth2/token");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    let PhaseOutcome::Stub(_, rsp) = outcome else {
        panic!("not stubbed")
    };
    assert_eq!(rsp.headers()["content-type"], "application/json");
    let body = crate::body::collect(rsp.into_body(), 4096)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        body,
        json!({"access_token": STUB_TOKEN, "expires_in": 3600, "token_type": "Bearer"})
    );
    assert_eq!(
        trace.annotations.get("stubbed"),
        Some(&json!("oauth2_token_endpoint"))
    );
    // Another path or port on that host is not the endpoint.
    let t = transform(CC, &[]);
    assert!(!t.entries[0].is_endpoint(&flow("login.example.com", "POST", "/other"), "/other"));
    let mut other_port = flow("login.example.com", "POST", "/oauth2/token");
    other_port.dest.port = 8443;
    assert!(!t.entries[0].is_endpoint(&other_port, "/oauth2/token"));
    assert!(t.entries[0].is_endpoint(
        &flow("LOGIN.example.com", "POST", "/oauth2/token/"),
        "/oauth2/token/"
    ));
}

#[tokio::test]
async fn a_token_that_cannot_be_minted_refuses_the_request() {
    // No credentials at all: the mint fails before any network call.
    let t = transform(CC, &[]);
    let mut req = request(
        "GET",
        "/v1/things",
        &[("authorization", "Bearer iron-proxy-stub-token")],
        None,
    );
    let mut cx = flow("api.example.com", "GET", "/v1/things");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    let PhaseOutcome::Reject(_, r) = outcome else {
        panic!("not refused")
    };
    assert_eq!(
        (r.status.as_u16(), r.reason.as_str()),
        (502, "token_unavailable")
    );
    assert_eq!(
        trace.annotations.get("grant"),
        Some(&json!("client_credentials"))
    );
    assert_eq!(
        trace.annotations.get("rejected"),
        Some(&json!("token_unavailable"))
    );
    assert!(trace.annotations.get("error").is_some());
    assert_eq!(
        header(&req, "authorization"),
        "Bearer iron-proxy-stub-token",
        "left as it was"
    );
}

/// An endpoint on 127.0.0.1 that answers every request the way iron-proxy's
/// stub does; returns its token URL.
async fn stub_answering_endpoint() -> String {
    let addr = crate::test_http::serve_http1(hyper::service::service_fn(|_req| async {
        let body = json!({"access_token": STUB_TOKEN, "expires_in": 3600, "token_type": "Bearer"});
        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body.to_string()))))
    }))
    .await;
    format!("http://{addr}/oauth2/token")
}

#[tokio::test]
async fn a_minted_stub_token_is_refused_not_injected() {
    // An endpoint answering with iron-proxy's stub token is an iron-proxy
    // (this one, reached some way the connector cannot see, or another).
    let endpoint = stub_answering_endpoint().await;
    let t = transform(
        &CC.replace("https://login.example.com/oauth2/token", &endpoint),
        &[("ID", "i"), ("SECRET", "s")],
    );
    let mut req = request("GET", "/v1/things", &[], None);
    let mut cx = flow("api.example.com", "GET", "/v1/things");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    let PhaseOutcome::Reject(_, r) = outcome else {
        panic!("the stub token was accepted: {:?}", trace.annotations)
    };
    assert_eq!(
        (r.status.as_u16(), r.reason.as_str()),
        (502, "token_unavailable")
    );
    let error = trace
        .annotations
        .get("error")
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("iron-proxy's own stub token"), "{error}");
    assert!(
        req.headers().get("authorization").is_none(),
        "nothing injected"
    );
}

/// An earlier credential transform set the header: it wins, and this one
/// neither mints (here the mint would fail and refuse) nor injects.
#[tokio::test]
async fn a_header_an_earlier_credential_transform_set_is_left_alone() {
    let t = transform(CC, &[]);
    let mut req = request(
        "GET",
        "/v1/things",
        &[("authorization", "Bearer earlier")],
        None,
    );
    let mut cx = flow("api.example.com", "GET", "/v1/things");
    cx.mark_credential_header(&http::header::AUTHORIZATION);
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert_eq!(
        trace.annotations.get("already_set"),
        Some(&json!(["header:Authorization"]))
    );
    assert!(trace.annotations.get("injected").is_none());
    assert_eq!(header(&req, "authorization"), "Bearer earlier");
}

#[tokio::test]
async fn requests_outside_every_entry_and_host_only_checks_are_untouched() {
    let t = transform(CC, &[("ID", "i"), ("SECRET", "s")]);
    let mut req = request("GET", "/", &[], None);
    let (outcome, trace) = run(t, &mut req, &mut flow("elsewhere.example.com", "GET", "/")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert!(trace.annotations.is_empty());
    let t = transform(CC, &[("ID", "i"), ("SECRET", "s")]);
    let (outcome, trace) = run(t, &mut req, &mut flow("api.example.com", "", "")).await;
    assert!(matches!(outcome, PhaseOutcome::Continue));
    assert!(trace.annotations.is_empty());
}

#[test]
fn the_jwt_assertion_is_rs256_over_the_configured_claims() {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::KeyPair as _;
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key).expect("pkcs8");
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let pem = format!("-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n");
    let t = transform(
        "        - grant: jwt_bearer
          issuer: {type: env, var: ISS}
          subject: {type: env, var: SUB}
          private_key: {type: env, var: KEY}
          private_key_id: {type: env, var: KID}
          audience: \"account.example.com\"
          token_endpoint: \"https://account.example.com/oauth/token\"
          scopes: [signature, impersonation]
          rules: [{host: api.example.com}]
",
        &[],
    );
    let creds = Creds(vec![
        ("issuer", Zeroizing::new("integration-key".into())),
        ("subject", Zeroizing::new("user-guid".into())),
        ("private_key", Zeroizing::new(pem)),
        ("private_key_id", Zeroizing::new("kid-1".into())),
    ]);
    let jwt = t.entries[0]
        .assertion(&creds, "account.example.com")
        .map_err(|e| e.0)
        .expect("assertion");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |s: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .expect("b64url");
        serde_json::from_slice::<serde_json::Value>(&bytes).expect("json")
    };
    assert_eq!(
        decode(parts[0]),
        json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
    );
    let claims = decode(parts[1]);
    assert_eq!(claims["iss"], json!("integration-key"));
    assert_eq!(claims["sub"], json!("user-guid"));
    assert_eq!(claims["aud"], json!("account.example.com"));
    assert_eq!(claims["scope"], json!("signature impersonation"));
    let (iat, exp) = (
        claims["iat"].as_u64().expect("iat"),
        claims["exp"].as_u64().expect("exp"),
    );
    assert_eq!(exp - iat, ASSERTION_LIFETIME);
    let public =
        AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(key.public_key()).expect("spki");
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("sig");
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        public.as_ref(),
    )
    .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
    .expect("the signature verifies with the public key");

    // Not a PEM RSA key: a clear error, no key material in it.
    let bad = Creds(vec![(
        "private_key",
        Zeroizing::new("-----BEGIN NOTHING-----".into()),
    )]);
    let e = t.entries[0]
        .assertion(&bad, "a")
        .map(|_| ())
        .map_err(|e| e.0)
        .unwrap_err();
    assert!(e.contains("not a PEM RSA private key"), "{e}");
}

#[test]
fn a_changed_credential_changes_the_fingerprint() {
    let a = Creds(vec![
        ("client_id", Zeroizing::new("i".into())),
        ("client_secret", Zeroizing::new("s1".into())),
    ]);
    let b = Creds(vec![
        ("client_id", Zeroizing::new("i".into())),
        ("client_secret", Zeroizing::new("s2".into())),
    ]);
    let c = Creds(vec![
        ("client_id", Zeroizing::new("is".into())),
        ("client_secret", Zeroizing::new("1".into())),
    ]);
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), c.fingerprint(), "field boundaries count");
    assert_eq!(a.fingerprint(), a.fingerprint());
}

#[test]
fn expires_in_reads_numbers_strings_and_fractions() {
    let read = |json: &str| {
        let raw: Box<serde_json::value::RawValue> = serde_json::from_str(json).expect("valid JSON");
        super::expires_in(&raw)
    };
    assert_eq!(read("3600"), Some(3600));
    assert_eq!(read(r#""3600""#), Some(3600));
    assert_eq!(read(r#"" 3600 ""#), Some(3600));
    // A fraction is seconds too (it was "does not expire": never minted again).
    assert_eq!(read("3599.9"), Some(3599));
    assert_eq!(read(r#""5.0""#), Some(5));
    assert_eq!(read("-0.5"), Some(1), "already expired");
    assert_eq!(read("-30"), Some(1), "already expired");
    assert_eq!(read("18446744073709551615"), Some(MAX_EXPIRES_IN));
    assert_eq!(read("1e400"), Some(MAX_EXPIRES_IN), "beyond f64");
    assert_eq!(read("-1e400"), Some(1));
    assert_eq!(read(r#""NaN""#), None);
    assert_eq!(read(r#""soon""#), None);
    assert_eq!(read("true"), None);
    assert_eq!(read("null"), None);
}

#[test]
fn an_answer_with_an_expires_in_beyond_f64_is_a_token() {
    let raw: RawToken =
        serde_json::from_str(r#"{"access_token": "t", "expires_in": 1e400}"#).expect("parses");
    assert_eq!(
        raw.expires_in.as_deref().and_then(super::expires_in),
        Some(MAX_EXPIRES_IN)
    );
}

/// The token injected is noted (the token, not the header's prefix), so the
/// response is scrubbed of it: a header and a body echoing it reach the
/// workload masked, and the scrub's annotations are in this transform's
/// response entry. `scrub_response_bodies: false` leaves the body alone.
#[tokio::test]
async fn the_injected_token_is_scrubbed_from_the_response() {
    const MINTED: &str = "minted-access-token-0123456789";
    let endpoint = token_endpoint(MINTED).await;
    let entry = CC
        .replace("https://login.example.com/oauth2/token", &endpoint)
        .replace("rules:", "value_prefix: \"Token \"\n          rules:");
    for scrub_body in [true, false] {
        let tokens = format!("{entry}      scrub_response_bodies: {scrub_body}\n");
        let t = transform(&tokens, &[("ID", "i"), ("SECRET", "s")]);
        let p = crate::pipeline::Pipeline::new(vec![Arc::new(t)]);
        let mut req = request("GET", "/v1/things", &[], None);
        let mut cx = flow("api.example.com", "GET", "/v1/things");
        let mut trace = Vec::new();
        let out = p.on_request(&mut req, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue));
        assert_eq!(header(&req, "authorization"), format!("Token {MINTED}"));
        assert_eq!(cx.secret_values().collect::<Vec<_>>(), [MINTED]);

        let echo = format!("Token {MINTED}");
        let mut rsp = Response::new(crate::body::full(format!(
            r#"{{"authorization":"{echo}"}}"#
        )));
        rsp.headers_mut()
            .insert("x-echo", HeaderValue::from_str(&echo).expect("value"));
        let out = p.on_response(&mut rsp, &mut cx, &mut trace).await;
        assert!(matches!(out, PhaseOutcome::Continue));
        assert_eq!(rsp.headers()["x-echo"], "Token [redacted]");
        let body = crate::body::collect(rsp.into_body(), 4096)
            .await
            .expect("body");
        let body = String::from_utf8(body.to_vec()).expect("utf-8");
        assert_eq!(body.contains(MINTED), !scrub_body, "{scrub_body}: {body}");
        let entry = trace.last().expect("a response entry");
        assert_eq!(entry.name, "oauth_token");
        assert_eq!(
            entry.annotations.get("response_redacted"),
            Some(&json!(["x-echo"]))
        );
    }
}

/// `token_endpoint` may carry a user and password or a key in its query; a mint that fails
/// (nobody listens there) names the endpoint in the audit record's `error` without them.
#[tokio::test]
async fn a_failed_mint_names_the_endpoint_without_userinfo_or_query() {
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a port");
        l.local_addr().expect("its address")
    };
    let tokens = CC.replace(
        "https://login.example.com/oauth2/token",
        &format!("http://cu:ENDPOINTPW@{addr}/oauth2/token?key=ENDPOINTQ"),
    );
    let t = transform(&tokens, &[("ID", "client-id"), ("SECRET", "client-secret")]);
    let mut req = request("GET", "/v1/things", &[], None);
    let mut cx = flow("api.example.com", "GET", "/v1/things");
    let (outcome, trace) = run(t, &mut req, &mut cx).await;
    let PhaseOutcome::Reject(_, r) = outcome else {
        panic!("not refused")
    };
    assert_eq!(r.reason, "token_unavailable");
    let error = trace
        .annotations
        .get("error")
        .and_then(|e| e.as_str())
        .expect("an error annotation")
        .to_string();
    assert!(
        error.starts_with(&format!("http://{addr}/oauth2/token: ")),
        "names the endpoint: {error}"
    );
    assert!(
        !error.contains("ENDPOINTPW") && !error.contains("ENDPOINTQ") && !error.contains("cu:"),
        "{error}"
    );
}

/// A token endpoint on 127.0.0.1 that rotates refresh tokens as Authlib's does (and
/// providers that revoke a used one): a refresh token it knows is revoked and a new one
/// issued, with a 1 s access token (inside the expiry margin: every use exchanges again);
/// any other is refused with `invalid_grant`. `seen` is every refresh token it was sent.
struct Rotating {
    url: String,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Rotating {
    async fn start(seeds: &[&str]) -> Self {
        use http_body_util::BodyExt as _;
        let valid: Arc<std::sync::Mutex<(u32, Vec<String>)>> = Arc::new(std::sync::Mutex::new((
            0,
            seeds.iter().map(|s| s.to_string()).collect(),
        )));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
            let (valid, log) = (valid.clone(), log.clone());
            async move {
                let body = req.into_body().collect().await.expect("body").to_bytes();
                let sent = url::form_urlencoded::parse(&body)
                    .find(|(k, _)| k == "refresh_token")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                log.lock().expect("lock").push(sent.clone());
                let mut v = valid.lock().expect("lock");
                let (status, answer) = match v.1.iter().position(|t| *t == sent) {
                    Some(i) => {
                        v.1.remove(i);
                        v.0 += 1;
                        let next = format!("rt-{}", v.0);
                        v.1.push(next.clone());
                        (
                            StatusCode::OK,
                            json!({"access_token": format!("at-{}", v.0), "expires_in": 1,
                                   "token_type": "Bearer", "refresh_token": next}),
                        )
                    }
                    None => (StatusCode::BAD_REQUEST, json!({"error": "invalid_grant"})),
                };
                let mut rsp = Response::new(Full::new(Bytes::from(answer.to_string())));
                *rsp.status_mut() = status;
                Ok::<_, std::convert::Infallible>(rsp)
            }
        });
        let addr = crate::test_http::serve_http1(svc).await;
        Rotating {
            url: format!("http://{addr}/oauth2/token"),
            seen,
        }
    }

    fn last(&self) -> String {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .unwrap_or_default()
    }
}

/// The transform of `tokens` built with `sources`, as each reload builds it.
fn built(tokens: &str, sources: &Sources) -> OAuthToken {
    let text = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
         transforms:\n  - name: oauth_token\n    config:\n      tokens:\n{tokens}"
    );
    let cfg = crate::config::parse(&text, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::OauthToken(c)) = cfg.transforms.first() else {
        panic!("not oauth_token");
    };
    OAuthToken::new(c, sources).expect("build")
}

fn refresh_entry(endpoint: &str, rt_var: &str, scopes: &str) -> String {
    format!(
        "        - grant: refresh_token
          refresh_token: {{type: env, var: {rt_var}}}
          client_id: {{type: env, var: ID}}
          client_secret: {{type: env, var: SECRET}}
          token_endpoint: \"{endpoint}\"
          scopes: [{scopes}]
          rules: [{{host: api.example.com}}]
"
    )
}

async fn mint(t: &OAuthToken) -> Result<Zeroizing<String>, String> {
    t.entries[0].token(&t.http).await.map_err(|e| e.0)
}

/// A reload builds the transform again: the rebuilt entry carries on with the refresh token
/// the endpoint rotated to (before, it sent the configured one again, which the endpoint had
/// revoked: every request after the reload was refused). A reload that changes the scopes
/// keeps the token family; one that names another refresh token source starts from that
/// seed. State no live config uses is dropped.
#[tokio::test]
async fn a_rebuilt_entry_keeps_the_rotated_refresh_token() {
    let ep = Rotating::start(&["rt-seed", "rt-other"]).await;
    let sources = sources(&[
        ("RT", "rt-seed"),
        ("RT_OTHER", "rt-other"),
        ("ID", "client"),
        ("SECRET", "client-secret"),
    ]);
    let old = built(&refresh_entry(&ep.url, "RT", "read"), &sources);
    mint(&old).await.expect("first exchange");
    mint(&old).await.expect("second exchange");
    assert_eq!(*ep.seen.lock().expect("lock"), ["rt-seed", "rt-1"]);

    // The reload: the new policy is built while the old one still serves.
    let new = built(&refresh_entry(&ep.url, "RT", "read"), &sources);
    drop(old);
    mint(&new)
        .await
        .expect("the exchange after the reload succeeds");
    assert_eq!(ep.last(), "rt-2", "the rotated refresh token, not the seed");
    assert_eq!(sources.kept_count(), 2, "one entry's state and its family");

    // Other scopes: another access token, the same token family.
    let scoped = built(&refresh_entry(&ep.url, "RT", "read, write"), &sources);
    drop(new);
    mint(&scoped).await.expect("exchange with other scopes");
    assert_eq!(ep.last(), "rt-3");
    assert_eq!(sources.kept_count(), 2, "the old scopes' state is gone");

    // Another refresh token source: a new family, from its seed.
    let other = built(&refresh_entry(&ep.url, "RT_OTHER", "read"), &sources);
    drop(scoped);
    mint(&other).await.expect("exchange from the other seed");
    assert_eq!(ep.last(), "rt-other");
    assert_eq!(sources.kept_count(), 2, "nothing of the old family is kept");
}

/// A new value of the configured refresh token (the operator seeded one; a source with a
/// `ttl` picks it up) wins over the one the endpoint rotated to, also across a reload; a
/// changed client secret does not make the entry send a revoked refresh token again.
#[tokio::test]
async fn a_new_seed_wins_over_the_rotated_refresh_token() {
    let ep = Rotating::start(&["rt-seed", "rt-new-seed"]).await;
    let sources = sources(&[("RT", "rt-seed"), ("ID", "client"), ("SECRET", "s1")]);
    let creds = |rt: &str, secret: &str| {
        Creds(vec![
            ("refresh_token", Zeroizing::new(rt.to_string())),
            ("client_id", Zeroizing::new("client".to_string())),
            ("client_secret", Zeroizing::new(secret.to_string())),
        ])
    };
    let old = built(&refresh_entry(&ep.url, "RT", "read"), &sources);
    let e = &old.entries[0];
    e.token_with(&old.http, &creds("rt-seed", "s1"))
        .await
        .expect("first exchange");
    // The client secret rotated in its store: the rotated refresh token is still the one.
    e.token_with(&old.http, &creds("rt-seed", "s2"))
        .await
        .expect("with a new client secret");
    assert_eq!(ep.last(), "rt-1");

    let new = built(&refresh_entry(&ep.url, "RT", "read"), &sources);
    drop(old);
    let e = &new.entries[0];
    e.token_with(&new.http, &creds("rt-new-seed", "s2"))
        .await
        .expect("exchange with the new seed");
    assert_eq!(ep.last(), "rt-new-seed", "the new seed, not rt-2");
    e.token_with(&new.http, &creds("rt-new-seed", "s2"))
        .await
        .expect("and on from it");
    assert_eq!(ep.last(), "rt-3");
}

/// A reload re-reads the sources it keeps ([`Sources::stage`]); a re-read that finds the same
/// refresh token in the store leaves the one the endpoint rotated to in service (only a
/// changed store value is a new seed), so the exchange after the reload does not send the
/// revoked seed again.
#[tokio::test]
async fn a_reread_of_the_same_seed_keeps_the_rotated_refresh_token() {
    let ep = Rotating::start(&["rt-seed"]).await;
    let sources = sources(&[("RT", "rt-seed"), ("ID", "client"), ("SECRET", "s1")]);
    let reload = || {
        let staged = sources.stage();
        let t = built(&refresh_entry(&ep.url, "RT", "read"), staged.sources());
        (t, staged.commit())
    };
    let (old, _) = reload();
    mint(&old).await.expect("first exchange");
    let (new, committed) = reload();
    assert_eq!(
        committed.reread, 3,
        "refresh_token, client_id, client_secret"
    );
    drop(old);
    // Let the re-reads land.
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    mint(&new)
        .await
        .expect("the exchange after the reload succeeds");
    assert_eq!(
        ep.last(),
        "rt-1",
        "the rotated refresh token, not the re-read seed"
    );
}
