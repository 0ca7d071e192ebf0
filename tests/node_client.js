// Node clients for the end-to-end suite (tests/e2e/clients/node.rs): the `https` module and
// `fetch`, against tests/client_peer.py through the proxy. NODE_EXTRA_CA_CERTS carries the
// proxy's CA; NODE_PATH holds undici (scripts/setup-test-env.sh, target/test-node).
//
// Usage: node node_client.js MODE PROXY ORIGIN DENIED
//   MODE connect: through the CONNECT proxy PROXY (http://host:port): `https` with a
//        CONNECT agent written here, `fetch` with undici's ProxyAgent;
//   MODE direct: ORIGIN's name resolves to the proxy's HTTPS listener: `https` with a
//        keep-alive agent, Node's own global `fetch`.
//   ORIGIN: https://name of the allowed origin; DENIED: https://name the proxy refuses.
// Prints one JSON object: per client, what each step saw.
"use strict";

const https = require("https");
const http = require("http");
const tls = require("tls");
const crypto = require("crypto");

const [mode, proxy, origin, denied] = process.argv.slice(2);

// An https.Agent that opens each connection with CONNECT through `proxy`.
class ConnectAgent extends https.Agent {
  createConnection(options, callback) {
    const p = new URL(proxy);
    const target = `${options.host}:${options.port || 443}`;
    const req = http.request({
      host: p.hostname,
      port: p.port,
      method: "CONNECT",
      path: target,
      headers: { host: target },
    });
    req.once("connect", (res, socket) => {
      if (res.statusCode !== 200) {
        socket.destroy();
        const err = new Error(`CONNECT ${target}: ${res.statusCode}`);
        err.statusCode = res.statusCode;
        callback(err);
        return;
      }
      const s = tls.connect({ socket, servername: options.servername || options.host });
      callback(null, s);
    });
    req.once("error", callback);
    req.end();
  }
}

function sha256(buf) {
  return crypto.createHash("sha256").update(buf).digest("hex");
}

// A request with the `https` module; `body` is a Buffer (sent with Content-Length) or an
// array of Buffers (written one by one: chunked). Resolves {status, headers, body, chunks}.
function httpsRequest(agent, method, url, body) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, agent }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () =>
        resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) })
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    if (Array.isArray(body)) {
      for (const part of body) req.write(part);
      req.end();
    } else {
      req.end(body);
    }
  });
}

// The `https` module: keep-alive reuse, POST bodies, a streaming response, a refusal.
async function viaHttps() {
  const agent =
    mode === "connect"
      ? new ConnectAgent({ keepAlive: true, maxSockets: 1 })
      : new https.Agent({ keepAlive: true, maxSockets: 1 });
  const out = {};
  out.gets = [];
  for (let i = 0; i < 3; i++) {
    const r = await httpsRequest(agent, "GET", `${origin}/files/https/hello.txt`);
    out.gets.push({ status: r.status, body: r.body.toString() });
  }
  const big = crypto.randomBytes(256 * 1024);
  let r = await httpsRequest(agent, "POST", `${origin}/echo/https/length`, big);
  out.post = { status: r.status, echo: JSON.parse(r.body), sha256: sha256(big), len: big.length };
  const parts = [];
  for (let i = 0; i < 8; i++) parts.push(crypto.randomBytes(40 * 1024));
  const all = Buffer.concat(parts);
  r = await httpsRequest(agent, "POST", `${origin}/echo/https/chunked`, parts);
  out.chunked = { status: r.status, echo: JSON.parse(r.body), sha256: sha256(all), len: all.length };
  out.stream = await new Promise((resolve, reject) => {
    const req = https.get(`${origin}/hold/https`, { agent: mode === "connect" ? new ConnectAgent() : undefined }, (res) => {
      const seen = [];
      res.on("data", (c) => {
        seen.push(c.toString());
        if (seen.length === 1) {
          // The first line arrived while the origin still holds the rest: release it.
          res.pause();
          httpsRequest(agent, "GET", `${origin}/release/https`).then((rel) => {
            seen.push(`released ${rel.status}`);
            res.resume();
          }, reject);
        }
      });
      res.on("end", () => resolve({ status: res.statusCode, seen }));
      res.on("error", reject);
    });
    req.on("error", reject);
  });
  try {
    r = await httpsRequest(mode === "connect" ? new ConnectAgent() : undefined, "GET", `${denied}/files/hello.txt`);
    out.denied = { status: r.status, blocked: r.headers["x-iron-proxy-blocked"] || null, body: r.body.toString() };
  } catch (e) {
    out.denied = { error: e.message, status: e.statusCode || null };
  }
  agent.destroy();
  return out;
}

// `fetch`: undici's with a ProxyAgent (connect), or Node's global one (direct).
async function viaFetch() {
  let fetchFn = globalThis.fetch;
  let dispatcher;
  if (mode === "connect") {
    const undici = require("undici");
    fetchFn = undici.fetch;
    dispatcher = new undici.ProxyAgent({ uri: proxy, requestTls: {}, proxyTls: {} });
  }
  const opts = (extra) => (dispatcher ? { dispatcher, ...extra } : { ...extra });
  const out = { gets: [] };
  for (let i = 0; i < 3; i++) {
    const r = await fetchFn(`${origin}/files/fetch/hello.txt`, opts({}));
    out.gets.push({ status: r.status, body: await r.text() });
  }
  const big = crypto.randomBytes(256 * 1024);
  let r = await fetchFn(`${origin}/echo/fetch/length`, opts({ method: "POST", body: big }));
  out.post = { status: r.status, echo: await r.json(), sha256: sha256(big), len: big.length };
  const parts = [];
  for (let i = 0; i < 8; i++) parts.push(crypto.randomBytes(40 * 1024));
  const all = Buffer.concat(parts);
  const stream = new ReadableStream({
    start(controller) {
      for (const p of parts) controller.enqueue(new Uint8Array(p));
      controller.close();
    },
  });
  r = await fetchFn(
    `${origin}/echo/fetch/chunked`,
    opts({ method: "POST", body: stream, duplex: "half" })
  );
  out.chunked = { status: r.status, echo: await r.json(), sha256: sha256(all), len: all.length };
  r = await fetchFn(`${origin}/hold/fetch`, opts({}));
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  const seen = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    seen.push(dec.decode(value));
    if (seen.length === 1) {
      const rel = await fetchFn(`${origin}/release/fetch`, opts({}));
      await rel.text();
      seen.push(`released ${rel.status}`);
    }
  }
  out.stream = { status: r.status, seen };
  try {
    r = await fetchFn(`${denied}/files/hello.txt`, opts({}));
    out.denied = { status: r.status, blocked: r.headers.get("x-iron-proxy-blocked"), body: await r.text() };
  } catch (e) {
    const chain = [];
    for (let c = e; c; c = c.cause) chain.push(`${c.name}: ${c.message}${c.code ? ` (${c.code})` : ""}`);
    out.denied = { error: chain.join(" <- "), status: null };
  }
  if (dispatcher) await dispatcher.close();
  return out;
}

(async () => {
  const result = { https: await viaHttps(), fetch: await viaFetch() };
  console.log(JSON.stringify(result));
})().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
