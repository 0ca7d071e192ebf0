import http.server, ssl, sys
# The upstream of newconn.sh and keepalive.sh: HTTPS on 127.0.0.1:<port>, keep-alive,
# answers of <size> bytes (default 1 KiB).
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"x" * (int(sys.argv[2]) if len(sys.argv) > 2 else 1024)
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(self.body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("up.pem", "up.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
