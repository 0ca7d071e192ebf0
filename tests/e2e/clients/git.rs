//! git over smart HTTP through the MITM, against `git http-backend`: a clone with a large
//! pack (and a gzip-encoded request: the wants of 60 tags), a fetch, a push large enough to be
//! sent chunked; git holds only a placeholder token and the origin sees the real one, swapped
//! in by `secrets` inside the Basic credential. A push to a repository the allowlist makes
//! read-only, and a clone of one it does not allow, fail in git with the proxy's 403.

use super::*;

const GIT_HOST: &str = "git.test";

const TRANSFORMS: &str = r#"
  - name: allowlist
    config:
      rules:
        - host: "git.test"
          paths: ["/git/repo.git/*"]
        - host: "git.test"
          methods: ["GET"]
          paths: ["/git/readonly.git/info/refs"]
        - host: "git.test"
          methods: ["POST"]
          paths: ["/git/readonly.git/git-upload-pack"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: GIT_TOKEN}
          replace:
            proxy_value: "proxy-git-token"
            match_headers: ["Authorization"]
          rules:
            - host: "git.test"
"#;

/// Size of the blob in the first commit: the clone's pack is at least this big.
const BIG: usize = 6 << 20;
/// Size of the blob pushed: far above `http.postBuffer`, so git sends the pack chunked.
const PUSHED: usize = 1 << 20;

/// Runs git (no proxy, no network) and returns its stdout; for preparing repositories.
fn local_git(dir: &Path, args: &[&str]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir).args(args);
    git_env(&mut cmd, dir);
    String::from_utf8_lossy(&ok(run(&mut cmd)).stdout)
        .trim()
        .to_string()
}

/// A clean git environment: no system or global config, no prompts, a fixed identity.
fn git_env(cmd: &mut Command, home: &Path) {
    cmd.env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "e2e")
        .env("GIT_AUTHOR_EMAIL", "e2e@example.invalid")
        .env("GIT_COMMITTER_NAME", "e2e")
        .env("GIT_COMMITTER_EMAIL", "e2e@example.invalid");
}

/// The origin's bare repositories: `repo.git` with a big first commit and 60 tagged commits
/// after it, `readonly.git` with one small commit. Built with fast-import (one process).
fn seed(origin: &Origin, scratch: &Path) -> String {
    let root = origin.git_root();
    let mut stream = Vec::new();
    let big = noise(BIG, 7);
    stream.extend_from_slice(format!("blob\nmark :1\ndata {}\n", big.len()).as_bytes());
    stream.extend_from_slice(&big);
    stream.extend_from_slice(b"\n");
    let mut parent = None;
    for i in 0..61u32 {
        let mark = 100 + i;
        let msg = format!("commit {i}");
        stream.extend_from_slice(
            format!(
                "commit refs/heads/main\nmark :{mark}\ncommitter e2e <e2e@example.invalid> 1700000000 +0000\ndata {}\n{msg}\n",
                msg.len()
            )
            .as_bytes(),
        );
        if let Some(p) = parent {
            stream.extend_from_slice(format!("from :{p}\n").as_bytes());
        }
        if i == 0 {
            stream.extend_from_slice(b"M 100644 :1 big.bin\n");
        }
        let note = format!("{i}\n");
        stream.extend_from_slice(
            format!("M 100644 inline counter.txt\ndata {}\n{note}\n", note.len()).as_bytes(),
        );
        if i > 0 {
            stream.extend_from_slice(format!("reset refs/tags/v{i}\nfrom :{mark}\n\n").as_bytes());
        }
        parent = Some(mark);
    }
    let stream_path = scratch.join("fast-import");
    write(&stream_path, &stream);
    for repo in ["repo.git", "readonly.git"] {
        local_git(&root, &["init", "-q", "--bare", "-b", "main", repo]);
    }
    let repo = root.join("repo.git");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"git fast-import --quiet < "$0""#)
        .arg(&stream_path)
        .current_dir(&repo);
    git_env(&mut cmd, scratch);
    ok(run(&mut cmd));
    // readonly.git gets the history without the big blob: just the last commit's tree.
    let work = scratch.join("readonly-work");
    std::fs::create_dir_all(&work).expect("work dir");
    local_git(&work, &["init", "-q", "-b", "main"]);
    write(&work.join("README"), b"read only\n");
    local_git(&work, &["add", "README"]);
    local_git(&work, &["commit", "-q", "-m", "readonly"]);
    let dest = root.join("readonly.git");
    local_git(
        &work,
        &["push", "-q", dest.to_str().expect("utf-8"), "main"],
    );
    local_git(&repo, &["rev-parse", "main"])
}

