"""A TransformService server for the `grpc` transform's end-to-end tests, on grpcio, with
its stubs generated from proxy/proto/transform/v1/transform.proto by grpcio-tools at startup.

    grpc_transform_server.py ADDR LOG [CA CERT KEY]

With CA/CERT/KEY it serves TLS and requires a client certificate signed by CA (mTLS).
Every call is appended to LOG as a JSON line (what the proxy sent). Behaviour by the
request URL's path:
  /reject          REJECT with status 451, header x-policy: no, body "denied by policy server"
  /reject-default  REJECT without a response
  /rewrite         CONTINUE, modified_request: path /anything/rewritten?via=grpc, headers
                   without x-remove-me and with x-added: yes, body "rewritten body"
  /redirect        CONTINUE, modified_request naming another host (the proxy must refuse)
  /fail            the call fails with PERMISSION_DENIED
  /scrub           response: CONTINUE, body "scrubbed", header x-scrubbed: 1
  /block-response  response: REJECT, status 403, body "response blocked"
  anything else    CONTINUE with annotations
"""

import json
import os
import sys
import tempfile
import threading
from concurrent import futures

import grpc
from grpc_tools import protoc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = tempfile.mkdtemp(prefix="transform-pb-")
rc = protoc.main(["protoc", f"-I{ROOT}/proxy/proto", f"--python_out={OUT}", f"--grpc_python_out={OUT}",
                  "transform/v1/transform.proto"])
if rc != 0:
    sys.exit(f"protoc failed: {rc}")
sys.path.insert(0, OUT)
from transform.v1 import transform_pb2 as pb  # noqa: E402
from transform.v1 import transform_pb2_grpc as pb_grpc  # noqa: E402

ADDR, LOG = sys.argv[1], sys.argv[2]
lock = threading.Lock()


def log(kind, req, response=None):
    entry = {
        "rpc": kind,
        "method": req.request.method,
        "url": req.request.url,
        "host": req.request.host,
        "remote_addr": req.request.remote_addr,
        "headers": {k: list(v.values) for k, v in req.request.headers.items()},
        "body": req.request.body.decode("utf-8", "replace"),
        "sni": req.context.sni,
        "tunnel": req.context.tunnel.target if req.context.HasField("tunnel") else None,
    }
    if response is not None:
        entry["status"] = response.status_code
        entry["response_body"] = response.body.decode("utf-8", "replace")
    with lock, open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


def path(req):
    url = req.request.url
    return url.split("://", 1)[-1].split("/", 1)[-1].split("?")[0]


class Service(pb_grpc.TransformServiceServicer):
    def TransformRequest(self, req, context):
        log("request", req)
        p = "/" + path(req)
        out = pb.TransformRequestResponse(action=pb.TRANSFORM_ACTION_CONTINUE)
        if p.endswith("/reject"):
            out.action = pb.TRANSFORM_ACTION_REJECT
            out.response.status_code = 451
            out.response.headers["x-policy"].values.append("no")
            out.response.body = b"denied by policy server"
        elif p.endswith("/reject-default"):
            out.action = pb.TRANSFORM_ACTION_REJECT
        elif p.endswith("/rewrite"):
            mod = out.modified_request
            mod.url = "/anything/rewritten?via=grpc"
            for k, v in req.request.headers.items():
                if k != "x-remove-me":
                    mod.headers[k].values.extend(v.values)
            mod.headers["x-added"].values.append("yes")
            mod.body = b"rewritten body"
        elif p.endswith("/redirect"):
            out.modified_request.url = "https://evil.test/anything/stolen"
        elif p.endswith("/fail"):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "policy server refuses to answer")
        elif p.endswith("/echo-url"):
            # The request sent back as it came (a common shape for a server that only
            # sometimes rewrites): the url carries whatever earlier transforms put in it.
            mod = out.modified_request
            mod.url = req.request.url
            for k, v in req.request.headers.items():
                mod.headers[k].values.extend(v.values)
            mod.body = req.request.body
        elif p.endswith("/unknown-action"):
            # proto3 enums are open: a newer proto's value reaches an older client as a number.
            out.action = 7
        out.annotations["policy"] = "checked"
        out.annotations["body_bytes"] = str(len(req.request.body))
        return out

    def TransformResponse(self, req, context):
        log("response", req, req.response)
        p = "/" + path(req)
        out = pb.TransformResponseResponse(action=pb.TRANSFORM_ACTION_CONTINUE)
        if p.endswith("/scrub"):
            out.modified_response.body = b"scrubbed"
            for k, v in req.response.headers.items():
                out.modified_response.headers[k].values.extend(v.values)
            out.modified_response.headers["x-scrubbed"].values.append("1")
        elif p.endswith("/block-response"):
            out.action = pb.TRANSFORM_ACTION_REJECT
            out.modified_response.status_code = 403
            out.modified_response.body = b"response blocked"
        out.annotations["upstream_status"] = str(req.response.status_code)
        return out


server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
pb_grpc.add_TransformServiceServicer_to_server(Service(), server)
if len(sys.argv) > 3:
    ca, cert, key = (open(p, "rb").read() for p in sys.argv[3:6])
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca,
                                        require_client_auth=True)
    server.add_secure_port(ADDR, creds)
else:
    server.add_insecure_port(ADDR)
server.start()
print("ready", flush=True)
server.wait_for_termination()
