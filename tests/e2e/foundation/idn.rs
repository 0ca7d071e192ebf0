//! Internationalized names in the allowlist, through the real binary: a domain written as it
//! reads (`bücher.test`) admits the ASCII (IDNA) form every client sends in SNI and Host; a
//! label that mixes scripts (`gіthub.test`, a Cyrillic `і`) admits only its own `xn--` name,
//! never the name it looks like, and `validate` and start-up warn about it at the entry.

use std::process::Command;
use std::time::Duration;

use iron_proxy_tests::*;

use super::{allowed, assert_policy_refusal, audited, NOT_ALLOWLISTED};

const CONFIG: &str = "
transforms:
  - name: allowlist
    config:
      domains: [\"b\u{fc}cher.test\", \"g\u{456}thub.test\"]
";

#[test]
fn a_u_label_domain_admits_its_a_label_and_a_lookalike_is_flagged() {
    require_root!();
    let net = FakeInternet::new();
    let books = Upstream::https("xn--bcher-kva.test").start(&net);
    let real = Upstream::https("github.test").start(&net);
    let px = Proxy::with(CONFIG).resolver(&net).start();

    Curl::get("https://xn--bcher-kva.test/get")
        .via(&px)
        .run()
        .expect_status(200);
    books.wait_for_request(|q| q.path() == "/get" && q.sni() == Some("xn--bcher-kva.test"));
    audited(&px, "xn--bcher-kva.test", "/get", &allowed(200));

    // The lookalike entry does not admit the name it looks like.
    let r = Curl::get("https://github.test/get").via(&px).run();
    assert_policy_refusal(&r);
    audited(&px, "github.test", "/get", &NOT_ALLOWLISTED);
    real.assert_untouched();

    // Start-up logged the finding at the entry.
    px.wait_for_log(|l| {
        l.contains("configuration warning")
            && l.contains("transforms[0].config.domains[1]")
            && l.contains("mixes Cyrillic and Latin")
            && l.contains("U+0456 CYRILLIC SMALL LETTER BYELORUSSIAN-UKRAINIAN I")
            && l.contains("not github.test, which it looks like")
    });

    // `validate` prints it as a warning and passes the file.
    let mut cmd = Command::new(paths::iron_proxy_bin());
    cmd.arg("validate").arg("-config").arg(px.config_path());
    let out = process::run_with_timeout("iron-proxy validate", &mut cmd, Duration::from_secs(60));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.exit, 0, "{text}");
    assert!(
        text.lines().any(|l| l
            .contains("warning: transforms[0].config.domains[1]: label 'g\\u{456}thub' of")
            && l.contains("it matches only xn--")
            && l.ends_with("not github.test, which it looks like")),
        "{text}"
    );
}