/// A git client of the proxy, reaching it `via`, holding only the placeholder token.
struct Git<'a> {
    px: &'a Px,
    origin: &'a Origin,
    via: Via,
    home: PathBuf,
}

/// git's traces of its last command (`GIT_TRACE`, `GIT_TRACE_PACKET`, `GIT_TRACE_CURL`
/// without data), in its home: shown when a command times out.
const TRACES: [(&str, &str); 3] = [
    ("GIT_TRACE", "trace"),
    ("GIT_TRACE_PACKET", "trace-packet"),
    ("GIT_TRACE_CURL", "trace-curl"),
];

impl<'a> Git<'a> {
    fn new(px: &'a Px, origin: &'a Origin, via: Via, home: &Path) -> Self {
        std::fs::create_dir_all(home).expect("git home");
        Self {
            px,
            origin,
            via,
            home: home.to_path_buf(),
        }
    }

    fn url(repo: &str) -> String {
        format!("https://x-access-token:{PROXY_TOKEN}@{GIT_HOST}/git/{repo}")
    }

    fn cmd(&self, dir: &Path, args: &[&str]) -> Command {
        let mut cmd = self.px.command(self.via, &[GIT_HOST], "git");
        match self.via {
            // git (libcurl) speaks HTTP/2 to the proxy when ALPN offers it...
            Via::Connect => cmd
                .arg("-c")
                .arg(format!("http.proxy={}", self.px.proxy_url())),
            // ...and HTTP/1.1 here, so the chunked upload is HTTP/1.1 chunking end to end.
            Via::HttpsListen => cmd.args(["-c", "http.version=HTTP/1.1"]),
            // No setting at all: the interception takes it (HTTP/2 by ALPN).
            Via::Transparent { .. } => &mut cmd,
        };
        cmd.current_dir(dir).args(args);
        git_env(&mut cmd, &self.home);
        cmd.env("GIT_SSL_CAINFO", self.px.client_ca());
        for (var, file) in TRACES {
            let path = self.home.join(file);
            let _ = std::fs::remove_file(&path);
            cmd.env(var, path);
        }
        cmd.env("GIT_TRACE_CURL_NO_DATA", "1");
        cmd
    }

    /// Runs git ([`CLIENT_TIMEOUT`] at most). A git that hangs fails the test with the state
    /// of its processes (git, remote-https, send-pack, pack-objects: where each waits, their
    /// pipes and sockets), the end of its traces, the proxy's records and the origin's log.
    fn run(&self, dir: &Path, args: &[&str]) -> Finished {
        let mut cmd = self.cmd(dir, args);
        let out = run_with_timeout("git", &mut cmd, Duration::from_secs(CLIENT_TIMEOUT));
        if out.timed_out {
            let traces: String = TRACES
                .iter()
                .map(|(var, file)| {
                    let text = std::fs::read_to_string(self.home.join(file)).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = lines[lines.len().saturating_sub(30)..].join("\n");
                    format!("--- {var} (last 30 lines)\n{tail}\n")
                })
                .collect();
            panic!(
                "git {args:?} timed out after {CLIENT_TIMEOUT} s:\n{}\n{}\
                 its processes then:\n{}\n{traces}\n\
                 the proxy's audit records so far:\n{}\nthe origin's requests so far:\n{}",
                text(&out),
                known_hang(&out.diagnosis),
                out.diagnosis,
                self.px.audit(),
                origin_summary(self.origin)
            );
        }
        out
    }
}

