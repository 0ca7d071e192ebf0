//! Management API over real HTTP on 127.0.0.1:0, token checks, and reload serialization.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{oneshot, Semaphore};

use super::*;
use crate::ops::testutil::request;

const TOKEN: &str = "s3cret-token-value";

#[test]
fn api_key_compares_whole_token() {
    let key = ApiKey::new(TOKEN).expect("non-empty");
    assert!(key.verify(TOKEN.as_bytes()));
    assert!(!key.verify(b""));
    assert!(!key.verify(b"s3cret-token-valu"));
    assert!(!key.verify(b"s3cret-token-value "));
    assert!(!key.verify(b"S3cret-token-value"));
    assert!(ApiKey::new("").is_none());
    assert!(ApiKey::new("  \n").is_none(), "blank is no key");
    let padded = ApiKey::new(" s3cret-token-value\n").expect("trimmed");
    assert!(
        padded.verify(TOKEN.as_bytes()),
        "a key file's newline is not part of it"
    );
    assert_eq!(format!("{key:?}"), "ApiKey(***)");
}

#[test]
fn missing_key_variable_refuses_to_start() {
    let var = "IRON_PROXY_TEST_SURELY_UNSET_MANAGEMENT_KEY";
    let err = ApiKey::from_env(var).expect_err("unset variable must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(var) && msg.contains("unauthenticated"),
        "{msg}"
    );
}

