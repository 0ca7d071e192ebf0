"""An OAuth2 authorization server for the end-to-end suite, built on Authlib.

Authlib does the protocol work: client authentication (client_secret_basic and
client_secret_post), the RFC 6749 client_credentials, password and refresh_token
grants (refresh tokens rotate: each exchange revokes the one it used), and the
RFC 7523 JWT bearer grant (assertion signature, issuer, expiry). This file only
supplies the records those grants look up.

Usage: oauth_server.py HOST PORT STATE_DIR

- POST /oauth/token: the token endpoint.
- GET  /api/<name>: a protected resource; 200 with who the bearer token was
  issued to, 401 without a valid token.
- GET  /computeMetadata/v1/instance/service-accounts/default/token: a stand-in
  for the GCE/GKE metadata server's token path.
- POST /v1/token: a Google STS stand-in (RFC 8693 token exchange, Workload
  Identity Federation): checks the request's fields as Google documents them
  and verifies the subject token: an RS256 JWT from /oidc/token (Authlib's
  JOSE: signature, issuer, audience, expiry), or an AWS-signed GetCallerIdentity
  request (its SigV4 signature recomputed with botocore).
- POST /v1/projects/-/serviceAccounts/<email>:generateAccessToken: an IAM
  Credentials stand-in; needs an STS token with the iam or cloud-platform scope.
- GET  /oidc/token?audience=A: an OIDC token issuer in the style of GitHub
  Actions' (needs "Authorization: bearer gh-request-token"; answers
  {"count", "value"}); `raw=1` answers the JWT alone.
- PUT /latest/api/token and GET /latest/meta-data/...: an EC2 metadata server
  stand-in (IMDSv2 session required): zone us-west-2b, role iron-e2e-role.
- GET  /stats: how many tokens each grant issued.
- POST /misbehave/reflect, /misbehave/huge-expiry, /misbehave/slow: a token
  endpoint that misbehaves as real ones have: one that echoes the refused
  request (form, Authorization and X-Api-Key headers, each form value decoded,
  lower-case percent-encoded, in base64 and cut short, with control characters)
  in its error_description, one whose expires_in is 2^64-1, one that answers after
  20 s. GET /misbehave/hits counts the requests each received.

At start-up it writes STATE_DIR/jwt_key.pem, the RSA private key whose public
half it trusts for the JWT bearer grant's issuer, then prints "ready".
"""

import base64
import json
import os
import re
import sys
import time
import urllib.parse
from collections import Counter

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.jose import JoseError, jwt
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc7523 import JWTBearerGrant
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, request

HOST, PORT, STATE = sys.argv[1], int(sys.argv[2]), sys.argv[3]
# The suite's fake internet speaks plain HTTP to this server.
os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
with open(os.path.join(STATE, "jwt_key.pem"), "wb") as f:
    f.write(
        KEY.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
PUBLIC_PEM = KEY.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
)


class Client(ClientMixin):
    def __init__(self, client_id, secret, grant_types):
        self.client_id, self.secret, self.grant_types = client_id, secret, grant_types

    def get_client_id(self):
        return self.client_id

    def get_default_redirect_uri(self):
        return None

    def get_allowed_scope(self, scope):
        return scope or ""

    def check_redirect_uri(self, redirect_uri):
        return False

    def check_client_secret(self, client_secret):
        return self.secret is not None and client_secret == self.secret

    def check_endpoint_auth_method(self, method, endpoint):
        if self.secret is None:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type):
        return False

    def check_grant_type(self, grant_type):
        return grant_type in self.grant_types


