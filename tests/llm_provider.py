"""A stand-in LLM provider for the judge's end-to-end tests.

    llm_provider.py HOST PORT API_KEY LOG

Serves Anthropic's Messages API (POST /v1/messages) and OpenAI's Chat Completions API
(POST /v1/chat/completions). No model runs offline, so the *decision* is simulated; the wire
formats are not: every request is validated against the official SDKs' request types
(anthropic.types.MessageCreateParamsNonStreaming, openai CompletionCreateParamsNonStreaming,
with pydantic), the API key is checked the way each API expects it, and every answer is
built from the SDKs' response models (anthropic.types.Message, openai ChatCompletion).
A request that fails validation gets the API's 400 error shape, and the test sees it.

The simulated model reads the envelope (the user message) and answers:
  url contains "/fail-500"  -> HTTP 500 (an API error)
  url contains "/slow"      -> sleeps 5 s first
  url contains "/garbage"   -> prose instead of JSON
  url contains "/fenced"    -> a JSON ALLOW inside a ```json fence
  url contains "/echo-key"  -> prose quoting the API key it was called with (Anthropic)
  url contains "/rate-limited" -> HTTP 429 with Retry-After: 60 (Anthropic)
  url or body contains "billing" or "delete" -> DENY
  otherwise                 -> ALLOW
Every request's system prompt and envelope go to LOG as a JSON line.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from pydantic import TypeAdapter
from anthropic.types import Message
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from openai.types.chat import ChatCompletion
from openai.types.chat.completion_create_params import CompletionCreateParamsNonStreaming

HOST, PORT, API_KEY, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ANTHROPIC_REQ = TypeAdapter(MessageCreateParamsNonStreaming)
OPENAI_REQ = TypeAdapter(CompletionCreateParamsNonStreaming)
lock = threading.Lock()


def decide(envelope):
    url = envelope.get("url", "")
    text = url + envelope.get("body", "")
    if "/slow" in url:
        time.sleep(5)
    if "/garbage" in url:
        return "I think this request is probably fine."
    if "/fenced" in url:
        return '```json\n{"decision": "ALLOW", "reason": "fenced"}\n```'
    if "billing" in text or "delete" in text:
        return json.dumps({"decision": "DENY", "reason": "touches billing or deletes data"})
    return json.dumps({"decision": "ALLOW", "reason": "within policy"})


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, obj, headers=()):
        body = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            body = json.loads(raw)
        except ValueError:
            return self.reply(400, {"error": {"type": "invalid_request_error", "message": "not json"}})
        if self.path == "/v1/messages":
            return self.anthropic(body)
        if self.path == "/v1/chat/completions":
            return self.openai(body)
        self.reply(404, {"error": {"type": "not_found_error", "message": self.path}})

    def record(self, api, system, user, headers):
        with lock, open(LOG, "a") as f:
            f.write(json.dumps({"api": api, "system": system, "envelope": json.loads(user),
                                "headers": headers}) + "\n")

    def anthropic(self, body):
        if self.headers.get("x-api-key") != API_KEY:
            return self.reply(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})
        if not self.headers.get("anthropic-version"):
            return self.reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}})
        try:
            req = ANTHROPIC_REQ.validate_python(body)
            messages = list(req["messages"])
        except Exception as e:  # the SDK's own types refused it
            return self.reply(400, {"type": "error", "error": {"type": "invalid_request_error", "message": str(e)[:500]}})
        user = messages[-1]["content"]
        self.record("anthropic", req.get("system"), user, dict(self.headers))
        envelope = json.loads(user)
        if "/fail-500" in envelope.get("url", ""):
            return self.reply(500, {"type": "error", "error": {"type": "api_error", "message": "internal"}})
        if "/rate-limited" in envelope.get("url", ""):
            return self.reply(429, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
                              [("Retry-After", "60")])
        text = decide(envelope)
        if "/echo-key" in envelope.get("url", ""):
            text = f"Called with x-api-key {self.headers.get('x-api-key')}; looks fine to me."
        msg = Message(
            id="msg_test", type="message", role="assistant", model=req["model"],
            content=[{"type": "text", "text": text}], stop_reason="end_turn", stop_sequence=None,
            usage={"input_tokens": len(user) // 4, "output_tokens": len(text) // 4},
        )
        self.reply(200, msg.model_dump_json().encode())

    def openai(self, body):
        if self.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self.reply(401, {"error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": "Incorrect API key"}})
        try:
            req = OPENAI_REQ.validate_python(body)
            messages = list(req["messages"])
        except Exception as e:
            return self.reply(400, {"error": {"type": "invalid_request_error", "message": str(e)[:500]}})
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        user = messages[-1]["content"]
        self.record("openai", system, user, dict(self.headers))
        envelope = json.loads(user)
        if "/fail-500" in envelope.get("url", ""):
            return self.reply(500, {"error": {"type": "server_error", "message": "internal"}})
        text = decide(envelope)
        completion = ChatCompletion(
            id="chatcmpl-test", object="chat.completion", created=int(time.time()), model=req["model"],
            choices=[{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": text}}],
            usage={"prompt_tokens": len(user) // 4, "completion_tokens": len(text) // 4,
                   "total_tokens": len(user) // 4 + len(text) // 4},
        )
        self.reply(200, completion.model_dump_json().encode())


ThreadingHTTPServer((HOST, PORT), Handler).serve_forever()
