//! Header-name casing as it reaches an HTTP/1.1 upstream.

use std::sync::Mutex;

use super::*;

/// Sends `req` through hyper's client the way the upstream client does, and
/// returns the raw request head the server received.
async fn wire_head(req: Request<Body>) -> String {
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.expect("read");
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(buf).expect("utf8")
    });
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let (mut parts, body) = req.into_parts();
    parts.uri = "/".parse().expect("uri");
    let _pending = sender.send_request(Request::from_parts(parts, body));
    server.await.expect("server")
}

/// A request as the listener hands it over: parsed by a case-preserving hyper server.
async fn parsed(head: &'static str) -> Request<Body> {
    let (mut a, b) = tokio::io::duplex(8192);
    tokio::io::AsyncWriteExt::write_all(&mut a, head.as_bytes())
        .await
        .expect("write");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let tx = Mutex::new(Some(tx));
    let svc = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
        if let Some(tx) = tx.lock().expect("lock").take() {
            let (parts, _) = r.into_parts();
            let _ = tx.send(Request::from_parts(parts, crate::body::empty()));
        }
        async { Ok::<_, std::convert::Infallible>(http::Response::new(crate::body::empty())) }
    });
    tokio::spawn(
        hyper::server::conn::http1::Builder::new()
            .preserve_header_case(true)
            .serve_connection(hyper_util::rt::TokioIo::new(b), svc),
    );
    rx.await.expect("request")
}

#[tokio::test]
async fn header_casing_on_the_wire() {
    let t = transform(vec![
        entry(
            env("OPENAI_API_KEY"),
            SecretMode::Inject(InjectConfig::Header {
                name: "X-API-Key".into(),
                formatter: None,
            }),
            "[]",
        ),
        entry(
            env("GH_TOKEN"),
            SecretMode::Replace(replace("proxy-gh", &["Authorization"])),
            "[]",
        ),
    ]);
    let mut req = parsed(
        "GET / HTTP/1.1\r\nHost: a.test\r\nX-Custom-CASE: 1\r\nauthorization: token proxy-gh\r\nx-api-key: old\r\n\r\n",
    )
    .await;
    let mut cx = flow("a.test", "GET", "/");
    run(&t, &mut req, &mut cx).await.expect("continue");
    let head = wire_head(req).await;
    assert!(head.contains("\r\nX-API-Key: "), "{head}");
    assert!(
        head.contains("\r\nAuthorization: token ghp_abc123\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\nX-Custom-CASE: 1\r\n"),
        "client casing kept: {head}"
    );
    assert!(head.contains("\r\nHost: a.test\r\n"), "{head}");
    assert_eq!(
        head.matches("x-api-key").count() + head.matches("X-API-Key").count(),
        1,
        "{head}"
    );
}