CLIENTS = {
    "cc-client": Client("cc-client", "cc-secret", ["client_credentials"]),
    "pw-client": Client("pw-client", "pw-secret", ["password"]),
    "rt-client": Client("rt-client", "rt-secret", ["refresh_token"]),
    "jwt-issuer": Client("jwt-issuer", None, [JWTBearerGrant.GRANT_TYPE]),
    # A Google-style service account: the JWT issuer is its client_email.
    "gcp-sa@iron-e2e.iam.gserviceaccount.com": Client(
        "gcp-sa@iron-e2e.iam.gserviceaccount.com", None, [JWTBearerGrant.GRANT_TYPE]
    ),
    # A second one (gcp_auth with several entries).
    "gcp-sa2@iron-e2e.iam.gserviceaccount.com": Client(
        "gcp-sa2@iron-e2e.iam.gserviceaccount.com", None, [JWTBearerGrant.GRANT_TYPE]
    ),
}
USERS = {"svc-user": "svc-password"}


class Token(TokenMixin):
    def __init__(self, client_id, user, scope, refresh_token=None):
        self.client_id, self.user, self.scope = client_id, user, scope
        self.refresh_token, self.revoked = refresh_token, False

    def check_client(self, client):
        return client.get_client_id() == self.client_id

    def get_scope(self):
        return self.scope

    def get_expires_in(self):
        return 3600

    def is_expired(self):
        return False

    def is_revoked(self):
        return self.revoked


ACCESS = {}
REFRESH = {
    # The refresh token the proxy is configured with, issued "earlier".
    "rt-initial": Token("rt-client", "svc-user", "read", "rt-initial"),
    # An authorized_user credentials file's refresh token (gcp_auth).
    "rt-gcp-user": Token("rt-client", "svc-user", "", "rt-gcp-user"),
}
ISSUED = Counter()


def save_token(token, req):
    user = req.user if isinstance(req.user, str) else None
    t = Token(req.client.get_client_id(), user, token.get("scope", ""), token.get("refresh_token"))
    ACCESS[token["access_token"]] = (t, req.grant_type, time.time() + token["expires_in"])
    if t.refresh_token:
        REFRESH[t.refresh_token] = t
    ISSUED[req.grant_type] += 1


