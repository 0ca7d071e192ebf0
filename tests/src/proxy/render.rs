//! Renders a test's config into the file the proxy reads: fills in what must differ per test
//! (listen ports, the resolver, the MITM CA) and leaves everything else as written.
//!
//! Rules, applied to the config as a JSON value:
//! - `proxy.http_listen`, `proxy.https_listen`, `dns.listen`, `metrics.listen`: a free port on
//!   the listen IP when absent (their defaults, :80/:443/:53/:9090, would collide);
//! - `proxy.tunnel_listen`, `management.listen`: a free port when the value is `"auto"`;
//! - any of the above set to `"auto"` likewise; an explicit address is kept;
//! - `dns.proxy_ip`: the listen IP when absent;
//! - `dns.upstream_resolver`: the fake internet's dnsmasq when `.resolver(&net)` was used and
//!   the key is absent;
//! - `tls.ca_cert` / `tls.ca_key`: the proxy's test CA unless set or `tls.mode` is `sni-only`.

use std::net::{IpAddr, SocketAddr};

use serde_json::{Map, Value};

use crate::ports::free_port;

/// Ports chosen by the harness, per listener.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports {
    /// `proxy.http_listen`.
    pub http: Option<SocketAddr>,
    /// `proxy.https_listen`.
    pub https: Option<SocketAddr>,
    /// `proxy.tunnel_listen`.
    pub tunnel: Option<SocketAddr>,
    /// `dns.listen`.
    pub dns: Option<SocketAddr>,
    /// `metrics.listen`.
    pub metrics: Option<SocketAddr>,
    /// `management.listen`.
    pub management: Option<SocketAddr>,
}

/// What the renderer needs besides the config.
#[derive(Clone, Debug)]
pub struct Inputs {
    /// IP the listeners bind to.
    pub listen_ip: IpAddr,
    /// `dns.upstream_resolver`, if a fake internet was given.
    pub resolver: Option<SocketAddr>,
    /// MITM CA certificate and key paths.
    pub ca: (String, String),
}

fn obj<'a>(root: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let root = root.as_object_mut().expect("config root is an object");
    let entry = root
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        // `proxy:` with no body parses as null.
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

/// Fills `section.key` per the module rules; returns the address if the harness chose it,
/// else the explicit address if it parses.
fn listen(
    cfg: &mut Value,
    section: &str,
    key: &str,
    fill_absent: bool,
    ip: IpAddr,
    udp: bool,
) -> Option<SocketAddr> {
    let has_section = cfg.get(section).is_some();
    if !has_section && !fill_absent {
        return None;
    }
    let map = obj(cfg, section);
    match map.get(key) {
        Some(Value::String(s)) if s == "auto" => {}
        Some(Value::String(s)) => return s.parse().ok(),
        Some(_) => return None,
        None if !fill_absent => return None,
        None => {}
    }
    let addr = SocketAddr::new(ip, free_port(ip, udp));
    map.insert(key.to_string(), Value::String(addr.to_string()));
    Some(addr)
}

/// Renders `cfg` in place and returns the listener addresses.
pub fn render(cfg: &mut Value, inputs: &Inputs) -> Ports {
    if cfg.is_null() {
        *cfg = Value::Object(Map::new());
    }
    assert!(
        cfg.is_object(),
        "the proxy config must be a YAML mapping, got {cfg}"
    );
    let ip = inputs.listen_ip;
    let ports = Ports {
        http: listen(cfg, "proxy", "http_listen", true, ip, false),
        https: listen(cfg, "proxy", "https_listen", true, ip, false),
        tunnel: listen(cfg, "proxy", "tunnel_listen", false, ip, false),
        dns: listen(cfg, "dns", "listen", true, ip, true),
        metrics: listen(cfg, "metrics", "listen", true, ip, false),
        management: listen(cfg, "management", "listen", false, ip, false),
    };
    let dns = obj(cfg, "dns");
    dns.entry("proxy_ip")
        .or_insert_with(|| Value::String(ip.to_string()));
    if let Some(resolver) = inputs.resolver {
        dns.entry("upstream_resolver")
            .or_insert_with(|| Value::String(resolver.to_string()));
    }
    let tls = obj(cfg, "tls");
    if tls.get("mode").and_then(Value::as_str) != Some("sni-only") {
        tls.entry("ca_cert")
            .or_insert_with(|| Value::String(inputs.ca.0.clone()));
        tls.entry("ca_key")
            .or_insert_with(|| Value::String(inputs.ca.1.clone()));
    }
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            listen_ip: [127, 0, 0, 1].into(),
            resolver: Some("198.18.0.2:53".parse().expect("addr")),
            ca: ("/ca.crt".into(), "/ca.key".into()),
        }
    }

    #[test]
    fn fills_listeners_resolver_and_ca_but_keeps_explicit_values() {
        let mut cfg: Value = serde_yaml_ng::from_str(
            "proxy:\n  https_listen: 127.0.0.1:1443\n  tunnel_listen: auto\ndns:\n  proxy_ip: 10.0.0.1\n",
        )
        .expect("yaml");
        let ports = render(&mut cfg, &inputs());
        assert_eq!(ports.https, Some("127.0.0.1:1443".parse().expect("addr")));
        let http = ports.http.expect("http filled");
        assert_eq!(cfg["proxy"]["http_listen"], http.to_string());
        assert!(ports.tunnel.is_some());
        assert!(ports.management.is_none());
        assert_eq!(cfg["dns"]["proxy_ip"], "10.0.0.1");
        assert_eq!(cfg["dns"]["upstream_resolver"], "198.18.0.2:53");
        assert_eq!(cfg["tls"]["ca_key"], "/ca.key");
        assert_ne!(ports.http, ports.dns);
    }

    #[test]
    fn sni_only_gets_no_ca_and_null_sections_are_filled() {
        let mut cfg: Value =
            serde_yaml_ng::from_str("proxy:\ntls:\n  mode: sni-only\n").expect("yaml");
        render(&mut cfg, &inputs());
        assert!(cfg["tls"].get("ca_cert").is_none());
        assert!(cfg["proxy"]["http_listen"].is_string());
    }
}
