// An MCP server made with the official TypeScript SDK (@modelcontextprotocol/sdk): its
// Express app (`createMcpExpressApp`, whose `express.json()` decodes a body in the charset
// the request names) and its Streamable HTTP transport, stateless, answering in JSON, over
// HTTPS. Every tool call that reaches it is appended to CALLS as one JSON line, so tests
// check on the server what got through.
//
// usage: node mcp_ts_peer.js ADDR PORT CALLS CERT KEY HOSTNAME   (NODE_PATH: tests/node's modules)
"use strict";
const fs = require("fs");
const https = require("https");
const { McpServer } = require("@modelcontextprotocol/sdk/server/mcp.js");
const { StreamableHTTPServerTransport } = require("@modelcontextprotocol/sdk/server/streamableHttp.js");
const { createMcpExpressApp } = require("@modelcontextprotocol/sdk/server/express.js");
const { z } = require("zod");

const [addr, port, calls, cert, key, hostname] = process.argv.slice(2);
const app = createMcpExpressApp({ host: addr, allowedHosts: [hostname] });
app.post("/mcp", async (req, res) => {
  const server = new McpServer({ name: "ts-peer", version: "1.0.0" });
  for (const name of ["search_repositories", "delete_repo"]) {
    server.tool(name, { query: z.string().optional() }, async (args) => {
      fs.appendFileSync(calls, JSON.stringify({ tool: name, args }) + "\n");
      return { content: [{ type: "text", text: `${name} ran` }] };
    });
  }
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    enableJsonResponse: true,
  });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});
https
  .createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, app)
  .listen(Number(port), addr);
