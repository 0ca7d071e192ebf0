# The client of the instr scripts, through the proxy's CONNECT + MITM TLS:
#   client.py newconn PROXY_PORT UP_PORT N
#     (newconn.sh) N sequential connections, one GET each, then prints "ok N";
#   client.py keepalive PROXY_PORT UP_PORT WARM N
#     (keepalive.sh) one connection: WARM GETs, then it creates the file
#     `warm` and waits for the file `go`, then N more GETs on the same
#     connection, creates `done`, and closes once the file `stop` exists.
import os, socket, ssl, sys, time

mode, proxy_port, up_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ctx = ssl.create_default_context(cafile="mitm-ca.pem")
req = f"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode()


def tunnel():
    """A TLS connection to the upstream through CONNECT (the proxy's MITM)."""
    s = socket.create_connection(("127.0.0.1", proxy_port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"CONNECT 127.0.0.1:{up_port} HTTP/1.1\r\nHost: 127.0.0.1:{up_port}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(4096)
        if not c:
            raise SystemExit("proxy closed during CONNECT")
        head += c
    assert head.startswith(b"HTTP/1.1 200"), head
    return ctx.wrap_socket(s, server_hostname="127.0.0.1")


def recv(t):
    c = t.recv(65536)
    if not c:
        raise SystemExit("proxy closed the connection")
    return c


def get(t, buf):
    """One GET on `t`; `buf` holds bytes already read. Returns what is left over."""
    t.sendall(req)
    while b"\r\n\r\n" not in buf:
        buf += recv(t)
    h, _, buf = buf.partition(b"\r\n\r\n")
    assert h.startswith(b"HTTP/1.1 200"), h[:100]
    cl = int([l.split(b":")[1] for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")][0])
    while len(buf) < cl:
        buf += recv(t)
    return buf[cl:]


def wait_for(name):
    while not os.path.exists(name):
        time.sleep(0.05)


if mode == "newconn":
    n = int(sys.argv[4])
    for _ in range(n):
        t = tunnel()
        get(t, b"")
        t.close()
    print("ok", n)
elif mode == "keepalive":
    warm, n = int(sys.argv[4]), int(sys.argv[5])
    t, buf = tunnel(), b""
    for _ in range(warm):
        buf = get(t, buf)
    open("warm", "w").close()
    wait_for("go")
    for _ in range(n):
        buf = get(t, buf)
    open("done", "w").close()
    wait_for("stop")
    t.close()
else:
    raise SystemExit(f"unknown mode {mode!r}: newconn or keepalive")
