//! `aws_auth` and S3's streaming uploads (aws-chunked bodies) through the real binary, with
//! moto over HTTPS as the store: boto3's default `put_object` over HTTPS
//! (`STREAMING-UNSIGNED-PAYLOAD-TRAILER` with a CRC32 trailer), a signed-chunk upload
//! (`STREAMING-AWS4-HMAC-SHA256-PAYLOAD`, built as the SDKs do with the placeholder key),
//! both of several MiB: the object moto stores is byte for byte what the workload sent (no
//! chunk framing in it). Malformed framing fails the request (`aws_chunked_malformed`) and
//! stores nothing; SigV4a streaming is refused by name; an expired pre-signed URL is refused
//! (403) instead of being renewed by re-signing.

use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::assert_no_leak;
use super::aws_auth::moto_with_iam_on;

/// The workload: boto3 and requests with AWS's placeholder keys, through the tunnel
/// (`argv[1]`), trusting the proxy's CA (`argv[2]`). Prints one JSON line.
const WORKLOAD: &str = r#"
import boto3, datetime, hashlib, hmac, json, os, sys, requests
from botocore.awsrequest import AWSRequest
from botocore.auth import S3SigV4Auth
from botocore.config import Config
from botocore.credentials import Credentials

tunnel, ca = sys.argv[1], sys.argv[2]
PK, PS = 'AKIAIOSFODNN7EXAMPLE', 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'
proxies = {'https': tunnel}
cfg = Config(proxies=proxies, s3={'addressing_style': 'path'}, retries={'max_attempts': 1})
s3 = boto3.client('s3', endpoint_url='https://aws.test', region_name='us-east-1',
                  aws_access_key_id=PK, aws_secret_access_key=PS, config=cfg, verify=ca)
out = {}

def text(v):
    return v.decode() if isinstance(v, bytes) else v

# 1. boto3's default put_object over HTTPS: an unsigned aws-chunked body with a CRC trailer.
sent = []
s3.meta.events.register('before-send.s3.PutObject',
                        lambda request, **kw: sent.append({k.lower(): text(v) for k, v in request.headers.items()}))
s3.create_bucket(Bucket='stream')
default = os.urandom(5 * 1024 * 1024 + 123)
s3.put_object(Bucket='stream', Key='default.bin', Body=default)
out['default'] = {
    'payload': sent[-1].get('x-amz-content-sha256'),
    'encoding': sent[-1].get('content-encoding'),
    'trailer': sent[-1].get('x-amz-trailer'),
    'sha256': hashlib.sha256(default).hexdigest(),
}

# 2. A signed-chunk upload, as the SDKs build one (64 KiB chunks, each signature chained from
# the previous one, the first from the headers' seed signature), with the placeholder key.
def hm(k, m):
    return hmac.new(k, m.encode(), hashlib.sha256).digest()

def signed_upload(key, data, payload='STREAMING-AWS4-HMAC-SHA256-PAYLOAD', corrupt=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    amzdate, d = now.strftime('%Y%m%dT%H%M%SZ'), now.strftime('%Y%m%d')
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)] + [b'']
    enc = lambda n: len('%x' % n) + len(';chunk-signature=') + 64 + 2 + n + 2
    url = 'https://aws.test/stream/' + key
    headers = {'x-amz-content-sha256': payload, 'Content-Encoding': 'aws-chunked',
               'x-amz-decoded-content-length': str(len(data)),
               'Content-Length': str(sum(enc(len(c)) for c in chunks)), 'X-Amz-Date': amzdate}
    r = AWSRequest(method='PUT', url=url, headers=headers)
    a = S3SigV4Auth(Credentials(PK, PS), 's3', 'us-east-1')
    a._modify_request_before_signing = lambda req: None
    r.context['timestamp'] = amzdate
    seed = a.signature(a.string_to_sign(r, a.canonical_request(r)), r)
    r.headers['Authorization'] = (f'AWS4-HMAC-SHA256 Credential={PK}/{d}/us-east-1/s3/aws4_request, '
                                  f'SignedHeaders={a.signed_headers(a.headers_to_sign(r))}, Signature={seed}')
    key = hm(hm(hm(hm(('AWS4' + PS).encode(), d), 'us-east-1'), 's3'), 'aws4_request')
    prev, body, scope = seed, b'', f'{d}/us-east-1/s3/aws4_request'
    for i, c in enumerate(chunks):
        sts = '\n'.join(['AWS4-HMAC-SHA256-PAYLOAD', amzdate, scope, prev,
                         hashlib.sha256(b'').hexdigest(), hashlib.sha256(c).hexdigest()])
        prev = hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()
        sep = ';chunk-signaturX=' if corrupt and i == 2 else ';chunk-signature='
        body += ('%x%s%s\r\n' % (len(c), sep, prev)).encode() + c + b'\r\n'
    assert len(body) == int(headers['Content-Length'])
    try:
        rsp = requests.put(url, data=body, headers=dict(r.headers), proxies=proxies, verify=ca)
        return {'status': rsp.status_code, 'body': rsp.text[:300]}
    except Exception as e:
        return {'error': str(e)[:300]}

