"""MCP peers for the end-to-end suite, built on the official MCP Python SDK.

    mcp_peer.py server HOST PORT CALLS_LOG MODE CERT KEY
        A FastMCP server over Streamable HTTP (HTTPS, path /mcp) with four tools. MODE is
        "sse" (answers as text/event-stream) or "json" (application/json). Every tool call
        that reaches it is appended to CALLS_LOG as a JSON line, so a test can prove that a
        refused call never arrived.

    mcp_peer.py client URL
        The SDK's client session through HTTPS_PROXY (SSL_CERT_FILE trusts the proxy's CA):
        initialize, list the tools, call allowed and denied tools. Prints one JSON line.

    mcp_peer.py raw URL
        Hand-made requests no SDK sends (percent-encoded path, duplicate keys, a batch), with
        httpx through the same proxy. Prints one JSON line.

    mcp_peer.py crafted HOST PORT CALLS_LOG CERT KEY
        A hand-made hostile server (no SDK: it answers in ways FastMCP never would) over
        HTTPS. Its tools/list answer lists "search_repositories" and "delete_repository" in
        the form named by the last path segment (/mcp/MODE), each a way a filter that reads
        less than the client does lets the denied tool through (see _crafted below), or
        compressed with zstd (/mcp/zstd, with the `zstandard` package) although the proxy
        asked for no encoding.

    mcp_peer.py list URL...
        The SDK's client session, one per URL: initialize and list the tools. Prints one JSON
        line mapping each URL's last path segment to {"tools": [...]} or {"error": "..."}.
"""

import asyncio
import json
import sys