/// A note on a hang of git's own, when the processes' state shows it: `git-remote-https` and
/// `git send-pack` both blocked reading a pipe from the other. libcurl 7.84.0 to 8.4.0 over
/// HTTP/2 may call git's upload callback again after it returned the end of the body (when
/// the last DATA could not leave at once, twice in a row: a flow-control window, a full
/// socket; about 1 push in 50 here under load, the proxy's stream window being 256 KiB); git then
/// reads send-pack's pipe for more of a request send-pack has finished, while send-pack
/// waits for the response (libcurl stopped doing this in 8.5.0; see
/// <https://curl.se/mail/lib-2023-11/0017.html> and git's "remote-curl: avoid hang if curl
/// asks for more data after eof"). The proxy then sees an upload that stops short of its end
/// and answers 408 `client_body_timeout`, which git, blocked on the pipe, never reads. The
/// chunked push therefore goes over HTTP/1.1 with such a libcurl
/// ([`libcurl_reads_past_eof`]).
fn known_hang(diagnosis: &str) -> String {
    let blocked_on_pipe = |name: &str| {
        diagnosis
            .split("--- pid ")
            .any(|p| p.contains(name) && p.contains("wchan anon_pipe_read"))
    };
    if blocked_on_pipe("git-remote-http") && blocked_on_pipe("send-pack") {
        "NOTE: git-remote-https and send-pack both wait on a pipe from the other: the \
         deadlock of git with libcurl 7.84.0-8.4.0 over HTTP/2 (libcurl called git's upload \
         callback again after the end of the body), not the proxy's; see `known_hang`.\n"
            .to_string()
    } else {
        String::new()
    }
}

/// The version of git's libcurl when it is one that may call git's upload callback again
/// after the end of the body (7.84.0 up to 8.5.0, which stopped doing so): Debian 12 ships
/// 7.88.1. git 2.47 names its libcurl in `git version --build-options`; an older git is
/// taken to use the libcurl of the `curl` beside it.
fn libcurl_reads_past_eof() -> Option<String> {
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let build = output("git", &["version", "--build-options"]);
    let version = build
        .lines()
        .find_map(|l| l.strip_prefix("libcurl: "))
        .map(str::to_string)
        .or_else(|| {
            let curl = output("curl", &["--version"]);
            curl.split_whitespace()
                .find_map(|w| w.strip_prefix("libcurl/"))
                .map(str::to_string)
        })?;
    reads_past_eof(&version).then_some(version)
}

/// Whether libcurl `version` (`7.88.1`, `8.5.0-DEV`) is one of 7.84.0 up to 8.5.0.
fn reads_past_eof(version: &str) -> bool {
    let parts: Vec<u32> = version
        .trim()
        .split('.')
        .map_while(|p| p.parse().ok())
        .collect();
    let Some(&major) = parts.first() else {
        return false;
    };
    let numeric = (
        major,
        parts.get(1).copied().unwrap_or(0),
        parts.get(2).copied().unwrap_or(0),
    );
    ((7, 84, 0)..(8, 5, 0)).contains(&numeric)
}

/// The origin's requests so far, as `METHOD path?query [encoding] [framing]` lines, for
/// failure messages.
fn origin_summary(origin: &Origin) -> String {
    origin
        .requests()
        .iter()
        .map(|r| {
            format!(
                "{} {}?{} {} {}\n",
                r["method"], r["path"], r["query"], r["content_encoding"], r["transfer_encoding"]
            )
        })
        .collect()
}

