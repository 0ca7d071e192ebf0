"""An HTTP/1.1 server that honours `Upgrade: h2c` (RFC 7540 §3.2, with the h2
library), for the end-to-end tests of which upgrades the proxy lets through.

usage: h2c_server.py HOST PORT LOG

Every request head it reads is appended to LOG as a JSON line
{"head": [request line, header lines...]}; every HTTP/2 request it serves
after an upgrade as {"h2": {pseudo-headers and headers}}.

- `Upgrade: h2c`: answers 101 and then speaks HTTP/2 (stream 1 is the
  upgraded request), as a real h2c server does.
- path `/switch-h2c`: answers 101 `Upgrade: h2c` whatever was asked (an
  upstream switching to a protocol the client did not ask for).
- path `/switch-ws-no-accept`: answers 101 `Upgrade: websocket` without
  `Sec-WebSocket-Accept`, and logs what it reads after it.
- anything else: 200 with the head it read as a JSON body.
"""

import base64
import json
import socket
import sys
import threading

import h2.config
import h2.connection
import h2.events

HOST, PORT, LOG = sys.argv[1], int(sys.argv[2]), sys.argv[3]
log_lock = threading.Lock()


def log(entry):
    with log_lock, open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


def read_head(c):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = c.recv(65536)
        if not d:
            return None, b""
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin1").split("\r\n"), rest


def speak_h2(c, settings, first_line):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_upgrade_connection(
        base64.urlsafe_b64decode(settings + "=" * (-len(settings) % 4))
    )

    def respond(stream, info):
        body = json.dumps(info).encode()
        conn.send_headers(stream, [(":status", "200"), ("content-length", str(len(body)))])
        conn.send_data(stream, body, end_stream=True)

    respond(1, {"upgraded": first_line})
    c.sendall(conn.data_to_send())
    seen = {}
    while True:
        d = c.recv(65536)
        if not d:
            return
        for ev in conn.receive_data(d):
            if isinstance(ev, h2.events.RequestReceived):
                h = {k.decode(): v.decode() for k, v in ev.headers}
                seen[ev.stream_id] = h
                log({"h2": h})
            elif isinstance(ev, h2.events.StreamEnded):
                respond(ev.stream_id, {"h2": seen.get(ev.stream_id)})
        c.sendall(conn.data_to_send())


def handle(c):
    with c:
        while True:
            lines, _ = read_head(c)
            if lines is None:
                return
            log({"head": lines})
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            path = lines[0].split(" ")[1] if " " in lines[0] else ""
            if headers.get("upgrade", "").lower() == "h2c":
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                speak_h2(c, headers.get("http2-settings", ""), lines[0])
                return
            if path.endswith("/switch-h2c"):
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                return
            if path.endswith("/switch-ws-no-accept"):
                # A 101 to websocket without the Sec-WebSocket-Accept the key asks for,
                # then whatever the client sends is read as HTTP.
                c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                rest = c.recv(65536)
                log({"after_101": rest.decode("latin-1")})
                return
            body = json.dumps({"head": lines}).encode()
            c.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                % len(body)
                + body
            )


s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((HOST, PORT))
s.listen(64)
while True:
    conn, _ = s.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
