//! Tests of the grpc transform that need no server: building, what a server's changes may
//! and may not do. Calls to a real TransformService server (grpcio) are the e2e test
//! `grpc_transform`.

use std::collections::HashMap;

use super::*;
use crate::config::TransformConfig;
use crate::transforms::test_support::request;
use wire::HeaderValues;

fn transform(extra: &str) -> Result<GrpcTransform, BuildError> {
    let text = format!(
        "tls: {{ca_cert: /nonexistent/ca.pem, ca_key: /nonexistent/ca.key}}\n\
         transforms:\n  - name: grpc\n    config:\n      name: pe\n      target: \"127.0.0.1:9\"\n{extra}"
    );
    let cfg = crate::config::parse(&text, "test.yaml", &|_| None).expect("config");
    let Some(TransformConfig::Grpc(c)) = cfg.transforms.first() else {
        panic!("not grpc");
    };
    GrpcTransform::new(c)
}

fn wire_headers(pairs: &[(&str, &str)]) -> HashMap<String, HeaderValues> {
    let mut out: HashMap<String, HeaderValues> = HashMap::new();
    for (k, v) in pairs {
        out.entry(k.to_string())
            .or_default()
            .values
            .push(v.to_string());
    }
    out
}

#[tokio::test]
async fn a_missing_tls_file_is_a_build_error() {
    let e = transform("      tls: {enabled: true, ca_cert: /nonexistent/grpc-ca.pem}\n")
        .err()
        .expect("refused");
    // The OS reason comes once, from the source (the CLI prints the chain).
    let text = crate::error_chain(&e);
    assert!(
        text.starts_with("grpc transform 'pe': reading ca_cert /nonexistent/grpc-ca.pem: ")
            && text.matches("No such file").count() == 1,
        "{text}"
    );
    assert!(transform("").is_ok(), "plaintext builds without connecting");
}

/// A TLS file that is not what its field needs is named with the reason
/// (tonic's own error said only "transport error").
#[tokio::test]
async fn a_tls_file_that_is_not_pem_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not: pem\n").expect("write");
    let signed = rcgen::generate_simple_self_signed(vec!["grpc.test".into()]).expect("cert");
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, signed.cert.pem()).expect("write");
    for (extra, want) in [
        (
            format!(
                "      tls: {{enabled: true, ca_cert: {}}}\n",
                junk.display()
            ),
            format!(
                "grpc transform 'pe': tls.ca_cert {}: no PEM certificate in the file",
                junk.display()
            ),
        ),
        (
            format!(
                "      tls: {{enabled: true, cert: {}, key: {}}}\n",
                cert.display(),
                cert.display()
            ),
            format!(
                "grpc transform 'pe': tls.key {}: no PEM private key in the file",
                cert.display()
            ),
        ),
    ] {
        let e = transform(&extra).err().expect("refused");
        assert_eq!(crate::error_chain(&e), want);
    }
}

#[tokio::test]
async fn a_server_may_change_the_path_but_not_the_destination() {
    let t = transform("").expect("transform");
    let mut cx = crate::pipeline::test_flow("api.test", "POST", "/a");
    let mut req = request("POST", "https://api.test:443/a?x=1", &[], Some("body"));
    let change = |url: &str| HttpRequest {
        url: url.into(),
        ..Default::default()
    };
    t.modify_request(&mut req, &mut cx, change("/b?y=2"))
        .expect("path and query");
    assert_eq!(req.uri(), "https://api.test:443/b?y=2");
    assert_eq!(cx.path, "/b");
    assert_eq!(
        cx.annotations_mut().get("forwarded_path"),
        Some(&serde_json::json!("/b")),
        "the audit trace says where the request went (the record keeps the client's path)"
    );
    assert_eq!(cx.annotations_mut().get("forwarded_method"), None);
    let method = HttpRequest {
        method: "PUT".into(),
        ..Default::default()
    };
    t.modify_request(&mut req, &mut cx, method).expect("method");
    assert_eq!(req.method(), "PUT");
    assert_eq!(
        cx.annotations_mut().get("forwarded_method"),
        Some(&serde_json::json!("PUT"))
    );
    t.modify_request(&mut req, &mut cx, change("https://API.test:443/c"))
        .expect("same destination, spelled differently");
    assert_eq!(req.uri(), "https://api.test:443/c");
    for bad in [
        "https://evil.test/c",
        "http://api.test:443/c",
        "https://api.test:8443/c",
        "/a/../admin",
        "not a url",
    ] {
        assert!(
            t.modify_request(&mut req, &mut cx, change(bad)).is_err(),
            "{bad}"
        );
    }
    assert_eq!(
        req.uri(),
        "https://api.test:443/c",
        "a refused change changes nothing"
    );
    let both = HttpRequest {
        method: "DELETE".into(),
        url: "https://evil.test/d".into(),
        ..Default::default()
    };
    assert!(t.modify_request(&mut req, &mut cx, both).is_err());
    assert_eq!(req.method(), "PUT", "nor the method of a refused change");
}

#[tokio::test]
async fn replaced_headers_keep_the_framing_the_proxy_manages() {
    let t = transform("").expect("transform");
    let mut cx = crate::pipeline::test_flow("api.test", "POST", "/a");
    let mut req = request(
        "POST",
        "https://api.test:443/a",
        &[
            ("content-length", "4"),
            ("x-old", "1"),
            ("host", "api.test"),
        ],
        Some("body"),
    );
    let m = HttpRequest {
        headers: wire_headers(&[
            ("x-new", "a"),
            ("x-new", "b"),
            ("content-length", "999"),
            ("host", "evil.test"),
            ("connection", "close"),
        ]),
        ..Default::default()
    };
    t.modify_request(&mut req, &mut cx, m).expect("headers");
    let h = req.headers();
    assert!(h.get("x-old").is_none());
    let new: Vec<_> = h.get_all("x-new").iter().collect();
    assert_eq!(new, ["a", "b"]);
    assert_eq!(h["content-length"], "4");
    assert_eq!(h["host"], "api.test");
    assert!(h.get("connection").is_none());
    // A new body brings its own length.
    let m = HttpRequest {
        body: Bytes::from_static(b"longer body"),
        ..Default::default()
    };
    t.modify_request(&mut req, &mut cx, m).expect("body");
    assert_eq!(req.headers()["content-length"], "11");
    assert_eq!(
        crate::pipeline::body_bytes(&req).map(|b| &b[..]),
        Some(&b"longer body"[..])
    );
    let bad = HttpRequest {
        headers: wire_headers(&[("bad name", "x")]),
        ..Default::default()
    };
    assert!(t.modify_request(&mut req, &mut cx, bad).is_err());
}

#[test]
fn a_servers_response_defaults_to_403() {
    let r = response_from_wire(&HttpResponse {
        status_code: 0,
        headers: wire_headers(&[("x-why", "policy")]),
        body: Bytes::from_static(b"no"),
    })
    .expect("response");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(r.headers()["x-why"], "policy");
    assert_eq!(r.headers()["content-length"], "2");
    for bad in [99, 1000, -1] {
        assert!(response_from_wire(&HttpResponse {
            status_code: bad,
            ..Default::default()
        })
        .is_err());
    }
}