signed = os.urandom(3 * 1024 * 1024 + 7)
out['signed'] = signed_upload('signed.bin', signed)
out['signed']['sha256'] = hashlib.sha256(signed).hexdigest()
out['malformed'] = signed_upload('malformed.bin', os.urandom(300 * 1024), corrupt=True)
out['ecdsa'] = signed_upload('ecdsa.bin', b'x' * 10, payload='STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD')

# 3. Pre-signed URLs (SigV4): a live one is served; one whose X-Amz-Date + X-Amz-Expires has
# passed is refused (the workload would have got 403 from AWS).
s3 = boto3.client('s3', endpoint_url='https://aws.test', region_name='us-east-1',
                  aws_access_key_id=PK, aws_secret_access_key=PS, verify=ca,
                  config=cfg.merge(Config(signature_version='s3v4')))
live = s3.generate_presigned_url('get_object', Params={'Bucket': 'stream', 'Key': 'default.bin'}, ExpiresIn=300)
rsp = requests.get(live, proxies=proxies, verify=ca)
out['presigned'] = {'status': rsp.status_code, 'sha256': hashlib.sha256(rsp.content).hexdigest()}
old = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)).strftime('%Y%m%dT%H%M%SZ')
stale = s3.generate_presigned_url('get_object', Params={'Bucket': 'stream', 'Key': 'default.bin'}, ExpiresIn=60)
stale = '&'.join('X-Amz-Date=' + old if p.startswith('X-Amz-Date=') else p for p in stale.split('&'))
rsp = requests.get(stale, proxies=proxies, verify=ca)
out['expired'] = {'status': rsp.status_code, 'body': rsp.text[:300]}
print(json.dumps(out))
"#;

/// What moto stores, read directly with the real key: `{key: sha256 or null}`.
const STORED: &str = r#"
import boto3, hashlib, json, sys, urllib3
urllib3.disable_warnings()
s3 = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', verify=False,
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3])
out = {}
for key in ['default.bin', 'signed.bin', 'malformed.bin', 'ecdsa.bin']:
    try:
        out[key] = hashlib.sha256(s3.get_object(Bucket='stream', Key=key)['Body'].read()).hexdigest()
    except s3.exceptions.NoSuchKey:
        out[key] = None
print(json.dumps(out))
"#;

const CONFIG: &str = r#"
proxy:
  tunnel_listen: auto
  max_request_body_bytes: 1048576
transforms:
  - name: allowlist
    config:
      domains: ["aws.test"]
  - name: aws_auth
    config:
      access_key_id: {type: env, var: REAL_AWS_KEY_ID}
      secret_access_key: {type: env, var: REAL_AWS_SECRET}
      allowed_services: ["s3"]
      rules:
        - host: "aws.test"
"#;

