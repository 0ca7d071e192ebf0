//! Pre-signed URLs: their `X-Amz-*` signature parameters, dropped before the
//! request is signed again in headers, and their expiry, which AWS enforces
//! (403) and the proxy must not extend by re-signing.

use std::time::{Duration, SystemTime};

/// Query parameters of a pre-signed URL, dropped before re-signing in headers.
const PRESIGN_PARAMS: [&str; 7] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
    "X-Amz-Security-Token",
];

/// `query` without the pre-signed URL's `X-Amz-*` signature parameters, the
/// others left as they were written.
pub fn without_presign(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            let name = percent_decode(name);
            !PRESIGN_PARAMS.iter().any(|p| p.eq_ignore_ascii_case(&name))
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(s.as_bytes())
        .next()
        .map(|(k, _)| k.into_owned())
        .unwrap_or_default()
}

/// When a pre-signed URL with this `query` expired, if it has: `X-Amz-Date`
/// plus `X-Amz-Expires` seconds is before `now`. A URL without both (or with
/// values that do not parse) is not judged here.
pub fn expired(query: &str, now: SystemTime) -> Option<String> {
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.into_owned())
    };
    let date = param("X-Amz-Date")?;
    let expires: u64 = param("X-Amz-Expires")?.trim().parse().ok()?;
    let signed = amz_date(&date)?;
    let until = signed.checked_add(Duration::from_secs(expires))?;
    (until < now).then(|| format!("{date} + {expires}s"))
}

/// `YYYYMMDDTHHMMSSZ` as a time.
pub(super) fn amz_date(s: &str) -> Option<SystemTime> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = time::PrimitiveDateTime::parse(s, format).ok()?;
    Some(t.assume_utc().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAX%2F20250101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20250101T000000Z&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=abc&versionId=3";

    fn at(s: &str) -> SystemTime {
        amz_date(s).expect("a date")
    }

    #[test]
    fn only_the_signature_parameters_go() {
        assert_eq!(without_presign(URL), "versionId=3");
        assert_eq!(without_presign("a=1&x-amz-date=2&b"), "a=1&b");
    }

    #[test]
    fn a_url_expires_after_its_seconds() {
        assert_eq!(expired(URL, at("20250101T000000Z")), None);
        assert_eq!(
            expired(URL, at("20250101T000100Z")),
            None,
            "the last second"
        );
        assert_eq!(
            expired(URL, at("20250101T000101Z")).as_deref(),
            Some("20250101T000000Z + 60s")
        );
        // Not judged without both parameters, or with ones that do not parse.
        let far = at("20300101T000000Z");
        assert_eq!(expired("X-Amz-Date=20250101T000000Z", far), None);
        assert_eq!(expired("X-Amz-Expires=60", far), None);
        assert_eq!(expired("X-Amz-Date=yesterday&X-Amz-Expires=60", far), None);
        assert_eq!(
            expired("X-Amz-Date=20250101T000000Z&X-Amz-Expires=-1", far),
            None
        );
    }
}
