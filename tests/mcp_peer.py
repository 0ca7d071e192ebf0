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


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "server":
        serve(*sys.argv[2:8])
    elif cmd == "client":
        asyncio.run(client(sys.argv[2]))
    elif cmd == "raw":
        asyncio.run(raw(sys.argv[2]))
    else:
        sys.exit(f"unknown command {cmd}")
