//! Property tests of how a request's Host (or authority, or tunnel target)
//! is read: whatever the text, a host and port or a refusal; what is
//! accepted is a host the dialer and the rules can take as it is (written
//! back as `host:port`, it reads as itself), and a host and port written
//! in any accepted way read as that host and port.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::{split_authority, tunnel_target};

/// `host` and `port` as an authority.
fn written(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// What any accepted host and port must be.
fn check_accepted(raw: &str, host: &str, port: u16) -> Result<(), TestCaseError> {
    prop_assert_ne!(port, 0, "{:?}", raw);
    prop_assert!(!host.is_empty(), "{:?}", raw);
    prop_assert!(!host.contains('@'), "{:?}: userinfo in {:?}", raw, host);
    prop_assert_eq!(host, host.to_ascii_lowercase(), "{:?}", raw);
    // A host with a colon is an IPv6 address and nothing else; one written
    // in brackets too: `[a.test]` is no IP literal (RFC 3986 §3.2.2).
    if host.contains(':') || raw.trim_start().starts_with('[') {
        prop_assert!(
            host.parse::<Ipv6Addr>().is_ok(),
            "{:?} read as host {:?}, which is not an IPv6 address",
            raw,
            host
        );
    } else {
        prop_assert!(!host.ends_with('.'), "{:?}", raw);
        prop_assert!(
            !host.split('.').any(str::is_empty),
            "{:?}: an empty label in {:?}",
            raw,
            host
        );
    }
    let again = written(host, port);
    prop_assert_eq!(
        split_authority(&again, 1),
        Some((host.to_string(), port)),
        "{:?} read as {:?}, which reads back as something else",
        raw,
        again
    );
    Ok(())
}

/// Text shaped like an authority, with the characters that matter to one.
fn authority_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-zA-Z0-9-]{1,8}",
        Just(".".to_string()),
        Just(":".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just("@".to_string()),
        Just("%".to_string()),
        Just("::".to_string()),
        Just("+".to_string()),
        "[0-9]{1,6}",
        any::<[u8; 4]>().prop_map(|a| Ipv4Addr::from(a).to_string()),
        any::<[u8; 16]>().prop_map(|a| Ipv6Addr::from(a).to_string()),
        "[!-~]",
    ];
    prop::collection::vec(piece, 1..10).prop_map(|p| p.concat())
}

/// A host as a client may write it: a name in any case, with or without
/// the root's dot, an IPv4 address, an IPv6 address in brackets.
fn host() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        (
            prop::collection::vec("[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?", 1..4),
            any::<bool>()
        )
            .prop_map(|(labels, root)| {
                let name = labels.join(".");
                let written = if root {
                    format!("{name}.")
                } else {
                    name.clone()
                };
                (written, name.to_ascii_lowercase())
            }),
        any::<[u8; 4]>().prop_map(|a| {
            let ip = Ipv4Addr::from(a).to_string();
            (ip.clone(), ip)
        }),
        any::<[u8; 16]>().prop_map(|a| {
            let ip = Ipv6Addr::from(a);
            (format!("[{ip}]"), ip.to_string())
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_text_is_a_host_and_port_or_refused(raw in "\\PC{0,30}") {
        if let Some((host, port)) = split_authority(&raw, 80) {
            check_accepted(&raw, &host, port)?;
        }
    }

    #[test]
    fn authority_shaped_text_is_a_host_and_port_or_refused(raw in authority_text()) {
        if let Some((host, port)) = split_authority(&raw, 443) {
            check_accepted(&raw, &host, port)?;
        }
        if let Ok(a) = raw.parse::<http::uri::Authority>() {
            if let Some((host, port)) = tunnel_target(&a) {
                check_accepted(&raw, &host, port)?;
            }
        }
    }

    #[test]
    fn a_host_and_port_read_as_written(
        (written, host) in host(),
        port in prop::option::of(1u16..),
    ) {
        let raw = match port {
            Some(p) => format!("{written}:{p}"),
            None => written.clone(),
        };
        prop_assert_eq!(
            split_authority(&raw, 8080),
            Some((host.clone(), port.unwrap_or(8080))),
            "{:?}", raw
        );
        if let Some(p) = port {
            let a: http::uri::Authority = raw.parse().expect("authority");
            prop_assert_eq!(tunnel_target(&a), Some((host, p)), "{:?}", raw);
        }
    }
}

/// A host in brackets is an IPv6 address (RFC 3986 §3.2.2's IP-literal):
/// `[:]` was read as the host `:`, `[a.test]` as `a.test`, a name the
/// proxy then checked and dialed while the upstream got `[a.test]`.
#[test]
fn a_bracketed_host_is_an_ipv6_address() {
    for raw in [
        "[:]",
        "[:]:443",
        "[a.test]:443",
        "[a.test]",
        "[1.2.3.4]:80",
        "[v1.x]:443",
    ] {
        assert_eq!(split_authority(raw, 80), None, "{raw:?}");
        if let Ok(a) = raw.parse::<http::uri::Authority>() {
            assert_eq!(tunnel_target(&a), None, "{raw:?}");
        }
    }
    assert_eq!(
        split_authority("[2001:DB8::1]:8443", 80),
        Some(("2001:db8::1".to_string(), 8443))
    );
}
