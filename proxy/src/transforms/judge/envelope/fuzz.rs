//! Property tests of the judge's envelope over requests a workload shapes
//! to hide something: any header names, values (any bytes a field value may
//! hold), URL and body. The caps hold, whatever is cut is cut from the start
//! of what was sent and said so, and the first value of every priority
//! header is shown.

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use serde_json::Value;

use super::{build, BODY_CAP, HEADERS_CAP, PRIORITY, URL_CAP};

/// Field values: short and long, text and any bytes a value may hold.
fn value() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 2 => 0x80u8..=0xff];
    prop_oneof![
        4 => prop::collection::vec(byte.clone(), 0..40),
        1 => prop::collection::vec(byte, 400..1500),
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(PRIORITY.to_vec()).prop_map(str::to_string),
        1 => "[a-z][a-z0-9-]{0,20}",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    prop::collection::vec((name(), value()), 0..60)
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        2 => "\\PC{0,200}".prop_map(String::into_bytes),
        1 => ("\\PC{1,4}", 5000usize..7000).prop_map(|(s, n)| s.repeat(n).into_bytes()),
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn the_caps_hold_and_priority_headers_are_shown(
        fields in headers(),
        url in prop_oneof!["\\PC{0,64}", "[a-z/]{2000,2100}", "é{1000,1100}"],
        body in body(),
    ) {
        let mut h = HeaderMap::new();
        for (n, v) in &fields {
            let n = HeaderName::from_bytes(n.as_bytes()).expect("name");
            h.append(n, HeaderValue::from_bytes(v).expect("value"));
        }
        let env = build("POST", &url, "a.test", &h, body.as_deref());
        let warnings: Vec<&str> = env["warnings"]
            .as_array()
            .map(|w| w.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let shown_url = env["url"].as_str().expect("url");
        prop_assert!(shown_url.len() <= URL_CAP);
        prop_assert!(url.starts_with(shown_url));
        if shown_url.len() < url.len() {
            prop_assert!(warnings.iter().any(|w| w.starts_with("url truncated")));
        }
        let shown: Vec<(&str, &str)> = env["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .map(|v| (v["name"].as_str().expect("name"), v["value"].as_str().expect("value")))
            .collect();
        // The host added in place of a missing Host header is not counted.
        let counted = if h.contains_key("host") { &shown[..] } else { &shown[1..] };
        let total: usize = counted.iter().map(|(n, v)| n.len() + v.len()).sum();
        prop_assert!(total <= HEADERS_CAP, "{} bytes of headers shown", total);
        for p in PRIORITY {
            if let Some(first) = h.get(p) {
                let value = shown.iter().find(|(n, _)| *n == p).map(|(_, v)| *v);
                let Some(value) = value else {
                    return Err(TestCaseError::fail(format!("{p} not shown")));
                };
                let sent = String::from_utf8_lossy(first.as_bytes());
                let cut = value.split("...[truncated, ").next().unwrap_or(value);
                prop_assert!(sent.starts_with(cut), "{} shown as {:?}", p, value);
            }
        }
        // (A body with a Content-Encoding is shown decoded: `body_capture`'s own tests.)
        let encoded = h.contains_key("content-encoding");
        if let (Some(text), Some(sent), false) = (env["body"].as_str(), &body, encoded) {
            prop_assert!(text.len() <= BODY_CAP);
            prop_assert!(sent.starts_with(text.as_bytes()), "the body shown is not what was sent");
            if text.len() < sent.len() {
                prop_assert!(warnings.iter().any(|w| w.starts_with("body truncated")));
            }
        }
    }
}
