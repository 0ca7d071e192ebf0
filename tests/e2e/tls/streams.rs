//! The HTTP/2 stream limit (100 streams open per client connection, `H2_MAX_CONCURRENT_STREAMS`)
//! does not hurt a client that fans out: httpx over one HTTP/2 connection through CONNECT
//! sends more requests at once than the limit, holds them open at the upstream, and gets every
//! answer (a client queues what it may not open yet; the proxy refuses nothing it was asked
//! within the limit). The bound on what a client that opens more and reads nothing pins is
//! checked in the listener's unit tests (`listen/mod.rs`).

use super::*;

/// How many requests at once: more than the limit.
const REQUESTS: usize = 150;

/// httpx, HTTP/2 only, one connection: `REQUESTS` GETs of `/delay/1` at once.
/// Arguments: the CA file, the CONNECT proxy URL, the number of requests.
/// Prints `{"statuses": {...}, "versions": [...], "max_streams": N}`.
const HTTPX_FAN_OUT: &str = r#"
import asyncio, collections, json, sys, httpx
ca, proxy, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
async def main():
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(http1=False, http2=True, verify=ca, proxy=proxy,
                                 timeout=60, limits=limits) as c:
        rs = await asyncio.gather(*[c.get("https://httpbin.test/delay/1?i=%d" % i) for i in range(n)])
    print(json.dumps({
        "statuses": collections.Counter(str(r.status_code) for r in rs),
        "versions": sorted({r.http_version for r in rs}),
    }))
asyncio.run(main())
"#;

#[test]
fn an_http2_client_fanning_out_past_the_stream_limit_gets_every_answer() {
    require_root!();
    let (_net, _up, px) = mitm_with("httpbin.test");
    let proxy = format!("http://{}", hostport(px.tunnel_addr()));
    let out = python(
        HTTPX_FAN_OUT,
        [px.ca(), proxy.as_str(), REQUESTS.to_string().as_str()],
    );
    let v = out.assert_ok().json();
    assert_eq!(v["statuses"]["200"], REQUESTS, "{out}");
    assert_eq!(v["versions"], serde_json::json!(["HTTP/2"]), "{out}");
    // One record each, all from the one client connection.
    let records = wait_until(Duration::from_secs(10), "a record per request", || {
        let all: Vec<_> = px
            .audit()
            .iter()
            .filter(|a| a.path() == Some("/delay/1"))
            .cloned()
            .collect();
        (all.len() >= REQUESTS).then_some(all)
    });
    assert_eq!(records.len(), REQUESTS, "one record per request");
    assert!(records.iter().all(|a| a.status_code() == Some(200)));
    let clients: std::collections::HashSet<_> = records
        .iter()
        .filter_map(|a| a.str("remote_addr"))
        .collect();
    assert_eq!(clients.len(), 1, "one client connection: {clients:?}");
}
