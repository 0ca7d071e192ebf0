import http.server, ssl, sys
# The upstream of newconn.sh and keepalive.sh: HTTPS on 127.0.0.1:<port>, keep-alive,
# answers of <size> bytes (default 1 KiB). Each answer goes out in one write, head and
# body together, as the bench's upstream sends it: written apart (send_response,
# end_headers, then the body), the body waited on Nagle for the proxy's delayed ACK,
# 40 ms per request, and the proxy took a second read and forwarded the head alone.
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    body = b"x" * (int(sys.argv[2]) if len(sys.argv) > 2 else 1024)
    def do_GET(self):
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n"
        self.wfile.write(head % len(self.body) + self.body)
    def log_message(self, *a): pass
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("up.pem", "up.key")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
