//! `aws_auth` through the real binary, with moto as the verifier: moto's server runs on the
//! fake internet with IAM authentication on (`INITIAL_NO_AUTH_ACTION_COUNT`), so it checks
//! every SigV4 signature against the access keys it issued, as AWS does. boto3 in the
//! workload signs with AWS's documented placeholder keys, which moto refuses; through the
//! proxy the same calls succeed, and STS names the IAM user of the proxy's real key, from
//! static secret sources and from the AWS default chain (`workload_identity`).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use iron_proxy_tests::netns::NetProcess;
use iron_proxy_tests::*;
use serde_json::{json, Value};

use super::assert_no_leak;

const PLACEHOLDER_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const PLACEHOLDER_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// Starts moto on a fresh host of `net` (port 80, IAM authentication after three calls),
/// makes an IAM user with an allow-all policy and returns its access key.
fn moto_with_iam(net: &FakeInternet) -> (NetProcess, SocketAddr, String, String) {
    moto_with_iam_on(net, false)
}

/// Like [`moto_with_iam`]; with `tls`, on port 443 with a certificate for `aws.test` from
/// the net's CA (which the proxy trusts).
pub(super) fn moto_with_iam_on(
    net: &FakeInternet,
    tls: bool,
) -> (NetProcess, SocketAddr, String, String) {
    let host = net.add_host();
    let port = if tls { 443 } else { 80 };
    let addr = SocketAddr::new(IpAddr::V4(host.v4), port);
    net.dns().set("aws.test", &[IpAddr::V4(host.v4)]);
    let bin = paths::venv_python().with_file_name("moto_server");
    let mut cmd = net.command(&bin);
    cmd.args(["-H", &host.v4.to_string(), "-p", &port.to_string()])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
        // Path-style S3 on this name (moto would take `aws` for a bucket otherwise).
        .env(
            "MOTO_S3_CUSTOM_ENDPOINTS",
            if tls {
                "https://aws.test"
            } else {
                "http://aws.test"
            },
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if tls {
        let dir = net.dir().join("moto-tls");
        std::fs::create_dir_all(&dir).expect("moto's certificate directory");
        let leaf = net.ca().issue(&["aws.test".to_string()], &dir, "moto");
        cmd.arg("-c").arg(&leaf.cert).arg("-k").arg(&leaf.key);
    }
    let moto = net.spawn("moto_server", &mut cmd);
    wait_until(Duration::from_secs(30), "moto_server to listen", || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
    });
    // The three unauthenticated calls: user, access key, policy.
    let script = "import boto3, json, sys\n\
        iam = boto3.client('iam', endpoint_url=sys.argv[1], region_name='us-east-1', verify=False,\n\
                           aws_access_key_id='bootstrap', aws_secret_access_key='bootstrap')\n\
        iam.create_user(UserName='iron-e2e')\n\
        k = iam.create_access_key(UserName='iron-e2e')['AccessKey']\n\
        policy = {'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', 'Action': '*', 'Resource': '*'}]}\n\
        iam.put_user_policy(UserName='iron-e2e', PolicyName='all', PolicyDocument=json.dumps(policy))\n\
        print(json.dumps([k['AccessKeyId'], k['SecretAccessKey']]))";
    let scheme = if tls { "https" } else { "http" };
    let out = python(script, [format!("{scheme}://{addr}")]);
    out.assert_ok();
    let keys = out.json();
    (
        moto,
        addr,
        keys[0].as_str().expect("key id").to_string(),
        keys[1].as_str().expect("secret").to_string(),
    )
}

/// Runs boto3 `code` with placeholder keys against http://aws.test, through `proxy` when
/// given (`sts`, `s3` and `sts_eu` are clients); the last stdout line is JSON.
fn workload(proxy: Option<SocketAddr>, moto: SocketAddr, code: &str) -> Value {
    let script = format!(
        "import boto3, json, sys\n\
         from botocore.config import Config\n\
         proxy, moto = sys.argv[1], sys.argv[2]\n\
         cfg = Config(proxies={{'http': proxy}} if proxy else {{}}, s3={{'addressing_style': 'path'}},\n\
                      retries={{'max_attempts': 1}})\n\
         endpoint = 'http://aws.test' if proxy else moto\n\
         kw = dict(endpoint_url=endpoint, aws_access_key_id='{PLACEHOLDER_KEY}',\n\
                   aws_secret_access_key='{PLACEHOLDER_SECRET}', config=cfg)\n\
         sts = boto3.client('sts', region_name='us-east-1', **kw)\n\
         sts_eu = boto3.client('sts', region_name='eu-west-1', **kw)\n\
         s3 = boto3.client('s3', region_name='us-east-1', **kw)\n\
         def attempt(f):\n\
         \x20   try:\n\
         \x20       return {{'ok': f()}}\n\
         \x20   except Exception as e:\n\
         \x20       return {{'error': str(e)}}\n\
         {code}\n"
    );
    let proxy = proxy.map(|p| format!("http://{p}")).unwrap_or_default();
    let out = python(&script, [proxy, format!("http://{moto}")]);
    out.assert_ok();
    out.json()
}

