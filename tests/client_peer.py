"""The origin server for the real-client tests (git, pip, npm, Node): HTTPS on one
host of the fake internet, HTTP/1.1 with keep-alive, standard library only.

Usage: client_peer.py HOST PORTS CERT KEY ROOT LOG TOKEN

PORTS is a comma-separated list; a port written `plain:N` serves plain HTTP, the
others HTTPS.

- /git/<repo>.git/...: `git http-backend` (smart HTTP) over the bare repositories
  in ROOT/git. Needs `Authorization: Basic` whose password is TOKEN, else 401
  with a Basic challenge (what git's credential flow answers).
- anything else: the static file under ROOT/static (a directory answers its
  index.html); `/npm/<name>` answers ROOT/static/npm/<name>/index.json, the
  way a registry answers package metadata. Files carry an ETag; If-None-Match
  with it is answered 304. GET /hold/ID answers "first" at once and "last" only once
  GET /release/ID arrived (or after 30 s): a client that reads "first" before it
  asks for the release proves the response streams through the proxy.
- POST /echo[/...]: answers what it received: length, sha256, the request's framing.
- /early/...: 401 before reading the upload, then the upload read (2 s at most) and
  the connection closed. /early/slow sends the 401's head, then its body 0.1 s later.

Request bodies may be chunked and gzip-encoded (git sends both); the server
de-chunks them, and git http-backend undoes the gzip itself. Every request is
appended to LOG as a JSON line: method, path, query, the Authorization header,
Content-Encoding, Transfer-Encoding, Content-Length, the body size received,
the status answered and the connection's client port; a request is logged as its answer
starts, so a client that has its answer finds its request there.
"""

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST, PORTS, CERT, KEY, ROOT, LOG, TOKEN = sys.argv[1:8]
LOG_LOCK = threading.Lock()
HELD = {}
HELD_LOCK = threading.Lock()


def held(name):
    with HELD_LOCK:
        return HELD.setdefault(name, threading.Event())
TYPES = {
    ".html": "text/html",
    ".json": "application/json",
    ".whl": "application/octet-stream",
    ".tgz": "application/octet-stream",
}


def basic_password(value):
    import base64

    scheme, _, rest = (value or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(rest.strip()).decode().partition(":")[2]
    except Exception:
        return None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        # Small writes (chunk by chunk) leave at once, not after the peer's delayed ACK.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read_body(self):
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def record(self, status, body):
        url = urllib.parse.urlsplit(self.path)
        entry = {
            "method": self.command,
            "path": url.path,
            "query": url.query,
            "authorization": self.headers.get("Authorization"),
            "content_encoding": self.headers.get("Content-Encoding"),
            "transfer_encoding": self.headers.get("Transfer-Encoding"),
            "content_length": self.headers.get("Content-Length"),
            "body_len": len(body),
            "status": status,
            "port": self.client_address[1],
        }
        with LOG_LOCK, open(LOG, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def answer(self, status, body, ctype="text/plain", extra=(), body_after=0.0):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if body_after:
            # The head alone first (end_headers flushed it), the body that much later.
            time.sleep(body_after)
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_response(self, code, message=None):
        # Each request is logged as its answer starts, before any of it leaves: a client that
        # has its whole answer finds its request in LOG (logging after the answer raced it).
        pending = getattr(self, "pending_log", None)
        if pending is not None:
            self.pending_log = None
            self.record(code, pending)
        super().send_response(code, message)

    def handle_any(self):
        self.pending_log = None
        if self.path.startswith("/early/"):
            self.pending_log = b""
            # Answers before reading the upload (an auth check, a quota), then reads what
            # comes of it for a while before closing, as servers do (a close with unread
            # data resets the connection, and the client may lose the answer).
            self.close_connection = True
            # /early/slow: the head alone first; a client may give up its upload on seeing it.
            body_after = 0.1 if self.path.startswith("/early/slow") else 0.0
            self.answer(
                401,
                b"answered before the upload\n",
                extra=[("Connection", "close")],
                body_after=body_after,
            )
            self.wfile.flush()
            self.connection.settimeout(2)
            try:
                self.read_body()
            except OSError:
                pass
            return
        body = self.read_body()
        self.pending_log = body
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if path.startswith("/git/"):
            self.git(path[len("/git"):], url.query, body)
        elif path.startswith("/echo"):
            framing = {
                "len": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "transfer_encoding": self.headers.get("Transfer-Encoding"),
                "content_length": self.headers.get("Content-Length"),
            }
            self.answer(200, json.dumps(framing).encode(), "application/json")
        elif path.startswith("/hold/"):
            self.hold(path[len("/hold/"):])
        elif path.startswith("/release/"):
            held(path[len("/release/"):]).set()
            self.answer(200, b"released\n")
        else:
            self.static(path)

    do_GET = do_POST = do_HEAD = do_PUT = handle_any

    def hold(self, name):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.write(b"6\r\nfirst\n\r\n")
        self.wfile.flush()
        held(name).wait(30)
        self.wfile.write(b"5\r\nlast\n\r\n0\r\n\r\n")

    def static(self, path):
        base = os.path.realpath(os.path.join(ROOT, "static"))
        if path.startswith("/npm/") and not path.endswith(".tgz"):
            path = path.rstrip("/") + "/index.json"
        full = os.path.realpath(os.path.join(base, path.lstrip("/")))
        if not full.startswith(base + os.sep) and full != base:
            self.answer(404, b"not found\n")
            return 404
        if os.path.isdir(full):
            full = os.path.join(full, "index.html")
        if not os.path.isfile(full):
            self.answer(404, b"not found\n")
            return 404
        with open(full, "rb") as f:
            data = f.read()
        etag = '"%s"' % hashlib.sha256(data).hexdigest()[:16]
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return 304
        ext = os.path.splitext(full)[1]
        self.answer(200, data, TYPES.get(ext, "application/octet-stream"), [("ETag", etag)])
        return 200

    def git(self, path_info, query, body):
        if basic_password(self.headers.get("Authorization")) != TOKEN:
            self.answer(
                401,
                b"authentication required\n",
                extra=[("WWW-Authenticate", 'Basic realm="git"')],
            )
            return 401
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": os.path.join(ROOT, "git"),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path_info,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "git",
            "REMOTE_ADDR": self.client_address[0],
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.Popen(
            ["git", "http-backend"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        feeder = threading.Thread(target=self.feed, args=(proc, body))
        feeder.start()
        status, headers = 200, []
        while True:
            line = proc.stdout.readline().rstrip(b"\r\n")
            if not line:
                break
            k, _, v = line.decode("latin-1").partition(":")
            if k.lower() == "status":
                status = int(v.split()[0])
            else:
                headers.append((k, v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        # Streamed as it comes out of git (a clone's pack is large).
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        while True:
            chunk = proc.stdout.read1(65536)
            if not chunk:
                break
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")
        feeder.join()
        proc.wait()
        return status

    @staticmethod
    def feed(proc, body):
        try:
            proc.stdin.write(body)
            proc.stdin.close()
        except BrokenPipeError:
            pass


def serve(port, tls):
    class Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6 if ":" in HOST else socket.AF_INET
        daemon_threads = True

    server = Server((HOST, port), Handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(CERT, KEY)
        ctx.set_alpn_protocols(["http/1.1"])
        # The handshake happens on the handler's thread, at its first read.
        server.socket = ctx.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    return server


def main():
    servers = []
    for spec in PORTS.split(","):
        plain = spec.startswith("plain:")
        servers.append(serve(int(spec.removeprefix("plain:")), not plain))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    servers[0].serve_forever()


if __name__ == "__main__":
    main()