def serve(host, port, calls_log, mode, cert, key):
    import uvicorn
    from mcp.server.fastmcp import FastMCP
    from mcp.server.transport_security import TransportSecuritySettings

    mcp = FastMCP(
        "fake-github",
        json_response=(mode == "json"),
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    def log(tool, args):
        with open(calls_log, "a") as f:
            f.write(json.dumps({"tool": tool, "args": args}) + "\n")

    @mcp.tool()
    def search_repositories(query: str) -> str:
        """Search repositories."""
        log("search_repositories", {"query": query})
        return f"found repositories for {query}"

    @mcp.tool()
    def create_issue(owner: str, repo: str, title: str) -> str:
        """Open an issue."""
        log("create_issue", {"owner": owner, "repo": repo, "title": title})
        return f"opened {owner}/{repo}: {title}"

    @mcp.tool()
    def delete_repository(owner: str, repo: str) -> str:
        """Delete a repository."""
        log("delete_repository", {"owner": owner, "repo": repo})
        return f"deleted {owner}/{repo}"

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo."""
        log("echo", {"text": text})
        return text

    uvicorn.run(
        mcp.streamable_http_app(),
        host=host,
        port=int(port),
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
    )


async def client(url):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client
    from mcp.shared.exceptions import McpError

    out = {}
    async with streamablehttp_client(url) as (read, write, _):
        async with ClientSession(read, write) as s:
            await s.initialize()
            listed = await s.list_tools()
            out["tools"] = sorted(t.name for t in listed.tools)
            r = await s.call_tool("search_repositories", {"query": "iron"})
            out["search"] = r.content[0].text
            r = await s.call_tool(
                "create_issue", {"owner": "ironsh", "repo": "iron-proxy", "title": "[bot] hi"}
            )
            out["create_allowed"] = r.content[0].text
            for name, tool, args in [
                ("delete", "delete_repository", {"owner": "ironsh", "repo": "iron-proxy"}),
                ("create_denied", "create_issue", {"owner": "evil", "repo": "iron-proxy", "title": "[bot] x"}),
                ("echo", "echo", {"text": "hi"}),
            ]:
                try:
                    r = await s.call_tool(tool, args)
                    out[name] = {"result": [c.text for c in r.content]}
                except McpError as e:
                    out[name] = {"code": e.error.code, "message": e.error.message}
    print(json.dumps(out))


async def raw(url):
    import httpx

    out = {}
    base = url.rsplit("/", 1)[0]
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=20) as c:
        call = {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                "params": {"name": "delete_repository", "arguments": {"owner": "a", "repo": "b"}}}
        r = await c.post(base + "/%6Dcp", json=call, headers=headers)
        out["encoded_path"] = {"status": r.status_code, "body": r.json()}
        dup = b'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo","name":"delete_repository","arguments":{"owner":"a","repo":"b","text":"x"}}}'
        r = await c.post(url, content=dup, headers=headers)
        out["duplicate_key"] = {"status": r.status_code, "body": r.json()}
        batch = [
            {"jsonrpc": "2.0", "id": 13, "method": "tools/call", "params": {"name": "search_repositories", "arguments": {"query": "q"}}},
            {"jsonrpc": "2.0", "id": 14, "method": "tools/call", "params": {"name": "delete_repository", "arguments": {"owner": "a", "repo": "b"}}},
        ]
        r = await c.post(url, json=batch, headers=headers)
        out["batch"] = {"status": r.status_code, "body": r.json()}
    print(json.dumps(out))


# The crafted server's tools/list answers, by mode: (content type, body) for a request id.
def _crafted(mode, rid):
    tools = [
        {"name": "search_repositories", "inputSchema": {"type": "object"}},
        {"name": "delete_repository", "inputSchema": {"type": "object"}},
    ]

    def answer(id_, tools_=tools):
        return {"jsonrpc": "2.0", "id": id_, "result": {"tools": tools_}}

    full = json.dumps(answer(rid))
    if mode == "json_rpc_type":
        # The Python SDK takes any type starting "application/json" as JSON.
        return "application/json-rpc", full
    if mode == "string_id":
        # The Python SDK reads the answer id "1" as the request id 1.
        return "application/json", json.dumps(answer(str(rid)))
    if mode == "nan":
        # Not JSON, but the SDK's parser (pydantic) reads NaN.
        nan = dict(tools[1], inputSchema={"type": "object", "properties": {
            "n": {"type": "number", "default": float("nan")}}})
        return "application/json", json.dumps(answer(rid, [tools[0], nan]))
    if mode == "sse_nan":
        nan = dict(tools[1], inputSchema={"default": float("nan")})
        return "text/event-stream", "event: message\ndata: " + json.dumps(answer(rid, [nan])) + "\n\n"
    if mode == "zstd":
        # Sent as Content-Encoding: zstd (see do_POST).
        return "application/json", full
    if mode == "sse_second_answer":
        # The first answer carries the id but the SDK drops it (no "jsonrpc"); the second,
        # with the same id, is the one it takes.
        decoy = {"id": rid, "result": {"tools": []}}
        return "text/event-stream", "".join(
            "event: message\ndata: " + json.dumps(m) + "\n\n" for m in (decoy, answer(rid)))
    raise ValueError(mode)


def crafted(host, port, calls_log, cert, key):
    import ssl
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send(self, status, content_type=None, body=b"", encoding=None):
            self.send_response(status)
            if content_type:
                self.send_header("Content-Type", content_type)
            if encoding:
                self.send_header("Content-Encoding", encoding)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self.send(405)

        def do_DELETE(self):
            self.send(405)

        def do_POST(self):
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if "id" not in req:
                return self.send(202)
            rid, method = req["id"], req.get("method")
            if method == "initialize":
                result = {"protocolVersion": req["params"]["protocolVersion"],
                          "capabilities": {"tools": {}}, "serverInfo": {"name": "crafted", "version": "1"}}
                body = {"jsonrpc": "2.0", "id": rid, "result": result}
                return self.send(200, "application/json", json.dumps(body).encode())
            if method == "tools/call":
                with open(calls_log, "a") as f:
                    f.write(json.dumps({"tool": req["params"]["name"]}) + "\n")
                body = {"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": "ran"}]}}
                return self.send(200, "application/json", json.dumps(body).encode())
            mode = self.path.rsplit("/", 1)[-1]
            content_type, body = _crafted(mode, rid)
            if mode == "zstd":
                import zstandard

                packed = zstandard.ZstdCompressor(write_checksum=True).compress(body.encode())
                return self.send(200, content_type, packed, encoding="zstd")
            self.send(200, content_type, body.encode())

    server = ThreadingHTTPServer((host, int(port)), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


async def list_tools(urls):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client

    async def one(url):
        async with streamablehttp_client(url) as (read, write, _):
            async with ClientSession(read, write) as s:
                await s.initialize()
                listed = await s.list_tools()
                return {"tools": sorted(t.name for t in listed.tools)}

    out = {}
    for url in urls:
        try:
            out[url.rsplit("/", 1)[-1]] = await asyncio.wait_for(one(url), 10)
        except BaseException as e:  # an ExceptionGroup from the SDK's task group, a timeout
            out[url.rsplit("/", 1)[-1]] = {"error": repr(e)[:300]}
    print(json.dumps(out))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "server":
        serve(*sys.argv[2:8])
    elif cmd == "client":
        asyncio.run(client(sys.argv[2]))
    elif cmd == "raw":
        asyncio.run(raw(sys.argv[2]))
    elif cmd == "crafted":
        crafted(*sys.argv[2:7])
    elif cmd == "list":
        asyncio.run(list_tools(sys.argv[2:]))
    else:
        sys.exit(f"unknown command {cmd}")