#[test]
fn aws_auth_re_signs_what_moto_verifies() {
    require_root!();
    let net = FakeInternet::new();
    let (_moto, moto_addr, key_id, secret) = moto_with_iam(&net);

    // moto checks signatures: the workload's placeholder keys alone are refused.
    let direct = workload(
        None,
        moto_addr,
        "print(json.dumps(attempt(lambda: sts.get_caller_identity()['Arn'])))",
    );
    assert!(
        direct["error"]
            .as_str()
            .unwrap_or("")
            .contains("InvalidClientTokenId"),
        "moto refuses the placeholder: {direct}"
    );

    let config = r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: allowlist
    config:
      domains: ["aws.test"]
  - name: aws_auth
    config:
      access_key_id: {type: env, var: REAL_AWS_KEY_ID}
      secret_access_key: {type: env, var: REAL_AWS_SECRET}
      allowed_regions: ["us-east-1"]
      allowed_services: ["sts", "s3"]
      rules:
        - host: "aws.test"
log:
  level: "debug"
"#;
    let px = Proxy::with(config)
        .resolver(&net)
        .env("REAL_AWS_KEY_ID", &key_id)
        .env("REAL_AWS_SECRET", &secret)
        .start();
    let via = Some(px.tunnel_addr());

    // STS (a form POST: the body is hashed) answers with the user of the real key.
    let r = workload(
        via,
        moto_addr,
        "print(json.dumps(attempt(lambda: sts.get_caller_identity()['Arn'])))",
    );
    assert_eq!(
        r,
        json!({"ok": "arn:aws:iam::123456789012:user/iron-e2e"}),
        "{r}"
    );
    let rec = px.wait_for_audit(|a| a.host() == Some("aws.test") && a.is_allowed());
    assert_eq!(
        rec.annotation("aws_auth", "service"),
        Some(&json!("sts")),
        "{rec}"
    );
    assert_eq!(
        rec.annotation("aws_auth", "region"),
        Some(&json!("us-east-1")),
        "{rec}"
    );
    assert_eq!(
        rec.annotation("aws_auth", "injected"),
        Some(&json!([
            "header:Authorization",
            "header:X-Amz-Date",
            "header:X-Amz-Content-Sha256"
        ])),
        "{rec}"
    );

    // S3: its own signing rules (single URI encoding), a body up and down. (A key that needs
    // escaping is left out: moto 5 refuses even boto3's own signature for one.)
    let r = workload(
        via,
        moto_addr,
        "def s3_round_trip():\n\
         \x20   s3.create_bucket(Bucket='iron-e2e')\n\
         \x20   s3.put_object(Bucket='iron-e2e', Key='dir/object-1.txt', Body=b'signed body')\n\
         \x20   return s3.get_object(Bucket='iron-e2e', Key='dir/object-1.txt')['Body'].read().decode()\n\
         print(json.dumps(attempt(s3_round_trip)))",
    );
    assert_eq!(r, json!({"ok": "signed body"}), "{r}");

    // Scope gating: another region is refused before any credential is used.
    let r = workload(
        via,
        moto_addr,
        "print(json.dumps(attempt(lambda: sts_eu.get_caller_identity()['Arn'])))",
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not sign for region eu-west-1"),
        "{r}"
    );
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("region_not_allowed"));
    assert_eq!(rec.rejected_by(), Some("aws_auth"), "{rec}");
    assert_eq!(
        rec.annotation("aws_auth", "region"),
        Some(&json!("eu-west-1")),
        "{rec}"
    );

    // An unsigned request: missing_sigv4.
    let r = Curl::get("http://aws.test/").through_connect(&px).run();
    assert_eq!(r.status, 400, "{r}");
    let rec = px.wait_for_audit(|a| a.str("reason") == Some("missing_sigv4"));
    assert_eq!(rec.rejected_by(), Some("aws_auth"), "{rec}");

    assert_no_leak(&px, &[&secret]);
    drop(px);

    // credentials_provider: workload_identity, the AWS default chain. Its first source, the
    // environment, holds the real key here; AWS_REGION and AWS_EC2_METADATA_DISABLED keep the
    // chain from asking instance metadata (no traffic beyond the test's own addresses).
    let config = r#"
proxy:
  tunnel_listen: auto
transforms:
  - name: aws_auth
    config:
      credentials_provider: {type: workload_identity}
      rules:
        - host: "aws.test"
"#;
    let px = Proxy::with(config)
        .resolver(&net)
        .env("AWS_ACCESS_KEY_ID", &key_id)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .start();
    let r = workload(
        Some(px.tunnel_addr()),
        moto_addr,
        "print(json.dumps(attempt(lambda: sts.get_caller_identity()['Arn'])))",
    );
    assert_eq!(
        r,
        json!({"ok": "arn:aws:iam::123456789012:user/iron-e2e"}),
        "{r}"
    );
    assert_no_leak(&px, &[&secret]);
}