fn clone_fetch_push(via: Via) {
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[GIT_HOST]);
    let scratch = tempfile::tempdir().expect("scratch");
    let head = seed(&origin, scratch.path());
    let px = Px::start_for(&net, via, TRANSFORMS);
    let git = Git::new(&px, &origin, via, &scratch.path().join("home"));
    let work = scratch.path();

    // Clone: a pack of more than BIG bytes; the wants of 60 tags make git gzip its request.
    ok(git.run(work, &["clone", "-q", &Git::url("repo.git"), "a"]));
    let a = work.join("a");
    assert_eq!(local_git(&a, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        std::fs::read(a.join("big.bin")).expect("cloned blob"),
        noise(BIG, 7),
        "the cloned blob is intact"
    );
    assert_eq!(local_git(&a, &["tag"]).lines().count(), 60);
    let requests = origin.requests();
    assert!(
        requests
            .iter()
            .any(|r| r["path"] == "/git/repo.git/git-upload-pack"
                && r["content_encoding"] == "gzip"
                && r["status"] == 200),
        "git sent a gzip-encoded upload-pack request:\n{}",
        origin_summary(&origin)
    );
    // The origin saw the real token only: git holds the placeholder.
    for r in &requests {
        if let Some(auth) = r["authorization"].as_str() {
            let decoded = base64_decode_basic(auth);
            assert_eq!(decoded, format!("x-access-token:{REAL_TOKEN}"), "{r}");
        }
    }
    assert!(
        requests.iter().filter(|r| r["status"] == 200).count() >= 2,
        "{}",
        origin_summary(&origin)
    );

    // A second clone to fetch into later.
    ok(git.run(work, &["clone", "-q", &Git::url("repo.git"), "b"]));

    // Push a commit with a blob far above http.postBuffer: git sends it chunked.
    write(&a.join("pushed.bin"), &noise(PUSHED, 11));
    local_git(&a, &["add", "pushed.bin"]);
    local_git(&a, &["commit", "-q", "-m", "pushed through the proxy"]);
    let pushed = local_git(&a, &["rev-parse", "HEAD"]);
    let mut push = vec!["-c", "http.postBuffer=65536"];
    if via != Via::HttpsListen {
        if let Some(version) = libcurl_reads_past_eof() {
            // Over HTTP/2 this libcurl deadlocks git now and then (see `known_hang`); the
            // pack goes chunked over HTTP/1.1 instead. HTTP/2 uploads of unknown length
            // are covered by clients::uploads (curl from a pipe).
            eprintln!(
                "git's libcurl {version} reads past the end of an upload: push over HTTP/1.1"
            );
            push.extend(["-c", "http.version=HTTP/1.1"]);
        }
    }
    push.extend(["push", "-q", "origin", "main"]);
    ok(git.run(&a, &push));
    assert_eq!(
        local_git(&origin.git_root().join("repo.git"), &["rev-parse", "main"]),
        pushed,
        "the push reached the origin"
    );
    assert!(
        origin
            .requests()
            .iter()
            .any(|r| r["path"] == "/git/repo.git/git-receive-pack"
                && r["transfer_encoding"] == "chunked"
                && r["status"] == 200
                && r["body_len"].as_u64().unwrap_or(0) > PUSHED as u64),
        "git sent the pack chunked:\n{}",
        origin_summary(&origin)
    );

    // Fetch the pushed commit into the second clone.
    let b = work.join("b");
    ok(git.run(&b, &["fetch", "-q", "origin"]));
    assert_eq!(local_git(&b, &["rev-parse", "origin/main"]), pushed);

    // A push to the read-only repository: its refs are readable, receive-pack is refused. The
    // pack (512 KiB: under http.postBuffer, so sent at once rather than after a small probe) is
    // larger than what the proxy reads of a refused body: git is still sending it when the 403
    // comes, and sees the 403 (over HTTP/2 the stream used to be reset under it: "RPC failed;
    // curl 92 Stream error in the HTTP/2 framing layer", then "Everything up-to-date").
    ok(git.run(work, &["clone", "-q", &Git::url("readonly.git"), "ro"]));
    let ro = work.join("ro");
    write(&ro.join("new.bin"), &noise(PUSHED / 2, 13));
    local_git(&ro, &["add", "new.bin"]);
    local_git(&ro, &["commit", "-q", "-m", "refused"]);
    let out = git.run(&ro, &["push", "origin", "main"]);
    assert_ne!(out.exit, 0, "the push was refused:\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("RPC failed; HTTP 403"),
        "git shows the proxy's 403:\n{stderr}"
    );

    // A repository the allowlist does not name at all: git shows the proxy's message.
    let out = git.run(work, &["clone", &Git::url("secret.git"), "secret"]);
    assert_ne!(out.exit, 0, "the clone was refused:\n{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("remote: Blocked by iron-proxy policy") && stderr.contains("403"),
        "git shows the proxy's refusal:\n{stderr}"
    );

    origin.assert_never("/git/readonly.git/git-receive-pack");
    origin.assert_never("/git/secret.git/info/refs");
    assert_audit_matches_origin(
        &px,
        &origin,
        GIT_HOST,
        &[
            ("POST", "/git/readonly.git/git-receive-pack"),
            ("GET", "/git/secret.git/info/refs"),
        ],
    );
    let rec = px.wait_for_audit(|a| {
        a.path() == Some("/git/repo.git/git-receive-pack") && a.status_code() == Some(200)
    });
    assert_eq!(
        rec.pointer("/request_transforms/1/annotations/swapped/0/secret"),
        Some(&Value::from("GIT_TOKEN")),
        "{rec}"
    );
    assert_never_logged(&px, REAL_TOKEN);
}