class PasswordGrant(grants.ResourceOwnerPasswordCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

    def authenticate_user(self, username, password):
        return username if USERS.get(username) == password else None


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class RefreshTokenGrant(grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token):
        t = REFRESH.get(refresh_token)
        return t if t and not t.revoked else None

    def authenticate_user(self, credential):
        return credential.user

    def revoke_old_credential(self, credential):
        credential.revoked = True


class JwtGrant(JWTBearerGrant):
    def resolve_issuer_client(self, issuer):
        return CLIENTS.get(issuer)

    def resolve_client_key(self, client, headers, payload):
        return PUBLIC_PEM

    def authenticate_user(self, subject):
        return subject if subject in USERS else None

    def has_granted_permission(self, client, user):
        return True


app = Flask(__name__)
app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {
    "client_credentials": 3600,
    "password": 3600,
    # Short: each use of the refresh_token entry exchanges (and rotates) again.
    "refresh_token": 5,
    JWTBearerGrant.GRANT_TYPE: 3600,
}
server = AuthorizationServer(app, query_client=CLIENTS.get, save_token=save_token)
server.register_grant(ClientCredentialsGrant)
server.register_grant(PasswordGrant)
server.register_grant(RefreshTokenGrant)
server.register_grant(JwtGrant)


@app.route("/oauth/token", methods=["POST"])
def issue_token():
    return server.create_token_response()


@app.route("/api/<name>")
def api(name):
    auth = request.headers.get("Authorization", "")
    found = ACCESS.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
    if not found or found[2] < time.time():
        return jsonify({"error": "invalid_token"}), 401
    token, grant, _ = found
    return jsonify({"client": token.client_id, "user": token.user, "grant": grant, "api": name})


@app.route("/computeMetadata/v1/instance/service-accounts/default/token")
def metadata_token():
    """A stand-in for the GCE/GKE metadata server's token path (what GKE Workload
    Identity serves): needs its header, answers a token the resource accepts."""
    if request.headers.get("Metadata-Flavor") != "Google":
        return "missing Metadata-Flavor", 403
    token = "md-" + os.urandom(12).hex()
    ACCESS[token] = (Token("metadata-default", None, request.args.get("scopes", "")), "metadata", time.time() + 3600)
    ISSUED["metadata"] += 1
    return jsonify({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})


OIDC_ISSUER = "https://token.actions.test"
STS_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
AWS_TOKEN_TYPE = "urn:ietf:params:aws:token-type:aws4_request"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
SUBJECT_TOKEN_TYPES = {
    "urn:ietf:params:oauth:token-type:jwt",
    "urn:ietf:params:oauth:token-type:id_token",
    AWS_TOKEN_TYPE,
}
# The AWS identities the STS stand-in recognises: access key id -> secret key.
AWS_KEYS = {"AKIAIRONE2EENV": "iron-e2e-env-secret", "ASIAIRONE2EIMDS": "iron-e2e-imds-secret"}
IMDS_TOKEN = "imds-session-" + os.urandom(8).hex()


def verify_aws_subject(token, audience):
    """Checks an aws4_request subject token as Google STS would before replaying it to
    AWS: a signed STS GetCallerIdentity POST whose SigV4 signature botocore (the AWS
    SDK's signer) recomputes identically from the known secret key. Returns (the
    caller's access key id, a summary of the request's shape) or raises ValueError."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = json.loads(urllib.parse.unquote(token))
    headers = {h["key"]: h["value"] for h in req["headers"]}
    url = urllib.parse.urlsplit(req["url"])
    if req["method"] != "POST" or not url.hostname.startswith("sts."):
        raise ValueError("not an STS POST")
    if urllib.parse.parse_qs(url.query).get("Action") != ["GetCallerIdentity"]:
        raise ValueError("not GetCallerIdentity")
    if headers.get("x-goog-cloud-target-resource") != audience:
        raise ValueError("x-goog-cloud-target-resource")
    auth = dict(
        part.strip().split("=", 1)
        for part in headers["Authorization"][len("AWS4-HMAC-SHA256 "):].split(",")
    )
    key_id, date, region, service, _ = auth["Credential"].split("/")
    # AWS checks the credential scope against the endpoint it was sent to.
    if url.hostname != "sts.%s.amazonaws.com" % region or service != "sts":
        raise ValueError("credential scope %s/%s for %s" % (region, service, url.hostname))
    if not headers["x-amz-date"].startswith(date):
        raise ValueError("credential scope date")
    signed = auth["SignedHeaders"].split(";")
    aws_req = AWSRequest(method="POST", url=req["url"], headers={h: headers[h] for h in signed}, data=b"")
    aws_req.context["timestamp"] = headers["x-amz-date"]
    signer = SigV4Auth(Credentials(key_id, AWS_KEYS[key_id], headers.get("x-amz-security-token")), service, region)
    canonical = signer.canonical_request(aws_req)
    expected = signer.signature(signer.string_to_sign(aws_req, canonical), aws_req)
    if expected != auth["Signature"]:
        raise ValueError("signature")
    shape = {"url": req["url"], "method": req["method"], "headers": [h["key"] for h in req["headers"]], "signed": signed}
    return key_id, shape
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
IAM_SCOPE = "https://www.googleapis.com/auth/iam"
# Every STS request as received, for the test to compare clients.
STS_REQUESTS = []


def sts_error(code, description, status=400):
    return jsonify({"error": code, "error_description": description}), status


@app.route("/oidc/token")
def oidc_token():
    if request.headers.get("Authorization", "").lower() != "bearer gh-request-token":
        return jsonify({"message": "bad request token"}), 401
    now = int(time.time())
    claims = {
        "iss": OIDC_ISSUER,
        "sub": "repo:iron/e2e:ref:refs/heads/main",
        "aud": request.args.get("audience", ""),
        "iat": now,
        "exp": now + 300,
    }
    token = jwt.encode({"alg": "RS256", "kid": "oidc-1"}, claims, KEY).decode()
    ISSUED["oidc"] += 1
    if request.args.get("raw"):
        return token
    return jsonify({"count": 1, "value": token})


def verify_jwt_subject(token, audience):
    claims = jwt.decode(
        token,
        PUBLIC_PEM,
        claims_options={
            "iss": {"essential": True, "value": OIDC_ISSUER},
            "aud": {"essential": True, "value": "https:" + audience},
            "exp": {"essential": True},
        },
    )
    claims.validate()
    return claims


@app.route("/latest/api/token", methods=["PUT"])
def imds_session():
    if not request.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
        return "missing ttl", 400
    return IMDS_TOKEN


def imds_checked():
    return request.headers.get("X-aws-ec2-metadata-token") == IMDS_TOKEN


@app.route("/latest/meta-data/placement/availability-zone")
def imds_zone():
    return ("us-west-2b", 200) if imds_checked() else ("", 401)


@app.route("/latest/meta-data/iam/security-credentials/")
@app.route("/latest/meta-data/iam/security-credentials")
def imds_role():
    return ("iron-e2e-role", 200) if imds_checked() else ("", 401)


@app.route("/latest/meta-data/iam/security-credentials/iron-e2e-role")
def imds_role_credentials():
    if not imds_checked():
        return "", 401
    return jsonify({"Code": "Success", "AccessKeyId": "ASIAIRONE2EIMDS", "SecretAccessKey": AWS_KEYS["ASIAIRONE2EIMDS"], "Token": "imds-session-token", "Expiration": "2099-01-01T00:00:00Z"})


@app.route("/v1/token", methods=["POST"])
def sts_token():
    if not request.content_type or not request.content_type.startswith(
        "application/x-www-form-urlencoded"
    ):
        return sts_error("invalid_request", "form body expected")
    f = request.form
    STS_REQUESTS.append({k: f[k] for k in f if k != "subject_token"})
    if request.authorization is not None:
        auth = request.authorization
        STS_REQUESTS[-1]["client_auth"] = "%s %s:%s" % (auth.type, auth.username, auth.password)
    if f.get("grant_type") != STS_GRANT:
        return sts_error("unsupported_grant_type", "grant_type")
    if f.get("requested_token_type") != ACCESS_TOKEN_TYPE:
        return sts_error("invalid_request", "requested_token_type")
    if f.get("subject_token_type") not in SUBJECT_TOKEN_TYPES:
        return sts_error("invalid_request", "subject_token_type")
    audience = f.get("audience", "")
    if not audience.startswith("//iam.googleapis.com/"):
        return sts_error("invalid_target", "audience")
    scope = f.get("scope", "")
    if not scope:
        return sts_error("invalid_scope", "scope")
    if "options" in f:
        try:
            # google-auth percent-encodes the JSON before form-encoding it.
            json.loads(urllib.parse.unquote(f["options"]))["userProject"]
        except (ValueError, KeyError, TypeError):
            return sts_error("invalid_request", "options")
    if f["subject_token_type"] == AWS_TOKEN_TYPE:
        try:
            key_id, shape = verify_aws_subject(f.get("subject_token", ""), audience)
        except (ValueError, KeyError, TypeError) as e:
            return sts_error("invalid_grant", "aws subject token: " + str(e))
        STS_REQUESTS[-1]["aws_request"] = shape
        claims = {"sub": "aws:" + key_id}
    else:
        try:
            claims = verify_jwt_subject(f.get("subject_token", ""), audience)
        except (JoseError, ValueError) as e:
            return sts_error("invalid_grant", "subject token: " + type(e).__name__)
    token = "sts-" + os.urandom(12).hex()
    ACCESS[token] = (Token("federated:" + claims["sub"], None, scope), "token-exchange", time.time() + 3600)
    ISSUED["token-exchange"] += 1
    return jsonify(
        {"access_token": token, "issued_token_type": ACCESS_TOKEN_TYPE, "token_type": "Bearer", "expires_in": 3599}
    )


@app.route("/v1/projects/<project>/serviceAccounts/<path:target>", methods=["POST"])
def generate_access_token(project, target):
    email, _, method = target.partition(":")
    if method != "generateAccessToken" or project != "-":
        return jsonify({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}), 404
    auth = request.headers.get("Authorization", "")
    found = ACCESS.get(auth[len("Bearer "):]) if auth.startswith("Bearer ") else None
    if not found or found[1] != "token-exchange" or found[2] < time.time():
        return jsonify({"error": {"code": 401, "message": "bad token", "status": "UNAUTHENTICATED"}}), 401
    # Google accepts either scope on the caller's token.
    if not {CLOUD_PLATFORM, IAM_SCOPE} & set(found[0].scope.split()):
        return jsonify({"error": {"code": 403, "message": "scope", "status": "PERMISSION_DENIED"}}), 403
    if email.startswith("denied"):
        return jsonify({"error": {"code": 403, "message": "Permission iam.serviceAccounts.getAccessToken denied", "status": "PERMISSION_DENIED"}}), 403
    body = request.get_json(silent=True) or {}
    scopes = body.get("scope")
    if not isinstance(scopes, list) or not scopes:
        return jsonify({"error": {"code": 400, "message": "scope", "status": "INVALID_ARGUMENT"}}), 400
    lifetime = int(str(body.get("lifetime", "3600s")).rstrip("s"))
    token = "ya29.imp-" + os.urandom(12).hex()
    ACCESS[token] = (Token(email, found[0].client_id, " ".join(scopes)), "impersonated", time.time() + lifetime)
    ISSUED["impersonated"] += 1
    expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + lifetime))
    return jsonify({"accessToken": token, "expireTime": expire})


@app.route("/sts_requests")
def sts_requests():
    return jsonify(STS_REQUESTS)


@app.route("/stats")
def stats():
    return jsonify(dict(ISSUED))


MISBEHAVE_HITS = Counter()


@app.route("/misbehave/<mode>", methods=["POST"])
def misbehave(mode):
    MISBEHAVE_HITS[mode] += 1
    if mode == "reflect":
        # Each form value as endpoints have been seen to quote it: decoded,
        # percent-encoded in lower case, in base64, and cut short.
        quoted = []
        for value in request.form.values():
            lower = re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), urllib.parse.quote(value, safe=""))
            quoted += [value, lower, base64.b64encode(value.encode()).decode(), value[:-3]]
        echo = (
            f"form {request.get_data(as_text=True)} auth {request.headers.get('Authorization')} "
            f"key {request.headers.get('X-Api-Key')} values {' '.join(quoted)}"
        )
        return jsonify({"error": "invalid_client", "error_description": echo + "\r\n\x1b[31m"}), 401
    if mode == "huge-expiry":
        # json.dumps writes Python's big int exactly, as a number.
        body = '{"access_token": "huge-expiry-token", "token_type": "Bearer", "expires_in": 18446744073709551615}'
        return app.response_class(body, mimetype="application/json")
    if mode == "unavailable":
        return jsonify({"error": "temporarily_unavailable"}), 503
    if mode == "float-expiry":
        # 5.0 seconds: inside the 10 s margin, so every request mints again.
        body = '{"access_token": "float-expiry-token", "token_type": "Bearer", "expires_in": 5.0}'
        return app.response_class(body, mimetype="application/json")
    if mode == "slow":
        time.sleep(20)
        return jsonify({"access_token": "late-token", "expires_in": 3600})
    return jsonify({"error": "unknown mode"}), 404


@app.route("/misbehave/hits")
def misbehave_hits():
    return jsonify(dict(MISBEHAVE_HITS))


if __name__ == "__main__":
    print("ready", flush=True)
    app.run(host=HOST, port=PORT, threaded=True)
