//! The bypass suite: a workload under eBPF interception tries the known ways around an egress
//! proxy, and each one fails. `docs/security.md` lists every technique with its result; keep
//! the two in step.
//!
//! Safety: programs attach only to the test's own cgroup; workloads connect only to
//! fake-internet addresses and loopback. The IMDS probe is refused in `connect()` before any
//! packet exists, and its socket is bound to `lo` so that nothing could leave the machine even
//! if interception were off.

use iron_proxy_tests::cgroup::Ran;
use iron_proxy_tests::*;
use serde_json::json;

mod escape;

use crate::intercept::lab::{assert_probes, probe, resolve, Lab, EPERM};

#[test]
fn direct_ip_on_any_port_is_redirected_and_refused() {
    require_root!();
    let net = FakeInternet::new();
    let target = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    let ip = target.ip();

    for url in [
        format!("http://{ip}/anything/ip80"),
        format!("http://{ip}:8080/anything/ip8080"),
        format!("https://{ip}/anything/ip443"),
        format!("https://{ip}:8443/anything/ip8443"),
    ] {
        let r = lab.curl(&[&url]);
        assert_eq!(
            r.status, 403,
            "{url}: IP literals are reachable only through allowlist cidrs: {r}"
        );
    }
    let rec = lab.audit_for("/anything/ip8443");
    assert_eq!(rec.str("original_dst"), Some(format!("{ip}:8443").as_str()));
    assert_eq!(rec.rejected_by(), Some("allowlist"), "{rec}");

    // Not HTTP, not TLS (an SSH banner): refused and audited.
    let out = lab.cg.python(
        "import socket,sys\ns=socket.create_connection((sys.argv[1],22),5)\n\
         s.sendall(b'SSH-2.0-OpenSSH_9.2\\r\\n')\nprint(repr(s.recv(100)))",
        [ip.to_string()],
    );
    assert_eq!(out.stdout.trim(), "b''", "the proxy closes: {out}");
    let rec = lab
        .px
        .wait_for_audit(|a| a.str("original_dst") == Some(&format!("{ip}:22")));
    assert_eq!(rec.str("reason"), Some("unknown_protocol"), "{rec}");
    target.assert_untouched();
}

#[test]
fn ipv6_and_v4_mapped_destinations_are_intercepted_too() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let evil = Upstream::https("evil.test").start(&net);
    let lab = Lab::start(&net);

    // An allowed name at an IPv6 address goes through the proxy.
    let r = lab.curl(&[
        "--resolve",
        &resolve("httpbin.test", 443, up.ipv6()),
        "https://httpbin.test/anything/v6-name",
    ]);
    r.expect_status(200);
    let rec = lab.audit_for("/anything/v6-name");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("[{}]:443", up.ipv6()).as_str()),
        "{rec}"
    );

    // IPv6 literal, and an IPv4 destination written v4-mapped on an IPv6 socket.
    let v6_url = format!("http://[{}]/anything/v6-literal", evil.ipv6());
    let r = lab.curl(&["-g", &v6_url]);
    assert_eq!(r.status, 403, "{r}");
    let out = lab.cg.python(
        "import socket,sys\ns=socket.socket(socket.AF_INET6)\ns.settimeout(5)\n\
         s.connect(('::ffff:'+sys.argv[1],80))\n\
         s.sendall(b'GET /anything/mapped HTTP/1.1\\r\\nHost: evil.test\\r\\nConnection: close\\r\\n\\r\\n')\n\
         print(s.recv(100).split(b'\\r\\n')[0].decode())",
        [evil.ip().to_string()],
    );
    assert_eq!(out.stdout.trim(), "HTTP/1.1 403 Forbidden", "{out}");
    let rec = lab.audit_for("/anything/mapped");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("{}:80", evil.ip()).as_str()),
        "a v4-mapped destination is reported as IPv4: {rec}"
    );
    evil.assert_untouched();
}

