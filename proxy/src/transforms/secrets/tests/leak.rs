//! Secret values must not reach logs or audit records.

use std::sync::Mutex;

use super::*;

/// Runs requests through the pipeline with TRACE logs captured, and checks
/// that no secret value appears in the logs or the audit records.
#[tokio::test]
async fn secret_values_never_reach_logs_or_audit() {
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let logs = Buf::default();
    let sink_logs = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || sink_logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut r = replace(TOKEN, &[]);
    r.match_body = true;
    r.match_query = true;
    r.match_path = true;
    let t: Arc<dyn Transform> = Arc::new(transform(vec![
        entry(env("OPENAI_API_KEY"), SecretMode::Replace(r), "[]"),
        entry(
            env("GH_TOKEN"),
            SecretMode::Inject(InjectConfig::Header {
                name: "Authorization".into(),
                formatter: Some(Template::parse("Bearer {{ .Value }}").expect("template")),
            }),
            "[{host: a.test}]",
        ),
        entry(
            env("MISSING"),
            SecretMode::Replace(replace("proxy-missing", &[])),
            "[]",
        ),
    ]));
    let pipeline = Pipeline::new(vec![t]);
    let mut audit = Vec::new();
    for (uri, headers) in [
        (
            "https://a.test/p/proxy-openai-abc123?k=proxy-openai-abc123",
            vec![("x-k", TOKEN)],
        ),
        ("https://b.test/", vec![("x-m", "proxy-missing")]),
    ] {
        let req = get(uri, &headers);
        let mut req = with_body(req, TOKEN);
        let mut cx = flow(req.uri().host().unwrap_or(""), "POST", req.uri().path());
        let mut rec =
            crate::audit::AuditRecord::new(crate::audit::Mode::Https, "127.0.0.1:1".into());
        let outcome = pipeline
            .on_request(&mut req, &mut cx, &mut rec.request_transforms)
            .await;
        if let crate::pipeline::PhaseOutcome::Fail(by, e) = outcome {
            rec.fail(e.reason, e.detail.clone(), e.status.as_u16());
            rec.rejected_by = Some(by);
        }
        audit.push(serde_json::to_string(&rec).expect("json"));
    }
    let logs = String::from_utf8(logs.0.lock().expect("lock").clone()).expect("utf8");
    let audit = audit.join("\n");
    assert!(
        audit.contains("swapped") && audit.contains("secret_unavailable"),
        "{audit}"
    );
    for secret in [REAL, "ghp_abc123"] {
        assert!(!logs.contains(secret), "secret in logs:\n{logs}");
        assert!(!audit.contains(secret), "secret in audit:\n{audit}");
    }
}