/// The `user:password` of a Basic credential.
pub(super) fn base64_decode_basic(value: &str) -> String {
    use base64::Engine;
    let b64 = value.strip_prefix("Basic ").unwrap_or(value);
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {value}"));
    String::from_utf8_lossy(&raw).into_owned()
}

#[test]
fn git_clone_fetch_push_through_connect() {
    require_root!();
    clone_fetch_push(Via::Connect);
}

#[test]
fn git_clone_fetch_push_through_https_listen() {
    require_root!();
    clone_fetch_push(Via::HttpsListen);
}

#[test]
fn git_clone_fetch_push_under_transparent_interception() {
    require_root!();
    clone_fetch_push(TRANSPARENT);
}

/// `require: true` on the git host's secret: a request without the placeholder is refused.
const REQUIRE: &str = r#"
  - name: allowlist
    config:
      domains: ["git.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: GIT_TOKEN}
          replace:
            proxy_value: "proxy-git-token"
            match_headers: ["Authorization"]
            require: true
          rules:
            - host: "git.test"
"#;

/// With `require: true`, git must send the placeholder up front (`http.extraHeader`, the way
/// CI checkouts do): its credential flow starts with a request without one, which the proxy
/// refuses with a message git shows. Through CONNECT the tunnel itself carries no request to
/// check: the inner requests are checked (the tunnel used to be refused outright, token or
/// not, so no CONNECT client could reach a host whose secret has `require`).
fn require_token_up_front(via: Via) {
    use base64::Engine;
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[GIT_HOST]);
    let scratch = tempfile::tempdir().expect("scratch");
    let head = seed(&origin, scratch.path());
    let px = Px::start(&net, REQUIRE);
    let git = Git::new(&px, &origin, via, &scratch.path().join("home"));
    let work = scratch.path();

    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{PROXY_TOKEN}"));
    let header = format!("http.extraHeader=Authorization: Basic {basic}");
    let url = format!("https://{GIT_HOST}/git/repo.git");
    ok(git.run(work, &["-c", &header, "clone", "-q", &url, "a"]));
    assert_eq!(local_git(&work.join("a"), &["rev-parse", "HEAD"]), head);
    if via == Via::Connect {
        // SOCKS5 on the same listener, the name resolved by the proxy (the spec's git example).
        let socks = format!("http.proxy=socks5h://{}", px.tunnel_addr());
        ok(git.run(
            work,
            &["-c", &socks, "-c", &header, "clone", "-q", &url, "s"],
        ));
        assert_eq!(local_git(&work.join("s"), &["rev-parse", "HEAD"]), head);
    }
    assert_origin_saw_the_real_token(&origin);
    assert_audit_matches_origin(&px, &origin, GIT_HOST, &[]);

    // Credentials in the URL only: git's first request carries none, and is refused.
    let out = git.run(work, &["clone", &Git::url("repo.git"), "b"]);
    assert_ne!(out.exit, 0, "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "remote: Blocked by iron-proxy policy: requests to git.test must carry the proxy token"
        ),
        "git shows the proxy's refusal:\n{stderr}"
    );
    let rec = px.wait_for_audit(|a| a.action() == Some("reject"));
    assert_eq!(rec.rejected_by(), Some("secrets"), "{rec}");
    assert_eq!(rec.str("reason"), Some("proxy_token_missing"), "{rec}");
    assert_eq!(rec.method(), Some("GET"), "{rec}");
    assert_eq!(rec.path(), Some("/git/repo.git/info/refs"), "{rec}");
    assert_eq!(rec.status_code(), Some(403), "{rec}");
    assert_never_logged(&px, REAL_TOKEN);
}

