//! The HTTP side: `/metrics`, `/healthz`, `/readyz`.

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::{Metrics, MetricsError, ReadyFn};

/// Routes `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>, ready: ReadyFn) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { (StatusCode::OK, "ok\n") }))
        .route(
            "/readyz",
            get(move || async move {
                if ready() {
                    (StatusCode::OK, "ready\n")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }),
        )
        .with_state(metrics)
}

async fn scrape(State(m): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, ct)], m.encode_openmetrics()).into_response()
    } else {
        let ct = "text/plain; version=0.0.4; charset=utf-8";
        ([(header::CONTENT_TYPE, ct)], m.encode_prometheus()).into_response()
    }
}

/// Serves [`router`] on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: ReadyFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), MetricsError> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics endpoint listening");
    }
    crate::ops::serve::serve(listener, router(metrics, ready), "metrics", shutdown).await;
    Ok(())
}

/// Startup in one call: binds `listen` and serves in a task. Returns the bound
/// address and the server task.
pub fn start(
    listen: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    ready: ReadyFn,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<
    (
        std::net::SocketAddr,
        tokio::task::JoinHandle<Result<(), MetricsError>>,
    ),
    MetricsError,
> {
    let bind_err = |source| MetricsError::Bind {
        addr: listen,
        source,
    };
    let listener = crate::ops::bind(listen).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    Ok((
        addr,
        tokio::spawn(serve(listener, metrics, ready, shutdown)),
    ))
}
