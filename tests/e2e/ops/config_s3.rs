//! `-config s3://bucket/key` against moto's S3 on loopback (objects written with boto3): the
//! proxy serves the object's policy, `POST /v1/reload` fetches the object again, `validate`
//! names `s3://bucket/key:LINE:COL`, and a missing object, bucket or region stops startup with
//! a message naming what is missing.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use iron_proxy_tests::*;

use super::{policy, policy_file, reload, status_of, API_KEY};

const BUCKET: &str = "iron-e2e-config";

/// moto with [`BUCKET`] created.
fn moto_with_bucket() -> Moto {
    let moto = Moto::start();
    moto.boto(&format!("s3.create_bucket(Bucket='{BUCKET}')"), &[]);
    moto
}

/// Uploads the file at `path` as `key` in [`BUCKET`]; returns `s3://BUCKET/key`.
fn upload(moto: &Moto, path: &std::path::Path, key: &str) -> String {
    let path = path.to_str().expect("UTF-8 temp path");
    moto.boto(
        &format!("s3.upload_file(sys.argv[2], '{BUCKET}', sys.argv[3])"),
        &[path, key],
    );
    format!("s3://{BUCKET}/{key}")
}

/// Runs `iron-proxy ARGS` with moto's AWS environment, minus `remove`: exit code and stderr.
fn run(moto: &Moto, args: &[&str], remove: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(paths::iron_proxy_bin());
    cmd.args(args)
        .env_remove("AWS_DEFAULT_REGION")
        .env_remove("AWS_ENDPOINT_URL_S3")
        .env_remove("IRON_MANAGEMENT_LISTEN");
    for (k, v) in moto.env() {
        cmd.env(k, v);
    }
    for k in remove {
        cmd.env_remove(k);
    }
    let out = process::run_with_timeout("iron-proxy", &mut cmd, Duration::from_secs(60));
    (
        out.exit,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_proxy_runs_from_an_s3_object_and_reload_fetches_it_again() {
    require_root!();
    let moto = Arc::new(moto_with_bucket());
    let net = FakeInternet::new();
    let _a = Upstream::https("httpbin.test").start(&net);
    let b = Upstream::https("other.test").start(&net);
    let uploader = moto.clone();
    let mut p = Proxy::with(policy(&["httpbin.test"]))
        .resolver(&net)
        .env("IRON_E2E_MGMT_KEY", API_KEY)
        .config_arg(move |file| upload(&uploader, file, "iron/proxy.yaml"));
    for (k, v) in moto.env() {
        p = p.env(k, &v);
    }
    let mut px = p.start();

    assert_eq!(status_of(&px, "httpbin.test"), 200);
    assert_eq!(status_of(&px, "other.test"), 403);
    b.assert_untouched();

    // A changed object (the local copy is only the upload's source): the reload fetches it.
    px.rewrite_config(policy_file(&["other.test"]));
    upload(&moto, px.config_path(), "iron/proxy.yaml");
    // The local file alone would not do: make it deny everything.
    px.write_config_text("not: [valid");
    let r = reload(&px);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.json()["status"], "reloaded", "{r}");
    assert_eq!(
        status_of(&px, "other.test"),
        200,
        "allowed after the reload"
    );
    assert_eq!(
        status_of(&px, "httpbin.test"),
        403,
        "denied after the reload"
    );

    // The object is gone: the reload fails naming it and S3's code; the policy stays.
    moto.boto(
        &format!("s3.delete_object(Bucket='{BUCKET}', Key='iron/proxy.yaml')"),
        &[],
    );
    let r = reload(&px);
    assert_eq!(r.status, 422, "{r}");
    let body = &r.body;
    assert!(
        body.contains(&format!("s3://{BUCKET}/iron/proxy.yaml: GetObject: 404"))
            && body.contains("NoSuchKey"),
        "{body}"
    );
    assert_eq!(status_of(&px, "other.test"), 200, "the policy stays");
}

#[test]
fn validate_names_the_s3_object_line_and_column() {
    let moto = moto_with_bucket();
    let dir = paths::scratch_dir("config-s3");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "tls:\n  mode: sni-only\nproxy:\n  bogus: 1\n").expect("write");
    let url = upload(&moto, &bad, "team/bad.yaml");
    let (exit, _, stderr) = run(&moto, &["validate", "-config", &url], &[]);
    assert_eq!(exit, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "s3://{BUCKET}/team/bad.yaml:4:3: proxy: unknown field 'bogus'"
        )),
        "{stderr}"
    );

    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "tls:\n  mode: sni-only\n").expect("write");
    let url = upload(&moto, &good, "team/good.yaml");
    let (exit, stdout, stderr) = run(&moto, &["validate", "-config", &url], &[]);
    assert_eq!(exit, 0, "{stderr}");
    assert!(stdout.contains(&format!("{url}: valid")), "{stdout}");
}

#[test]
fn a_missing_object_bucket_or_region_stops_startup_naming_it() {
    let moto = moto_with_bucket();
    let url = format!("s3://{BUCKET}/missing.yaml");
    let (exit, _, stderr) = run(&moto, &["-config", &url], &[]);
    assert_eq!(exit, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{url}: GetObject: 404 Not Found: NoSuchKey")),
        "{stderr}"
    );
    assert!(!stderr.contains(&format!("{url}: {url}")), "{stderr}");
    assert!(stderr.contains("not starting"), "{stderr}");
    assert!(!stderr.contains("Signature="), "no signature: {stderr}");

    let (exit, _, stderr) = run(&moto, &["-config", "s3://no-such-bucket-e2e/p.yaml"], &[]);
    assert_eq!(exit, 1, "{stderr}");
    assert!(stderr.contains("NoSuchBucket"), "{stderr}");

    let (exit, _, stderr) = run(&moto, &["-config", &url], &["AWS_REGION"]);
    assert_eq!(exit, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("{url}: no AWS region: set AWS_REGION")),
        "{stderr}"
    );
    // The object is named once, not once by the loader and again by the fetch.
    assert!(!stderr.contains(&format!("{url}: {url}")), "{stderr}");

    let (exit, _, stderr) = run(&moto, &["-config", "s3://Bad_Bucket/p.yaml"], &[]);
    assert_eq!(exit, 1, "{stderr}");
    assert!(stderr.contains("invalid bucket name"), "{stderr}");
}