#[test]
fn quic_and_other_udp_are_refused() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    let specs: Vec<String> = vec![
        format!("udp,{},443", up.ip()),
        format!("udpconnect,{},443", up.ip()),
        format!("udp,{},443", up.ipv6()),
        format!("udp,::ffff:{},443", up.ip()),
        format!("udp,{},8443", up.ip()),
        // A UDP socket connected to port 53 (allowed: DNS) may not sendto elsewhere.
        format!("udpconnect-sendto,{},443", up.ip()),
        // DNS to a native IPv6 resolver when the proxy's DNS listens on IPv4 only.
        format!("udp,{},53", net.ns_side_v6()),
    ];
    let results = probe(&lab.cg, &specs);
    assert_probes(&results, &specs, json!(EPERM), "UDP other than DNS");
}

#[test]
fn foreign_dns_over_udp_and_tcp_is_answered_by_the_proxy() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    // A real resolver that knows the name: the fake internet's dnsmasq.
    let resolver = net.resolver();
    let proxy_ip = net.host_side_v4().to_string();
    for (transport, name) in [("+notcp", "udp.httpbin.test"), ("+tcp", "tcp.httpbin.test")] {
        let at = format!("@{}", resolver.ip());
        let ran = lab
            .cg
            .dig(&[&at, name, "A", "+short", "+time=3", "+tries=1", transport]);
        assert_eq!(
            ran.stdout.trim(),
            proxy_ip,
            "{transport}: answered by the proxy, not by the resolver asked ({}): {ran}",
            up.ip()
        );
        assert!(
            !net.dns().was_queried(name),
            "{transport}: the foreign resolver saw the workload's query"
        );
    }
}

#[test]
fn dns_over_tls_on_853_is_redirected_and_refused() {
    require_root!();
    let net = FakeInternet::new();
    let lab = Lab::start(&net);
    let resolver = net.resolver();
    let at = format!("@{}", resolver.ip());
    for extra in ["+tls", "+tls-hostname=httpbin.test"] {
        let ran = lab.cg.dig(&[
            &at,
            "httpbin.test",
            "A",
            "+short",
            "+tls",
            extra,
            "+time=3",
            "+tries=1",
        ]);
        assert_no_address(&ran, "DoT");
    }
    assert!(
        !net.dns().was_queried("httpbin.test"),
        "the resolver saw DoT"
    );
    // A DoT client without ALPN, naming an allowed host: TLS completes (MITM), but what it
    // carries is not HTTP.
    let ca = lab.px.ca().to_string();
    let out = lab.cg.python(DOT_CLIENT, [resolver.ip().to_string(), ca]);
    assert_eq!(
        out.stdout.trim(),
        "b''",
        "the proxy closes without answering: {out}"
    );
    let rec = lab
        .px
        .wait_for_audit(|a| a.str("sni") == Some("httpbin.test"));
    assert_eq!(rec.str("reason"), Some("unknown_protocol"), "{rec}");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("{}:853", resolver.ip()).as_str())
    );
    // Plain DNS-over-TCP bytes to 853: neither TLS nor HTTP.
    let ran = lab.cg.dig(&[
        &at,
        "-p",
        "853",
        "httpbin.test",
        "+tcp",
        "+short",
        "+time=3",
        "+tries=1",
    ]);
    assert_no_address(&ran, "DNS over TCP to 853");
    let rec = lab
        .px
        .wait_for_audit(|a| a.str("original_dst") == Some(&format!("{}:853", resolver.ip())));
    assert_eq!(rec.action(), Some("reject"), "{rec}");
}

/// DNS over TLS without ALPN: a length-prefixed A query for `httpbin.test` inside TLS with
/// SNI `httpbin.test`; prints what came back (`b''` when the proxy closed).
const DOT_CLIENT: &str = r#"
import socket, ssl, struct, sys
ctx = ssl.create_default_context(cafile=sys.argv[2])
raw = socket.create_connection((sys.argv[1], 853), 5)
s = ctx.wrap_socket(raw, server_hostname='httpbin.test')
q = bytes.fromhex('123401000001000000000000') + b'\x07httpbin\x04test\x00' + bytes.fromhex('00010001')
s.sendall(struct.pack('!H', len(q)) + q)
try:
    print(repr(s.recv(200)))
except (OSError, ssl.SSLError) as e:
    print('error', e)
"#;