#[test]
fn git_with_require_through_connect() {
    require_root!();
    require_token_up_front(Via::Connect);
}

#[test]
fn git_with_require_through_https_listen() {
    require_root!();
    require_token_up_front(Via::HttpsListen);
}

/// Inject mode, the stronger isolation the spec recommends: git holds no credential at all,
/// and the proxy adds GitHub-style Basic auth (`base64 "x-access-token:" .Value`) to every
/// request, so there is no 401 round trip either.
#[test]
fn git_with_an_injected_credential_through_connect_and_https_listen() {
    require_root!();
    let net = FakeInternet::new();
    let origin = Origin::start(&net, &[GIT_HOST]);
    let scratch = tempfile::tempdir().expect("scratch");
    let head = seed(&origin, scratch.path());
    let px = Px::start(
        &net,
        r#"
  - name: allowlist
    config:
      domains: ["git.test"]
  - name: secrets
    config:
      secrets:
        - source: {type: env, var: GIT_TOKEN}
          inject:
            header: "Authorization"
            formatter: 'Basic {{ base64 "x-access-token:" .Value }}'
          rules:
            - host: "git.test"
"#,
    );
    let url = format!("https://{GIT_HOST}/git/repo.git");
    for (via, dir) in [(Via::Connect, "c"), (Via::HttpsListen, "h")] {
        let git = Git::new(&px, &origin, via, &scratch.path().join("home"));
        ok(git.run(scratch.path(), &["clone", "-q", &url, dir]));
        assert_eq!(
            local_git(&scratch.path().join(dir), &["rev-parse", "HEAD"]),
            head
        );
    }
    assert_origin_saw_the_real_token(&origin);
    assert_audit_matches_origin(&px, &origin, GIT_HOST, &[]);
    assert_never_logged(&px, REAL_TOKEN);
}

/// Every request the origin answered carried the real token in Basic auth, at the first try
/// (no 401 round trip).
fn assert_origin_saw_the_real_token(origin: &Origin) {
    let requests = origin.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r["status"], 200, "no 401 round trip: {r}");
        let auth = r["authorization"].as_str().unwrap_or_default();
        assert_eq!(
            base64_decode_basic(auth),
            format!("x-access-token:{REAL_TOKEN}"),
            "{r}"
        );
    }
}

/// The libcurl versions whose HTTP/2 uploads can deadlock git: 7.84.0 up to, not including,
/// 8.5.0.
#[test]
fn the_libcurl_versions_that_read_past_the_end_of_an_upload() {
    for (version, yes) in [
        ("7.81.0", false),
        ("7.83.1", false),
        ("7.84.0", true),
        ("7.88.1", true),
        ("8.4.0", true),
        ("8.5.0", false),
        ("8.10.1", false),
        ("7.88.1-DEV", true),
        ("", false),
        ("unknown", false),
    ] {
        assert_eq!(reads_past_eof(version), yes, "{version:?}");
    }
}

/// The note names git's deadlock from the processes' state only when both sides wait on a
/// pipe (the state of a hang seen under load through the transparent listener).
#[test]
fn a_git_hang_of_its_own_is_named() {
    let seen = "--- pid 17392: /usr/local/libexec/git-core/git remote-https origin https://git.test/\n    \
                state/ppid S 1  wchan do_wait  syscall 61\n\
                --- pid 17393: /usr/local/libexec/git-core/git-remote-https origin https://git.test/\n    \
                state/ppid S 17392  wchan anon_pipe_read  syscall 0 0xd\n\
                --- pid 17399: /usr/local/libexec/git-core/git send-pack --stateless-rpc --stdin\n    \
                state/ppid S 17393  wchan anon_pipe_read  syscall 0 0xd\n";
    assert!(known_hang(seen).contains("libcurl 7.84.0-8.4.0"));
    // remote-https waiting on its socket (the proxy, or the network) is not that.
    let on_socket = seen.replacen("wchan anon_pipe_read", "wchan do_sys_poll", 1);
    assert_eq!(known_hang(&on_socket), "");
}
