use super::*;

fn obj(url: &str) -> S3Object {
    S3Object::parse(url).expect("a valid s3 URL")
}

fn creds() -> Credentials {
    Credentials::new("AKIDEXAMPLE", "secret-key-0123", None, None, "test")
}

fn reason(url: &str) -> String {
    match S3Object::parse(url) {
        Err(S3Error::Url { reason, .. }) => reason,
        other => panic!("{url}: expected a URL error, got {other:?}"),
    }
}

#[test]
fn keys_keep_their_slashes() {
    let o = obj("s3://my-bucket/iron/prod/proxy.yaml");
    assert_eq!(o.bucket(), "my-bucket");
    assert_eq!(o.key(), "iron/prod/proxy.yaml");
    assert_eq!(o.to_string(), "s3://my-bucket/iron/prod/proxy.yaml");
}

#[test]
fn a_missing_key_or_bucket_is_refused() {
    assert!(reason("s3://my-bucket").contains("no object key"));
    assert!(reason("s3://my-bucket/").contains("no object key"));
    assert!(reason("s3:///key.yaml").contains("no bucket"));
    assert!(reason("https://my-bucket/key").contains("not an s3://"));
}

#[test]
fn bad_bucket_names_are_refused() {
    for (bucket, why) in [
        ("ab", "3 to 63"),
        ("My_Bucket", "lowercase"),
        ("-bucket", "start and end"),
        ("bucket.", "start and end"),
        ("a..b", "'..'"),
        ("has space", "lowercase"),
    ] {
        let r = reason(&format!("s3://{bucket}/k.yaml"));
        assert!(r.starts_with("invalid bucket name: "), "{bucket}: {r}");
        assert!(r.contains(why), "{bucket}: {r}");
    }
    assert!(reason(&format!("s3://b-1/{}", "k".repeat(1025))).contains("1024"));
    assert!(reason("s3://b-1/a\nb").contains("control"));
}

#[test]
fn public_endpoints_are_virtual_hosted() {
    let o = obj("s3://my-bucket/iron/proxy.yaml");
    assert_eq!(
        o.url("eu-west-1", None),
        "https://my-bucket.s3.eu-west-1.amazonaws.com/iron/proxy.yaml"
    );
    assert_eq!(
        o.url("cn-north-1", None),
        "https://my-bucket.s3.cn-north-1.amazonaws.com.cn/iron/proxy.yaml"
    );
}

#[test]
fn dotted_buckets_and_custom_endpoints_are_path_style() {
    let o = obj("s3://my.bucket/proxy.yaml");
    assert_eq!(
        o.url("us-east-1", None),
        "https://s3.us-east-1.amazonaws.com/my.bucket/proxy.yaml"
    );
    let o = obj("s3://cfg/a/proxy.yaml");
    assert_eq!(
        o.url("us-east-1", Some("http://127.0.0.1:5000")),
        "http://127.0.0.1:5000/cfg/a/proxy.yaml"
    );
    assert_eq!(
        o.url("us-east-1", Some("https://minio.internal:9000/")),
        "https://minio.internal:9000/cfg/a/proxy.yaml"
    );
}

#[test]
fn keys_are_percent_encoded_except_slashes() {
    let o = obj("s3://cfg/dir one/proxy+prod=ü~_.-.yaml");
    assert_eq!(
        o.url("us-east-1", Some("http://s3.test")),
        "http://s3.test/cfg/dir%20one/proxy%2Bprod%3D%C3%BC~_.-.yaml"
    );
}

#[test]
fn s3_error_documents_give_code_and_message() {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
                <Message>The specified key does not exist.</Message><Key>k</Key></Error>";
    assert_eq!(xml_element(body, "Code"), Some("NoSuchKey"));
    assert_eq!(
        xml_element(body, "Message"),
        Some("The specified key does not exist.")
    );
    assert_eq!(xml_element(body, "RequestId"), None);
    assert_eq!(xml_element("not xml", "Code"), None);
    assert_eq!(
        status_detail(http::StatusCode::NOT_FOUND, body, &creds()),
        "404 Not Found: NoSuchKey: The specified key does not exist."
    );
}

/// What an endpoint writes in its error document reaches the start-up error
/// and the reload's log as peer text: control characters escaped (no forged
/// log line), cut to 512 characters (not megabytes).
#[test]
fn an_error_document_is_shown_escaped_and_bounded() {
    let body = format!(
        "<Error><Code>Bad\nlevel=ERROR forged</Code><Message>{}</Message></Error>",
        "x".repeat(100_000)
    );
    let detail = status_detail(http::StatusCode::FORBIDDEN, &body, &creds());
    assert!(
        detail.starts_with("403 Forbidden: Bad\\nlevel=ERROR forged: xxx"),
        "{detail}"
    );
    assert!(!detail.contains('\n'), "{detail}");
    assert!(detail.len() < 600, "{} bytes", detail.len());
    assert!(detail.ends_with("..."), "{detail}");
}

#[test]
fn the_signature_covers_the_content_hash_header() {
    let s = s3_signing_settings();
    assert_eq!(s.payload_checksum_kind, PayloadChecksumKind::XAmzSha256);
    assert_eq!(s.percent_encoding_mode, PercentEncodingMode::Single);
}

/// An endpoint from `AWS_ENDPOINT_URL_S3` with a user and password or a
/// query: the error that names it (a transport failure here, a port nothing
/// listens on) reaches the start-up error, the log and `/v1/status`, so it
/// names the endpoint without them. An endpoint that is no URL is named so.
#[tokio::test]
async fn an_endpoint_in_an_error_has_no_userinfo_or_query() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let fetch = |endpoint: String| async move {
        let env = std::collections::HashMap::from([("AWS_ENDPOINT_URL_S3".to_string(), endpoint)]);
        let aws = AwsShared::new(
            crate::secrets::aws::AwsOverrides {
                credentials: Some(creds()),
                region: Some("us-east-1".into()),
            },
            crate::secrets::http::HttpClient::new(),
            crate::secrets::EnvLookup::Fixed(std::sync::Arc::new(env)),
        );
        let e = obj("s3://cfg/proxy.yaml")
            .fetch(&aws)
            .await
            .expect_err("nothing listens");
        crate::error_chain(&e)
    };
    let e = fetch(format!("http://user:pw-S3CRET@127.0.0.1:{port}")).await;
    assert!(
        e.contains(&format!(": http://127.0.0.1:{port}/cfg/proxy.yaml: ")),
        "{e}"
    );
    assert!(!e.contains("S3CRET"), "{e}");
    let e = fetch(format!("http://127.0.0.1:{port}/?token=Q-S3CRET")).await;
    assert!(e.contains(&format!(": http://127.0.0.1:{port}/: ")), "{e}");
    assert!(!e.contains("S3CRET"), "{e}");
    let e = fetch("user:pw-S3CRET@no-scheme?token=Q-S3CRET".to_string()).await;
    assert!(e.contains("invalid S3 endpoint URL \"no-scheme\""), "{e}");
    assert!(!e.contains("S3CRET"), "{e}");
}
