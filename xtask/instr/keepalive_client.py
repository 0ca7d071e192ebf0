# The client of keepalive.sh: one CONNECT + TLS connection through the proxy,
# WARM GETs, then it creates the file `warm` and waits for the file `go`, then
# N more GETs on the same connection, then it creates the file `done`.
import os, socket, ssl, sys, time
proxy_port, up_port, warm, n = (int(a) for a in sys.argv[1:5])
ctx = ssl.create_default_context(cafile="mitm-ca.pem")
s = socket.create_connection(("127.0.0.1", proxy_port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.sendall(f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode())
head = b""
while b"\r\n\r\n" not in head:
    c = s.recv(4096)
    if not c: raise SystemExit("proxy closed during CONNECT")
    head += c
assert head.startswith(b"HTTP/1.1 200"), head
t = ctx.wrap_socket(s, server_hostname="127.0.0.1")
req = f"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode()
buf = b""
def get():
    global buf
    t.sendall(req)
    while b"\r\n\r\n" not in buf:
        c = t.recv(65536)
        if not c: raise SystemExit("proxy closed the connection")
        buf += c
    h, _, buf = buf.partition(b"\r\n\r\n")
    assert h.startswith(b"HTTP/1.1 200"), h[:100]
    cl = int([l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(buf) < cl:
        c = t.recv(65536)
        if not c: raise SystemExit("proxy closed the connection")
        buf += c
    buf = buf[cl:]
for _ in range(warm): get()
open("warm", "w").close()
while not os.path.exists("go"): time.sleep(0.05)
for _ in range(n): get()
open("done", "w").close()
while not os.path.exists("stop"): time.sleep(0.05)
t.close()
