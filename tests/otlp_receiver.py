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

Needs: pip install opentelemetry-proto grpcio protobuf
Stop it with SIGTERM or SIGINT.
"""

import argparse
import base64
import gzip
import json
import signal
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


def write_records(out, transport, path, headers, request):
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
            write_records(out, "http", self.path, headers, req)
            rsp = response(req, reject_all).SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(rsp)))
            self.end_headers()
            self.wfile.write(rsp)

    return Handler


class LogsService(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, out, reject_all):
        self.out = out
        self.reject_all = reject_all

    def Export(self, request, context):
        headers = {k.lower(): v for k, v in context.invocation_metadata()}
        write_records(self.out, "grpc", "", headers, request)
        return response(request, self.reject_all)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="file to append JSON lines to")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--reject-all", action="store_true",
                   help="answer with partial_success rejecting every record")
    args = p.parse_args()

    httpd = ThreadingHTTPServer((args.host, args.http_port), http_handler(args.out, args.reject_all))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsService(args.out, args.reject_all), server)
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
