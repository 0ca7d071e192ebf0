//! URLs as logs and errors show them: without the parts that may carry a
//! credential. A user and password (`https://user:pw@host`) and a query
//! (`?token=...`, `?api_key=...`, as some collectors and gateways take their
//! key) come from the environment as often as the host does
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, `AWS_ENDPOINT_URL*`, `OP_CONNECT_HOST`),
//! and an error naming the URL reaches the log, the reload answer and
//! `/v1/status`. The fragment goes too: it is never sent, and is as free
//! text as the query.

/// `url` without its user and password, query and fragment, spelled as
/// written otherwise (no `/` added after a bare host). Works on text no URL
/// parser accepts, as errors about a malformed endpoint need: the query
/// starts at the first `?` or `#`, the authority ends at the first `/` (or
/// `\`, which URL parsers read as `/`) after the scheme's `//`, and what in
/// it comes before its last `@` is the userinfo.
pub fn for_log(url: &str) -> String {
    let cut = url.find(['?', '#']).unwrap_or(url.len());
    let url = &url[..cut];
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '\\']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}{host}{path}")
}

/// `text` (a URL, an authority or a `Host` value a client sent) with the
/// user and password of its authority, if any, replaced by `***`: kept
/// otherwise as written, so that a refusal quoting it still shows what
/// was wrong. A client that wrote `user:pw@host` has put a credential
/// there, and the refusal's audit record and error quote the text.
pub fn userinfo_masked(text: &str) -> std::borrow::Cow<'_, str> {
    let start = text.find("://").map_or(0, |i| i + 3);
    let rest = &text[start..];
    let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}***{}", &text[..start], &rest[at..]).into(),
        None => text.into(),
    }
}

/// `url` without its user and password, when it has any; the query is
/// kept (it is part of where a request goes). Spelled as written
/// otherwise: no `/` added after a bare host and port. `None` when there is
/// no userinfo, or `url` is not a URL.
pub fn without_userinfo(url: &str) -> Option<String> {
    let mut u = url::Url::parse(url).ok()?;
    if u.username().is_empty() && u.password().is_none() {
        return None;
    }
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let text = u.to_string();
    let bare = u.path() == "/" && u.query().is_none() && !url.ends_with('/');
    Some(match text.strip_suffix('/') {
        Some(t) if bare => t.to_string(),
        _ => text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clients_userinfo_is_masked_and_the_rest_kept() {
        for (text, shown) in [
            ("eve:EvePW@denied.test", "***@denied.test"),
            ("frank:FrankPW@denied.test:443", "***@denied.test:443"),
            ("http://eve:EvePW@a.test/x?q=1", "http://***@a.test/x?q=1"),
            ("u:p@w@a.test", "***@a.test"),
            ("a.test:80", "a.test:80"),
            ("http://a.test/x@y", "http://a.test/x@y"),
            ("", ""),
        ] {
            assert_eq!(userinfo_masked(text), shown, "{text}");
        }
    }

    #[test]
    fn userinfo_query_and_fragment_are_left_out() {
        for (url, shown) in [
            ("http://host:4318/?token=SECRETPW", "http://host:4318/"),
            ("https://u:pw@c.example:4318", "https://c.example:4318"),
            ("https://u:p@w@c.example/otlp/", "https://c.example/otlp/"),
            (
                "https://c.example/v1/logs#frag",
                "https://c.example/v1/logs",
            ),
            ("https://c.example?k=v", "https://c.example"),
            ("http://u:pw@h\\x?y", "http://h\\x"),
            ("u:pw@host:4317", "host:4317"),
            ("https://c.example/otlp", "https://c.example/otlp"),
            // Not a URL any parser takes: still no password.
            ("https://u:pw@ho st/x?y", "https://ho st/x"),
        ] {
            assert_eq!(for_log(url), shown, "{url}");
        }
    }

    #[test]
    fn without_userinfo_keeps_the_query_and_the_spelling() {
        for (url, bare) in [
            ("https://c.example:4318", None),
            ("https://u:p@c.example:4318", Some("https://c.example:4318")),
            (
                "https://u:p@c.example/otlp/",
                Some("https://c.example/otlp/"),
            ),
            ("https://u:p@c.example/?t=a", Some("https://c.example/?t=a")),
        ] {
            assert_eq!(without_userinfo(url).as_deref(), bare, "{url}");
        }
    }
}