#[test]
fn aws_auth_streams_aws_chunked_uploads_and_moto_stores_the_exact_object() {
    require_root!();
    let net = FakeInternet::new();
    let (_moto, moto_addr, key_id, secret) = moto_with_iam_on(&net, true);
    // Bodies are larger than max_request_body_bytes: a streaming upload is never buffered.
    let px = Proxy::with(CONFIG)
        .resolver(&net)
        .env("REAL_AWS_KEY_ID", &key_id)
        .env("REAL_AWS_SECRET", &secret)
        .start();

    let run = python(
        WORKLOAD,
        [format!("http://{}", px.tunnel_addr()), px.ca().to_string()],
    );
    run.assert_ok();
    for leaked in [&key_id, &secret] {
        assert!(
            !run.stdout.contains(leaked.as_str()) && !run.stderr.contains(leaked.as_str()),
            "the workload saw the real key:\n{run}"
        );
    }
    let r = run.json();

    // boto3 really sent its default streaming upload (the case under test).
    assert_eq!(
        (
            &r["default"]["payload"],
            &r["default"]["encoding"],
            &r["default"]["trailer"]
        ),
        (
            &json!("STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
            &json!("aws-chunked"),
            &json!("x-amz-checksum-crc32")
        ),
        "{r}"
    );
    assert_eq!(r["signed"]["status"], json!(200), "{r}");
    assert_eq!(r["presigned"]["status"], json!(200), "{r}");
    assert_eq!(r["presigned"]["sha256"], r["default"]["sha256"], "{r}");

    // What moto stored is exactly what the workload uploaded, framing and all stripped.
    let stored = python(
        STORED,
        [
            format!("https://{moto_addr}"),
            key_id.clone(),
            secret.clone(),
        ],
    );
    stored.assert_ok();
    let stored = stored.json();
    assert_eq!(
        stored["default.bin"], r["default"]["sha256"],
        "{stored} {r}"
    );
    assert_eq!(stored["signed.bin"], r["signed"]["sha256"], "{stored} {r}");
    assert_eq!(stored["malformed.bin"], Value::Null, "{stored}");
    assert_eq!(stored["ecdsa.bin"], Value::Null, "{stored}");

    let rec = px.wait_for_audit(|a| {
        a.path()
            .is_some_and(|p| p.starts_with("/stream/default.bin"))
            && a.method() == Some("PUT")
    });
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(
        rec.annotation("aws_auth", "payload"),
        Some(&json!("STREAMING-UNSIGNED-PAYLOAD-TRAILER")),
        "{rec}"
    );
    let rec = px.wait_for_audit(|a| {
        a.path()
            .is_some_and(|p| p.starts_with("/stream/signed.bin"))
    });
    assert!(rec.is_allowed(), "{rec}");
    assert_eq!(
        rec.annotation("aws_auth", "payload"),
        Some(&json!("STREAMING-AWS4-HMAC-SHA256-PAYLOAD")),
        "{rec}"
    );

    // Malformed framing: the request fails, audited as aws_auth's refusal.
    let rec = px.wait_for_audit(|a| {
        a.path()
            .is_some_and(|p| p.starts_with("/stream/malformed.bin"))
    });
    assert_eq!(rec.str("reason"), Some("aws_chunked_malformed"), "{rec}");
    assert_eq!(rec.rejected_by(), Some("aws_auth"), "{rec}");
    assert!(
        rec.str("error").unwrap_or("").contains("chunk header"),
        "{rec}"
    );
    assert!(
        r["malformed"]["status"] == json!(400) || r["malformed"].get("error").is_some(),
        "{r}"
    );

    // SigV4a streaming: refused by name.
    assert_eq!(r["ecdsa"]["status"], json!(400), "{r}");
    assert!(
        r["ecdsa"]["body"]
            .as_str()
            .unwrap_or("")
            .contains("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD"),
        "{r}"
    );
    let rec = px.wait_for_audit(|a| a.path().is_some_and(|p| p.starts_with("/stream/ecdsa.bin")));
    assert_eq!(
        rec.str("reason"),
        Some("unsupported_streaming_payload"),
        "{rec}"
    );

    // The expired pre-signed URL.
    assert_eq!(r["expired"]["status"], json!(403), "{r}");
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("presigned_url_expired"));
    assert_eq!(rec.rejected_by(), Some("aws_auth"), "{rec}");

    assert_no_leak(&px, &[&secret]);
}
