#!/usr/bin/env python3
"""A test OTLP logs receiver built on the official opentelemetry-proto definitions.

Serves OTLP/HTTP (POST to any path, protobuf or JSON body, optionally gzip) and
OTLP/gRPC (opentelemetry.proto.collector.logs.v1.LogsService/Export) on
127.0.0.1, and appends every decoded log record as one JSON line to --out.

On startup it prints one JSON line to stdout with the bound ports:
    {"http_port": 43123, "grpc_port": 43124}

Each output line:
    {"transport": "http"|"grpc", "path": "/v1/logs" (the HTTP request path; "" for gRPC),
     "headers": {...}, "resource": {...},
     "scope": {"name": ..., "version": ...}, "time_unix_nano": ..., "observed_time_unix_nano": ...,
     "severity_number": ..., "severity_text": ..., "event_name": ..., "body": ..., "attributes": {...}}
AnyValues become plain JSON (arrays, objects, strings, numbers, booleans; bytes as base64).

With --reject-all it answers every request with partial_success rejecting all
its log records (error_message "rejected by test").

With --tls-cert and --tls-key both ports serve TLS (OpenSSL for HTTP, gRPC's own
for gRPC) with that certificate; with --client-ca as well they require a client
certificate issued by that CA (mutual TLS), and a connection without one fails
its handshake. Each output line then has "peer": {"tls": true, "client_cn": CN
of the client certificate or null}; without TLS, {"tls": false, "client_cn": null}.

With --grpc-wire-out PATH (plaintext only) the gRPC port is a TCP relay in
front of the gRPC server that reads the client's HTTP/2 frames as they pass
(hyperframe, hpack) and appends one JSON line per request stream to PATH:
    {"path": ":path", "headers": {...request headers...}, "compressed": bool}
where "compressed" is the Compressed-Flag of the stream's first gRPC message:
what was on the wire, which the gRPC server's own API does not show.

Needs: pip install opentelemetry-proto grpcio protobuf (and hyperframe hpack
for --grpc-wire-out)
Stop it with SIGTERM or SIGINT.
"""

import argparse
import base64
import gzip
import json
import signal
import socket
import ssl
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc

_lock = threading.Lock()


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


def attributes(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


def response(request, reject_all):
    rsp = logs_service_pb2.ExportLogsServiceResponse()
    if reject_all:
        n = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
        rsp.partial_success.rejected_log_records = n
        rsp.partial_success.error_message = "rejected by test"
    return rsp


def write_records(out, transport, path, headers, request, peer):
    lines = []
    for rl in request.resource_logs:
        resource = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            scope = {"name": sl.scope.name, "version": sl.scope.version}
            for lr in sl.log_records:
                lines.append(json.dumps({
                    "transport": transport,
                    "path": path,
                    "headers": headers,
                    "resource": resource,
                    "scope": scope,
                    "time_unix_nano": lr.time_unix_nano,
                    "observed_time_unix_nano": lr.observed_time_unix_nano,
                    "severity_number": lr.severity_number,
                    "severity_text": lr.severity_text,
                    # event_name is in opentelemetry-proto >= 1.5 (python package 1.30+).
                    "event_name": getattr(lr, "event_name", ""),
                    "body": any_value(lr.body),
                    "attributes": attributes(lr.attributes),
                    "peer": peer,
                }, sort_keys=True))
    with _lock:
        with open(out, "a", encoding="utf-8") as f:
            for line in lines:
                f.write(line + "\n")


def http_handler(out, reject_all):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        # Any path is accepted and recorded: which URL an exporter posts to
        # (OTEL_EXPORTER_OTLP_LOGS_ENDPOINT as-is, or <endpoint>/v1/logs) is
        # for the test to assert.
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding", "") == "gzip":
                body = gzip.decompress(body)
            req = logs_service_pb2.ExportLogsServiceRequest()
            ctype = self.headers.get("Content-Type", "")
            try:
                if ctype.startswith("application/json"):
                    json_format.Parse(body, req)
                else:
                    req.ParseFromString(body)
            except Exception as e:  # a decode failure is the test's finding
                self.send_error(400, str(e))
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            write_records(out, "http", self.path, headers, req, http_peer(self.connection))
            rsp = response(req, reject_all).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(rsp)))
            self.end_headers()
            self.wfile.write(rsp)

    return Handler


def http_peer(conn):
    if not isinstance(conn, ssl.SSLSocket):
        return {"tls": False, "client_cn": None}
    cert = conn.getpeercert() or {}
    cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), None)
    return {"tls": True, "client_cn": cn}


def grpc_peer(context):
    auth = context.auth_context()
    tls = auth.get("transport_security_type") == [b"ssl"]
    cn = auth.get("x509_common_name")
    return {"tls": tls, "client_cn": cn[0].decode() if cn else None}


