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

fn names_and_total(env: &Value) -> (Vec<String>, usize) {
    let hs = env["headers"].as_array().expect("headers");
    let names = hs
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_string())
        .collect();
    let total = hs
        .iter()
        .map(|v| v["name"].as_str().unwrap_or("").len() + v["value"].as_str().unwrap_or("").len())
        .sum();
    (names, total)
}

fn omitted(env: &Value) -> Option<usize> {
    env["warnings"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|w| {
            w.strip_suffix(" header values omitted: headers are capped at 4096 bytes in total")
        })
        .map(|n| n.parse().expect("count"))
}

#[test]
fn repeated_priority_headers_cannot_hide_credentials() {
    let mut h = HeaderMap::new();
    for name in ["host", "origin", "referer", "x-forwarded-for"] {
        for i in 0..9 {
            let v = format!("{i}{}", "r".repeat(499));
            h.append(name, HeaderValue::from_str(&v).expect("value"));
        }
    }
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer proxy-token"),
    );
    h.insert("cookie", HeaderValue::from_static("session=1"));
    let env = build("POST", "/", "a.test", &h, None);
    let (names, total) = names_and_total(&env);
    for must in ["content-type", "authorization", "cookie"] {
        assert!(names.iter().any(|n| n == must), "{must} hidden: {names:?}");
    }
    assert_eq!(
        &names[..7],
        [
            "host",
            "origin",
            "referer",
            "x-forwarded-for",
            "content-type",
            "authorization",
            "cookie"
        ],
        "first values first, in priority order"
    );
    assert!(total <= HEADERS_CAP, "{total}");
    assert_eq!(env["headers"][5]["value"], "Bearer proxy-token");
    // 39 values in all; what is not shown is counted.
    assert_eq!(omitted(&env), Some(39 - names.len()), "{env}");
}

#[test]
fn long_priority_headers_and_junk_cannot_hide_credentials() {
    let mut h = HeaderMap::new();
    let long = "L".repeat(2000);
    for name in PRIORITY {
        if !matches!(name, "authorization" | "cookie") {
            for _ in 0..3 {
                h.append(name, HeaderValue::from_str(&long).expect("value"));
            }
        }
    }
    for i in 0..100 {
        h.insert(
            http::HeaderName::from_bytes(format!("a-junk-{i:03}").as_bytes()).expect("name"),
            HeaderValue::from_static("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
        );
    }
    let cookie = format!("session={}", "c".repeat(600));
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer proxy-token"),
    );
    h.insert("cookie", HeaderValue::from_str(&cookie).expect("value"));
    let env = build("POST", "/", "a.test", &h, None);
    let (names, total) = names_and_total(&env);
    assert_eq!(
        names, PRIORITY,
        "every priority header, nothing else fits: {env}"
    );
    assert!(total <= HEADERS_CAP, "{total}");
    let auth = &env["headers"][9]["value"];
    assert_eq!(auth, "Bearer proxy-token", "short values stay whole");
    let c = env["headers"][10]["value"].as_str().expect("cookie");
    assert!(
        c.starts_with("session=cc") && c.ends_with("...[truncated, 608 bytes]"),
        "{c}"
    );
    let w = env["warnings"].to_string();
    assert!(
        w.contains("10 security-relevant header values shortened"),
        "{w}"
    );
    assert_eq!(omitted(&env), Some(9 * 3 + 100 - 9), "{w}");
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

#[test]
fn compressed_bodies_are_shown_decoded() {
    let text = br#"{"action":"transfer","to":"attacker"}"#;
    let deflated = {
        use std::io::Write;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text).expect("zlib");
        e.finish().expect("zlib")
    };
    for (enc, body) in [("gzip", gzip(text)), ("deflate", deflated)] {
        let mut h = HeaderMap::new();
        h.insert("content-encoding", HeaderValue::from_static(enc));
        let env = build("POST", "/", "a.test", &h, Some(&body));
        assert_eq!(
            env["body"],
            std::str::from_utf8(text).expect("utf8"),
            "{enc}: {env}"
        );
        let w = env["warnings"][0].as_str().expect("warning");
        assert_eq!(
            w,
            format!(
                "body decoded from Content-Encoding {enc}: {} bytes as sent, 37 bytes decoded",
                body.len()
            )
        );
    }
    // zstd, made by the zstd CLI (body_capture's fixtures).
    let zst = include_bytes!("../../body_capture/fixtures/hello.zst");
    let mut h = HeaderMap::new();
    h.insert("content-encoding", HeaderValue::from_static("zstd"));
    let env = build("POST", "/", "a.test", &h, Some(zst));
    assert_eq!(env["body"], "hello compressed world", "{env}");
    assert_eq!(
        env["warnings"][0],
        format!(
            "body decoded from Content-Encoding zstd: {} bytes as sent, 22 bytes decoded",
            zst.len()
        ),
        "{env}"
    );
}

#[test]
fn undecodable_and_bomb_bodies_are_flagged() {
    let mut h = HeaderMap::new();
    h.insert("content-encoding", HeaderValue::from_static("gzip"));
    let env = build("POST", "/", "a.test", &h, Some(b"not gzip at all"));
    assert!(env.get("body").is_none(), "{env}");
    let w = env["warnings"][0].as_str().expect("warning");
    assert!(
        w.starts_with("body of 15 bytes omitted: its Content-Encoding gzip could not be decoded"),
        "{w}"
    );
    for (enc, body) in [
        ("compress", &b"\x1f\x9d\x90"[..]),
        ("zstd", b"\x28\xb5\x2f\xfd"),
    ] {
        h.insert("content-encoding", HeaderValue::from_static(enc));
        let env = build("POST", "/", "a.test", &h, Some(body));
        assert!(
            env["warnings"][0]
                .as_str()
                .expect("w")
                .contains(&format!("{enc} could not be decoded")),
            "{env}"
        );
    }

    // Stacked codings are decoded, the inner layers as far as the outer reads:
    // a stacked bomb (64 MiB of text, gzipped twice) stops at DECODED_CAP too.
    h.insert("content-encoding", HeaderValue::from_static("gzip, gzip"));
    let env = build("POST", "/", "a.test", &h, Some(&gzip(&gzip(b"hidden"))));
    assert_eq!(env["body"], "hidden", "{env}");
    let bomb = gzip(&gzip(&vec![b'a'; 64 << 20]));
    let env = build("POST", "/", "a.test", &h, Some(&bomb));
    assert!(
        env["warnings"]
            .to_string()
            .contains(&format!("more than {DECODED_CAP} bytes decoded")),
        "{env}"
    );

    // 4 MiB of text in a few KiB: decoding stops at DECODED_CAP.
    let bomb = gzip(&vec![b'a'; 4 << 20]);
    h.insert("content-encoding", HeaderValue::from_static("gzip"));
    let env = build("POST", "/", "a.test", &h, Some(&bomb));
    let w = env["warnings"].to_string();
    assert!(
        w.contains(&format!(
            "more than {DECODED_CAP} bytes decoded; decoding stopped there"
        )),
        "{w}"
    );
    assert!(
        w.contains(&format!(
            "body truncated to {BODY_CAP} of {DECODED_CAP} bytes"
        )),
        "{w}"
    );
    assert_eq!(env["body"].as_str().map(str::len), Some(BODY_CAP));
}
