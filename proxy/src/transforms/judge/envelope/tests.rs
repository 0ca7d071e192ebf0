use super::*;
use http::HeaderValue;

#[test]
fn priority_headers_survive_header_inflation() {
    let mut h = HeaderMap::new();
    for i in 0..200 {
        h.insert(
            http::HeaderName::from_bytes(format!("x-junk-{i:03}").as_bytes()).expect("name"),
            HeaderValue::from_static("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        );
    }
    h.insert("cookie", HeaderValue::from_static("session=1"));
    h.insert("host", HeaderValue::from_static("api.github.com"));
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer proxy-token"),
    );
    let env = build(
        "POST",
        "https://api.github.com/x",
        "api.github.com",
        &h,
        None,
    );
    let names: Vec<&str> = env["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(&names[..3], ["host", "authorization", "cookie"]);
    assert_eq!(names[3], "x-junk-000", "then alphabetical");
    let total: usize = env["headers"]
        .as_array()
        .expect("headers")
        .iter()
        .map(|v| v["name"].as_str().unwrap_or("").len() + v["value"].as_str().unwrap_or("").len())
        .sum();
    assert!(total <= HEADERS_CAP, "{total}");
    assert!(env["warnings"][0]
        .as_str()
        .expect("warning")
        .contains("header values omitted"));
}

#[test]
fn long_values_urls_and_bodies_are_cut_with_warnings() {
    let mut h = HeaderMap::new();
    h.insert(
        "x-long",
        HeaderValue::from_str(&"v".repeat(600)).expect("value"),
    );
    let url = format!("https://a.test/{}", "p".repeat(3000));
    let body = "é".repeat(BODY_CAP); // 2 bytes each: the cap falls on a boundary
    let env = build("PUT", &url, "a.test", &h, Some(body.as_bytes()));
    assert_eq!(env["url"].as_str().expect("url").len(), URL_CAP);
    let v = env["headers"][1]["value"].as_str().expect("value");
    assert_eq!(
        env["headers"][0],
        json!({"name": "host", "value": "a.test"})
    );
    assert!(v.ends_with("...[truncated, 600 bytes]"), "{v}");
    assert_eq!(env["body"].as_str().expect("body").len(), BODY_CAP);
    let w = env["warnings"].to_string();
    assert!(w.contains("url truncated to 2048 of 3015 bytes"), "{w}");
    assert!(w.contains("body truncated to 16384 of 32768 bytes"), "{w}");
    // A cut through a character drops the half character.
    let odd = format!("a{}", "é".repeat(BODY_CAP));
    let env = build(
        "PUT",
        "/",
        "a.test",
        &HeaderMap::new(),
        Some(odd.as_bytes()),
    );
    assert_eq!(env["body"].as_str().expect("body").len(), BODY_CAP - 1);
}

#[test]
fn binary_bodies_are_omitted_and_big_multipart_is_summarized() {
    let env = build(
        "POST",
        "/",
        "a.test",
        &HeaderMap::new(),
        Some(&[0xff, 0xfe, 0x00]),
    );
    assert!(env.get("body").is_none());
    assert!(env["warnings"][0]
        .as_str()
        .expect("w")
        .contains("not UTF-8"));

    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
    );
    let big = "z".repeat(BODY_CAP);
    let body = format!(
        "--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"dump.tar\"\r\nContent-Type: application/x-tar\r\n\r\n{big}\r\n--XyZ--\r\n"
    );
    let env = build("POST", "/", "a.test", &h, Some(body.as_bytes()));
    let s = env["body_summary"].as_str().expect("summary");
    assert!(s.contains("2 parts"), "{s}");
    assert!(s.contains("filename=\"dump.tar\""), "{s}");
    assert!(s.contains("application/x-tar"), "{s}");
    assert!(env.get("body").is_none());
}

#[test]
fn a_partly_read_body_is_flagged() {
    let h = HeaderMap::new();
    let mut env = build("POST", "/", "a.test", &h, Some(b"abc"));
    note_partial_body(&mut env, 3);
    assert_eq!(
        env["warnings"],
        json!(["the body is longer than the 3 bytes read for judging; the rest was not examined"])
    );
    let mut env = build("POST", "/", "a.test", &h, Some(&[0xff; 4][..]));
    note_partial_body(&mut env, 4);
    assert_eq!(env["warnings"].as_array().map(Vec::len), Some(2), "{env}");
}