class H2Observer:
    """Reads the client's side of one HTTP/2 connection as it passes."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self, out):
        import hpack
        self.out = out
        self.buf = b""
        self.preface = False
        self.decoder = hpack.Decoder()
        self.decoder.max_allowed_table_size = 1 << 20
        self.blocks = {}
        self.streams = {}

    def feed(self, data):
        from hyperframe.frame import Frame
        self.buf += data
        if not self.preface:
            if len(self.buf) < len(self.PREFACE):
                return
            if not self.buf.startswith(self.PREFACE):
                raise ValueError("not an HTTP/2 connection preface")
            self.buf = self.buf[len(self.PREFACE):]
            self.preface = True
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + length:
                return
            frame, _ = Frame.parse_frame_header(memoryview(self.buf[:9]))
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            self.on_frame(frame)

    def on_frame(self, f):
        from hyperframe.frame import ContinuationFrame, DataFrame, HeadersFrame
        if isinstance(f, (HeadersFrame, ContinuationFrame)):
            self.blocks[f.stream_id] = self.blocks.get(f.stream_id, b"") + bytes(f.data)
            if "END_HEADERS" in f.flags and f.stream_id not in self.streams:
                headers = dict(self.decoder.decode(self.blocks.pop(f.stream_id)))
                self.streams[f.stream_id] = {"path": headers.get(":path"), "headers": headers}
            else:
                # Trailers, or a block still to be continued: decoded in
                # order all the same, to keep the HPACK table in step.
                if "END_HEADERS" in f.flags:
                    self.decoder.decode(self.blocks.pop(f.stream_id))
        elif isinstance(f, DataFrame) and f.data:
            s = self.streams.get(f.stream_id)
            if s is not None and "compressed" not in s:
                s["compressed"] = f.data[0] == 1
                with _lock:
                    with open(self.out, "a", encoding="utf-8") as w:
                        w.write(json.dumps(s, sort_keys=True) + "\n")


def pump(src, dst, observer):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            if observer is not None:
                observer.feed(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay(listener, host, port, wire_out):
    """Accepts on `listener` and relays each connection to host:port, observing the client's side."""
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection((host, port))
        threading.Thread(target=pump, args=(upstream, client, None), daemon=True).start()
        threading.Thread(target=pump, args=(client, upstream, H2Observer(wire_out)), daemon=True).start()


class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out, reject_all):
        self.out = out
        self.reject_all = reject_all

    def Export(self, request, context):
        headers = {k.lower(): v for k, v in context.invocation_metadata()}
        write_records(self.out, "grpc", "", headers, request, grpc_peer(context))
        return response(request, self.reject_all)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="file to append JSON lines to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--reject-all", action="store_true",
                   help="answer with partial_success rejecting every record")
    p.add_argument("--tls-cert", help="serve TLS with this PEM certificate chain")
    p.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    p.add_argument("--client-ca", help="require client certificates issued by this PEM CA")
    p.add_argument("--grpc-wire-out", help="relay gRPC and log its request frames here")
    args = p.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key):
        p.error("--tls-cert and --tls-key go together")
    if args.client_ca and not args.tls_cert:
        p.error("--client-ca needs --tls-cert")
    if args.grpc_wire_out and args.tls_cert:
        p.error("--grpc-wire-out reads plaintext only")

    httpd = ThreadingHTTPServer((args.host, args.http_port), http_handler(args.out, args.reject_all))
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.client_ca)
        # The handshake runs in accept(): one that fails (no client
        # certificate, a client that refuses ours) drops that connection only.
        httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(args.out, args.reject_all), server)
    if args.tls_cert:
        def read(path):
            with open(path, "rb") as f:
                return f.read()
        creds = grpc.ssl_server_credentials(
            [(read(args.tls_key), read(args.tls_cert))],
            root_certificates=read(args.client_ca) if args.client_ca else None,
            require_client_auth=bool(args.client_ca),
        )
        grpc_port = server.add_secure_port(f"{args.host}:{args.grpc_port}", creds)
    elif args.grpc_wire_out:
        inner = server.add_insecure_port(f"{args.host}:0")
        listener = socket.create_server((args.host, args.grpc_port))
        grpc_port = listener.getsockname()[1]
        threading.Thread(target=relay, args=(listener, args.host, inner, args.grpc_wire_out),
                         daemon=True).start()
    else:
        grpc_port = server.add_insecure_port(f"{args.host}:{args.grpc_port}")
    server.start()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(json.dumps({"http_port": httpd.server_address[1], "grpc_port": grpc_port}), flush=True)
    stop.wait()
    server.stop(0)
    httpd.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
