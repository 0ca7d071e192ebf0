# The client of newconn.sh: N sequential CONNECT + TLS + GET connections through the proxy.
import socket, ssl, sys
proxy_port, up_port, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile="mitm-ca.pem")
ok = 0
for i in range(n):
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
    t.sendall(f"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += t.recv(65536)
    h, _, rest = buf.partition(b"\r\n\r\n")
    cl = int([l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(rest) < cl:
        rest += t.recv(65536)
    assert h.startswith(b"HTTP/1.1 200"), h[:100]
    ok += 1
    t.close()
print("ok", ok)