#[test]
fn config_hash_is_sha256_hex() {
    assert_eq!(
        config_hash(b"abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}

struct Server {
    addr: SocketAddr,
    fail: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    metrics: Arc<Metrics>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn start_server() -> Server {
    let fail = Arc::new(AtomicBool::new(false));
    let f = fail.clone();
    let reloader = FnReloader(move || {
        let fail = f.load(Ordering::SeqCst);
        async move {
            if fail {
                Err(vec![
                    "proxy.yaml:3:5: transforms[0].name: unknown transform 'nope'".to_string(),
                ])
            } else {
                let mut details = Map::new();
                details.insert("transforms".into(), 2.into());
                Ok(ReloadSummary {
                    config_hash: config_hash(b"new"),
                    details,
                })
            }
        }
    });
    let metrics = Arc::new(Metrics::new());
    let controller = ReloadController::new(
        Arc::new(reloader),
        config_hash(b"old"),
        Some(metrics.clone()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel();
    let key = ApiKey::new(TOKEN).expect("key");
    tokio::spawn(serve(listener, controller, key, async move {
        let _ = rx.await;
    }));
    Server {
        addr,
        fail,
        stop: Some(tx),
        metrics,
    }
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn reload_status_and_auth_over_http() {
    let s = start_server().await;
    let auth = format!("Bearer {TOKEN}");
    let good = [("authorization", auth.as_str())];

    let r = request(s.addr, "POST", "/v1/reload", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.headers[header::WWW_AUTHENTICATE],
        r#"Bearer realm="iron-proxy""#
    );
    let r = request(
        s.addr,
        "POST",
        "/v1/reload",
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.headers[header::WWW_AUTHENTICATE]
        .to_str()
        .expect("ascii")
        .contains("invalid_token"));
    let r = request(s.addr, "POST", "/v1/reload", &[("authorization", TOKEN)]).await;
    assert_eq!(
        r.status, 401,
        "a token without the Bearer scheme is refused"
    );
    let r = request(s.addr, "GET", "/v1/nothing", &[]).await;
    assert_eq!(r.status, 401, "unknown paths do not leak before auth");
    for (method, path) in [
        ("DELETE", "/v1/reload"),
        ("OPTIONS", "/v1/status"),
        ("GET", "/v1/reload"),
    ] {
        let r = request(s.addr, method, path, &[]).await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert!(
            !r.headers.contains_key(header::ALLOW),
            "{method} {path}: no Allow before auth: {:?}",
            r.headers
        );
    }

    let r = request(s.addr, "GET", "/v1/reload", &good).await;
    assert_eq!(r.status, 405);
    let r = request(s.addr, "DELETE", "/v1/status", &good).await;
    assert_eq!(r.status, 405);

    let r = request(s.addr, "GET", "/v1/status", &good).await;
    assert_eq!(r.status, 200);
    let st = json(&r.body);
    assert_eq!(st["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(st["config_hash"], config_hash(b"old"));
    assert!(st["last_reload"].is_null());
    assert!(st["uptime_seconds"].is_u64());

    let r = request(
        s.addr,
        "POST",
        "/v1/reload",
        &[("authorization", &format!("bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let ok = json(&r.body);
    assert_eq!(ok["status"], "reloaded");
    assert_eq!(ok["config_hash"], config_hash(b"new"));
    assert_eq!(ok["transforms"], 2);

    s.fail.store(true, Ordering::SeqCst);
    let r = request(s.addr, "POST", "/v1/reload", &good).await;
    assert_eq!(r.status, 422);
    let errs = json(&r.body);
    assert_eq!(
        errs["errors"][0],
        "proxy.yaml:3:5: transforms[0].name: unknown transform 'nope'"
    );

    let st = json(&request(s.addr, "GET", "/v1/status", &good).await.body);
    assert_eq!(
        st["config_hash"],
        config_hash(b"new"),
        "a failed reload keeps the running config"
    );
    assert_eq!(st["last_reload"]["result"], "failure");
    assert_eq!(st["last_reload"]["trigger"], "api");
    assert_eq!(
        st["last_reload"]["errors"].as_array().map(Vec::len),
        Some(1)
    );

    let text = s.metrics.encode_prometheus();
    assert!(
        text.contains("iron_proxy_reloads_total{result=\"success\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("iron_proxy_reloads_total{result=\"failure\"} 1\n"),
        "{text}"
    );
}

/// A reloader that waits at a gate and records how many run at once.
struct Gated {
    gate: Semaphore,
    active: AtomicUsize,
    max_active: AtomicUsize,
    entered: AtomicUsize,
}

#[async_trait::async_trait]
impl Reloader for Arc<Gated> {
    async fn reload(&self) -> Result<ReloadSummary, Vec<String>> {
        let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_active.fetch_max(now, Ordering::SeqCst);
        self.entered.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        self.active.fetch_sub(1, Ordering::SeqCst);
        Ok(ReloadSummary::default())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reloads_run_one_at_a_time() {
    let g = Arc::new(Gated {
        gate: Semaphore::new(0),
        active: AtomicUsize::new(0),
        max_active: AtomicUsize::new(0),
        entered: AtomicUsize::new(0),
    });
    let c = ReloadController::new(Arc::new(g.clone()), String::new(), None);
    let (c1, c2) = (c.clone(), c.clone());
    let first = tokio::spawn(async move { c1.reload(Trigger::Api).await });
    while g.entered.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let second = tokio::spawn(async move { c2.reload(Trigger::Signal).await });
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    assert_eq!(
        g.entered.load(Ordering::SeqCst),
        1,
        "second reload started while the first ran"
    );
    g.gate.add_permits(1);
    first.await.expect("join").expect("first reload");
    while g.entered.load(Ordering::SeqCst) < 2 {
        tokio::task::yield_now().await;
    }
    g.gate.add_permits(1);
    second.await.expect("join").expect("second reload");
    assert_eq!(g.max_active.load(Ordering::SeqCst), 1);
    assert_eq!(
        c.status().last_reload.map(|l| l.trigger),
        Some(Trigger::Signal)
    );
}

#[tokio::test]
async fn start_refuses_without_a_token_before_binding() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = holder.local_addr().expect("addr");
    let c = ReloadController::new(
        Arc::new(FnReloader(|| async { Ok(ReloadSummary::default()) })),
        String::new(),
        None,
    );
    // The port is taken too; the missing token must be reported first.
    let err = start(
        taken,
        "IRON_PROXY_TEST_SURELY_UNSET_MANAGEMENT_KEY",
        c,
        async {},
    )
    .expect_err("must refuse");
    assert!(
        matches!(err, ManagementError::MissingApiKey { .. }),
        "{err}"
    );
}

/// A key variable whose value is not UTF-8 is said to be so, not "unset",
/// and the value is not shown.
#[test]
fn a_key_that_is_not_utf8_is_named_as_such() {
    use std::os::unix::ffi::OsStrExt;
    let var = "IRON_PROXY_TEST_NON_UTF8_MANAGEMENT_KEY";
    // A name no other test uses: the environment is the process's.
    std::env::set_var(var, std::ffi::OsStr::from_bytes(b"k\xffs3cret"));
    let err = ApiKey::from_env(var).expect_err("not UTF-8");
    std::env::remove_var(var);
    assert_eq!(
        err.to_string(),
        format!(
            "environment variable {var} is not UTF-8: the management api needs a bearer token \
             and will not run unauthenticated"
        )
    );
}

#[test]
fn the_log_names_a_trigger_as_the_status_does() {
    for t in [Trigger::Api, Trigger::Signal] {
        assert_eq!(serde_json::to_value(t).expect("json"), t.as_str());
    }
}