/// Panics if `dig +short` printed any address: the lookup must not have been answered.
fn assert_no_address(ran: &Ran, what: &str) {
    let answered = ran
        .stdout
        .lines()
        .any(|l| l.trim().parse::<std::net::IpAddr>().is_ok());
    assert!(!answered, "{what} must not resolve: {ran}");
}

#[test]
fn sni_and_host_mismatch_is_refused_with_421() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let evil = Upstream::https("evil.test").start(&net);
    let lab = Lab::start_with(&net, |c| {
        c["transforms"][0]["config"]["domains"] = json!(["httpbin.test", "evil.test"]);
    });
    for http in ["--http1.1", "--http2"] {
        let r = lab.curl(&[
            http,
            "--resolve",
            &resolve("httpbin.test", 443, up.ip()),
            "-H",
            "Host: evil.test",
            "https://httpbin.test/anything/fronting",
        ]);
        assert_eq!(r.status, 421, "{http}: {r}");
    }
    let rec = lab.audit_for("/anything/fronting");
    assert_eq!(rec.str("reason"), Some("host_mismatch"), "{rec}");
    evil.assert_untouched();
    up.assert_untouched();
}

#[test]
fn dns_rebinding_into_deny_cidrs_is_refused() {
    require_root!();
    let net = FakeInternet::new();
    let internal = Upstream::https("internal.test").start(&net);
    let (v4, v6) = (internal.ip(), internal.ipv6());
    net.dns().set("rebind.test", &[v4.into(), v6.into()]);
    net.dns()
        .set("loop.test", &["127.0.0.1".parse().expect("ip")]);
    // A connect() to 0.0.0.0 lands on this host's loopback.
    net.dns()
        .set("zero.test", &["0.0.0.0".parse().expect("ip")]);
    let lab = Lab::start_with(&net, |c| {
        c["transforms"][0]["config"]["domains"] = json!(["rebind.test", "loop.test", "zero.test"]);
        c["proxy"] = json!({"upstream_deny_cidrs": [
            format!("{v4}/32"), format!("{v6}/128"),
            "169.254.169.254/32", "fd00:ec2::254/128", "127.0.0.0/8", "::1/128",
        ]});
    });
    // The workload connects to some allowed-looking fake address; the proxy resolves the
    // name itself and finds a denied address.
    let somewhere = net.add_host().v4;
    for name in ["rebind.test", "loop.test", "zero.test"] {
        let path = format!("/anything/{name}");
        let r = lab.curl(&[
            "--resolve",
            &resolve(name, 443, somewhere),
            &format!("https://{name}{path}"),
        ]);
        assert_eq!(r.status, 502, "{name}: {r}");
        let rec = lab.audit_for(&path);
        assert_eq!(rec.str("reason"), Some("deny_cidr"), "{rec}");
    }
    internal.assert_untouched();
}

#[test]
fn instance_metadata_is_refused_in_the_kernel() {
    require_root!();
    let net = FakeInternet::new();
    let lab = Lab::start(&net);
    // First prove the hooks are live for this cgroup (a loopback port is in the deny list).
    let live = vec!["tcplo,127.0.0.1,9".to_string()];
    assert_probes(&probe(&lab.cg, &live), &live, json!(EPERM), "hooks live");
    let imds = vec![
        "tcplo,169.254.169.254,80".to_string(),
        "tcplo,fd00:ec2::254,80".to_string(),
        "tcplo,::ffff:169.254.169.254,80".to_string(),
    ];
    assert_probes(
        &probe(&lab.cg, &imds),
        &imds,
        json!(EPERM),
        "IMDS must be refused in connect()",
    );
}

#[test]
fn tcp_fast_open_is_redirected_like_connect() {
    require_root!();
    let net = FakeInternet::new();
    let up = Upstream::https("httpbin.test").start(&net);
    let lab = Lab::start(&net);
    // sendto(MSG_FASTOPEN) without connect(): the SYN carries the request.
    let spec = vec![format!("tfo,{},80", up.ip())];
    let results = probe(&lab.cg, &spec);
    assert_eq!(results[&spec[0]], "HTTP/1.1 403 Forbidden", "{results}");
    let rec = lab.audit_for("/anything/tfo");
    assert_eq!(
        rec.str("original_dst"),
        Some(format!("{}:80", up.ip()).as_str())
    );
    up.assert_untouched();
}
