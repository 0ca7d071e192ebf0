//! Tests of the secret sources and the cache.

mod connect;
mod moto;
mod op_cli;
mod reread;
mod stage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// A backend whose answers the test controls; counts fetches.
#[derive(Clone)]
struct Scripted {
    answer: Arc<Mutex<Result<String, SecretError>>>,
    calls: Arc<AtomicUsize>,
}

impl Default for Scripted {
    fn default() -> Self {
        Scripted {
            answer: Arc::new(Mutex::new(Err(SecretError::Empty))),
            calls: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Scripted {
    fn new(v: &str) -> Self {
        let s = Scripted::default();
        s.set(Ok(v.to_string()));
        s
    }
    fn set(&self, r: Result<String, SecretError>) {
        *self.answer.lock().expect("lock") = r;
    }
    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Fetch for Scripted {
    async fn fetch(&self) -> Result<SecretValue, SecretError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answer
            .lock()
            .expect("lock")
            .clone()
            .map(SecretValue::new)
    }
}

fn down() -> SecretError {
    SecretError::Backend {
        backend: "aws_sm",
        detail: "503 Service Unavailable".into(),
    }
}

/// Lets spawned tasks run (paused clock: no time passes).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn ttl_refresh_picks_up_a_changed_value() {
    let backend = Scripted::new("v1");
    let s = Secret::from_fetch("k", Box::new(backend.clone()), Duration::from_secs(60));
    assert_eq!(s.get().await.expect("value").expose(), "v1");
    backend.set(Ok("v2".into()));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        s.get().await.expect("value").expose(),
        "v1",
        "not yet refreshed"
    );
    tokio::time::sleep(Duration::from_secs(31)).await;
    settle().await;
    assert_eq!(s.get().await.expect("value").expose(), "v2");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn last_good_value_is_served_while_the_backend_fails() {
    let backend = Scripted::new("good");
    let s = Secret::from_fetch("k", Box::new(backend.clone()), Duration::from_secs(10));
    assert_eq!(s.get().await.expect("value").expose(), "good");
    backend.set(Err(down()));
    tokio::time::sleep(Duration::from_secs(120)).await;
    settle().await;
    assert_eq!(s.get().await.expect("stale value").expose(), "good");
    let failed = backend.calls();
    // Retries back off: 1 s, 2 s, 4 s, 8 s, then at most the ttl (10 s).
    assert!((10..=16).contains(&failed), "{failed} fetches in 120 s");
    backend.set(Ok("rotated".into()));
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(s.get().await.expect("value").expose(), "rotated");
}

/// `set_ttl` (a reload that changes a kept source's `ttl`) retunes the running refresh
/// task at once, stops it at zero and starts one again; within one build the shortest
/// non-zero `ttl` wins, the next build replaces it.
#[tokio::test(start_paused = true)]
async fn a_changed_ttl_retunes_the_refresh() {
    let backend = Scripted::new("v1");
    let s = Secret::from_fetch("k", Box::new(backend.clone()), Duration::from_secs(3600));
    assert_eq!(s.get().await.expect("value").expose(), "v1");
    settle().await;
    s.cached.set_ttl(Duration::from_secs(10), 1);
    settle().await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(
        backend.calls(),
        2,
        "refreshed at the new 10 s, not after an hour"
    );

    // Zero: no more refreshes.
    s.cached.set_ttl(Duration::ZERO, 2);
    settle().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    settle().await;
    assert_eq!(backend.calls(), 2, "ttl 0 stops refreshing");

    // Non-zero again: a refresh task starts.
    backend.set(Ok("v2".into()));
    s.cached.set_ttl(Duration::from_secs(5), 3);
    settle().await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle().await;
    assert_eq!(s.get().await.expect("value").expose(), "v2");

    // One build naming the source twice: the shorter non-zero ttl; the next build replaces it.
    s.cached.set_ttl(Duration::from_secs(60), 4);
    s.cached.set_ttl(Duration::from_secs(30), 4);
    s.cached.set_ttl(Duration::ZERO, 4);
    assert_eq!(s.cached.ttl(), Duration::from_secs(30));
    s.cached.set_ttl(Duration::from_secs(120), 5);
    assert_eq!(s.cached.ttl(), Duration::from_secs(120));
}

#[tokio::test(start_paused = true)]
async fn first_failure_is_cached_briefly() {
    let backend = Scripted::default();
    backend.set(Err(down()));
    let s = Secret::from_fetch("k", Box::new(backend.clone()), Duration::ZERO);
    assert_eq!(s.get().await, Err(down()));
    assert_eq!(s.get().await, Err(down()));
    assert_eq!(backend.calls(), 1, "failure cached");
    backend.set(Ok("late".into()));
    tokio::time::sleep(cache::FAILURE_CACHE + Duration::from_millis(1)).await;
    assert_eq!(s.get().await.expect("value").expose(), "late");
    assert_eq!(backend.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_failed_fetch_reaches_the_failure_hook_with_the_source_type() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let sources = Sources::new(SourcesOptions {
        env: fixed_env(&[("SET", "v")]),
        on_fetch_failure: Some(Arc::new(move |kind| {
            log.lock().expect("lock").push(kind);
        })),
        ..Default::default()
    });
    let env = |var: &str| SecretSourceConfig::Env {
        var: var.into(),
        json_key: None,
    };
    assert!(sources.secret(&env("SET")).get().await.is_ok());
    let unset = sources.secret(&env("UNSET"));
    assert!(unset.get().await.is_err());
    assert!(
        unset.get().await.is_err(),
        "answered from the remembered failure"
    );
    assert_eq!(
        *seen.lock().expect("lock"),
        vec!["env"],
        "one failed fetch, one count"
    );
    tokio::time::sleep(cache::FAILURE_CACHE + Duration::from_millis(1)).await;
    assert!(unset.get().await.is_err());
    assert_eq!(*seen.lock().expect("lock"), vec!["env", "env"]);

    // Refresh failures count too (the last good value stays in service).
    let backend = Scripted::new("good");
    let counted = Arc::new(AtomicUsize::new(0));
    let c = counted.clone();
    let hook: FailureHook = Arc::new(move |kind| {
        assert_eq!(kind, "aws_sm");
        c.fetch_add(1, Ordering::SeqCst);
    });
    let cached = Cached::with_failure_hook(
        "k".into(),
        Box::new(backend.clone()),
        Duration::from_secs(10),
        "aws_sm",
        Some(hook),
    );
    assert!(cached.get().await.is_ok());
    backend.set(Err(down()));
    // The refresh at 10 s fails; its first retry is due at 11 s.
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    settle().await;
    assert_eq!(cached.get().await.expect("stale").expose(), "good");
    assert_eq!(counted.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn ttl_zero_reads_once_and_concurrent_gets_share_one_fetch() {
    let backend = Scripted::new("once");
    let s = Secret::from_fetch("k", Box::new(backend.clone()), Duration::ZERO);
    let (a, b) = tokio::join!(s.get(), s.get());
    assert_eq!(
        (a.expect("a").expose(), b.expect("b").expose()),
        ("once", "once")
    );
    tokio::time::sleep(Duration::from_secs(86_400)).await;
    settle().await;
    assert_eq!(backend.calls(), 1);
}

#[tokio::test]
async fn empty_values_and_timeouts_are_errors() {
    let s = Secret::from_fetch("k", Box::new(Scripted::new("")), Duration::ZERO);
    assert_eq!(s.get().await, Err(SecretError::Empty));
}

fn fixed_env(pairs: &[(&str, &str)]) -> EnvLookup {
    EnvLookup::Fixed(Arc::new(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    ))
}

#[tokio::test]
async fn env_source_json_key_and_sharing() {
    let sources = Sources::new(SourcesOptions {
        env: fixed_env(&[("PAIR", r#"{"id":"client-1","secret":"s3cr3t","n":1}"#)]),
        ..Default::default()
    });
    let src = |key: Option<&str>, var: &str| SecretSourceConfig::Env {
        var: var.into(),
        json_key: key.map(str::to_string),
    };
    let id = sources.secret(&src(Some("id"), "PAIR"));
    let secret = sources.secret(&src(Some("secret"), "PAIR"));
    assert_eq!(id.name(), "PAIR");
    assert_eq!(id.get().await.expect("id").expose(), "client-1");
    assert_eq!(secret.get().await.expect("secret").expose(), "s3cr3t");
    assert!(
        Arc::ptr_eq(&id.cached, &secret.cached),
        "one cache per backend value"
    );
    let err = |key: &str| SecretError::JsonKey {
        key: key.into(),
        reason: String::new(),
    };
    for (key, want) in [("missing", err("missing")), ("n", err("n"))] {
        match sources.secret(&src(Some(key), "PAIR")).get().await {
            Err(SecretError::JsonKey { key: k, .. }) => assert_eq!(
                SecretError::JsonKey {
                    key: k,
                    reason: String::new()
                },
                want
            ),
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!(
        sources.secret(&src(None, "UNSET")).get().await,
        Err(SecretError::EnvMissing("UNSET".into()))
    );
    // A non-JSON value with json_key: the error names the key, not the value.
    let plain = Sources::new(SourcesOptions {
        env: fixed_env(&[("PLAIN", "not-json-secret")]),
        ..Default::default()
    });
    let e = plain
        .secret(&src(Some("k"), "PLAIN"))
        .get()
        .await
        .expect_err("not json");
    assert!(!e.to_string().contains("not-json-secret"), "{e}");
}

#[tokio::test]
async fn dropped_sources_are_forgotten() {
    let sources = Sources::default();
    let cfg = SecretSourceConfig::Env {
        var: "X".into(),
        json_key: None,
    };
    let weak = Arc::downgrade(&sources.secret(&cfg).cached);
    assert!(
        weak.upgrade().is_none(),
        "the registry holds no strong reference"
    );
}

/// `keep`: one state per key while something holds it (as an old and a new policy do
/// during a reload), a fresh one once nothing does, none kept for dead keys.
#[test]
fn kept_state_lives_as_long_as_its_holders() {
    let sources = Sources::default();
    let a = sources.keep("a", || Mutex::new(1));
    *a.lock().expect("lock") = 2;
    let again = sources.keep("a", || Mutex::new(0));
    assert!(Arc::ptr_eq(&a, &again), "shared while held");
    let other = sources.keep("b", || Mutex::new(7));
    assert_eq!(*other.lock().expect("lock"), 7);
    assert_eq!(sources.kept_count(), 2);
    drop((a, again, other));
    assert_eq!(sources.kept_count(), 0, "nothing held: nothing kept");
    let fresh = sources.keep("a", || Mutex::new(0));
    assert_eq!(
        *fresh.lock().expect("lock"),
        0,
        "a fresh state once dropped"
    );
    // The same key asked for with another type is a new state, not a wrong cast.
    let typed = sources.keep("a", || String::from("x"));
    assert_eq!(typed.as_str(), "x");
}

/// Captures every log line at TRACE level on this thread until dropped.
pub(crate) struct TraceCapture {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl TraceCapture {
    pub(crate) fn start() -> Self {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let w = BufWriter(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || w.clone())
            .finish();
        let capture = TraceCapture {
            buf,
            _guard: tracing::subscriber::set_default(subscriber),
        };
        // This test's own callsite: enabled whatever other tests running in
        // parallel did to the interest cache of shared callsites.
        tracing::trace!("{}", TraceCapture::PROBE);
        capture
    }

    /// A line every working capture holds.
    pub(crate) const PROBE: &'static str = "trace capture probe";

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().expect("lock")).into_owned()
    }
}

/// A backend endpoint from the environment (`AWS_ENDPOINT_URL`,
/// `OP_CONNECT_HOST`) with a user and password or a query: the transport
/// error that names it (here a port nothing listens on) reaches the log, the
/// audit record and `/v1/status`, so it names the endpoint without them.
#[tokio::test]
async fn backend_urls_in_errors_hold_no_userinfo_or_query() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let aws = |url: &str| {
        Sources::new(SourcesOptions {
            env: fixed_env(&[("AWS_ENDPOINT_URL", url)]),
            aws: aws::AwsOverrides {
                credentials: Some(aws_credential_types::Credentials::new(
                    "testing", "testing", None, None, "test",
                )),
                region: Some("us-east-1".into()),
            },
            ..Default::default()
        })
    };
    let sm = SecretSourceConfig::AwsSm {
        secret_id: "k".into(),
        region: None,
        json_key: None,
        ttl: Default::default(),
    };
    for (endpoint, shown) in [
        (
            format!("http://user:pw-S3CRET@127.0.0.1:{port}"),
            format!(": http://127.0.0.1:{port}: "),
        ),
        (
            format!("http://127.0.0.1:{port}/?token=Q-S3CRET"),
            format!("http://127.0.0.1:{port}/: "),
        ),
        (
            "user:pw-S3CRET@no-scheme?token=Q-S3CRET".to_string(),
            "endpoint URL \"no-scheme\"".to_string(),
        ),
    ] {
        let e = aws(&endpoint)
            .secret(&sm)
            .get()
            .await
            .expect_err("nothing listens")
            .to_string();
        assert!(
            e.contains(&shown) && !e.contains("S3CRET"),
            "{endpoint}: {e}"
        );
    }
    let connect = Sources::new(SourcesOptions {
        env: fixed_env(&[
            (
                "OP_CONNECT_HOST",
                &format!("http://user:pw-S3CRET@127.0.0.1:{port}/?token=Q-S3CRET"),
            ),
            ("OP_CONNECT_TOKEN", "t"),
        ]),
        ..Default::default()
    });
    let op = SecretSourceConfig::OnePasswordConnect {
        secret_ref: "op://v/i/f".parse().expect("op ref"),
        host_env: "OP_CONNECT_HOST".into(),
        token_env: "OP_CONNECT_TOKEN".into(),
        json_key: None,
        ttl: Default::default(),
    };
    let e = connect
        .secret(&op)
        .get()
        .await
        .expect_err("nothing listens")
        .to_string();
    assert!(
        e.contains(&format!("http://127.0.0.1:{port}/: ")) && !e.contains("S3CRET"),
        "{e}"
    );
}
