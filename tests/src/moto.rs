//! `Moto`: moto's AWS server on loopback (Secrets Manager, Parameter Store, S3, ...), driven by
//! boto3 (the real AWS client) and pointed at by the proxy's `AWS_*` environment.
//!
//! The proxy's backend client dials directly (backend traffic is the proxy's own, not subject
//! to `upstream_deny_cidrs`), so a loopback moto is reachable while the workload's traffic
//! still goes to the fake internet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::ports::free_port;
use crate::process::{ChildGuard, Lines};
use crate::{paths, python, wait_until};

/// moto's server on 127.0.0.1, killed by PID on drop.
pub struct Moto {
    addr: SocketAddr,
    child: ChildGuard,
    _stderr: Lines,
}

impl Moto {
    /// Starts the server and waits until it accepts connections.
    pub fn start() -> Self {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let port = free_port(ip, false);
        let python = paths::venv_python();
        let bin = python.with_file_name("moto_server");
        let mut cmd = Command::new(&bin);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = ChildGuard::spawn("moto_server", &mut cmd);
        let stderr = child.child_mut().stderr.take().expect("piped stderr");
        let (lines, _) = Lines::capture(stderr, |_| {});
        let addr = SocketAddr::new(ip, port);
        wait_until(Duration::from_secs(30), "moto_server to listen", || {
            if let Some(status) = child.try_status() {
                panic!(
                    "moto_server exited ({status}):\n{}",
                    lines.snapshot().join("\n")
                );
            }
            TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()
        });
        Moto {
            addr,
            child,
            _stderr: lines,
        }
    }

    /// Stops the server (the backend goes down).
    pub fn stop(&mut self) {
        self.child.stop(Duration::from_secs(2));
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs a boto3 snippet against this server (region `us-east-1`); `sm`, `ssm` and `s3` are
    /// clients, `sys.argv[2..]` are `args`.
    pub fn boto(&self, code: &str, args: &[&str]) {
        let script = format!(
            "import boto3, sys\n\
             kw = dict(endpoint_url=sys.argv[1], region_name='us-east-1',\n\
                       aws_access_key_id='testing', aws_secret_access_key='testing')\n\
             sm = boto3.client('secretsmanager', **kw)\n\
             ssm = boto3.client('ssm', **kw)\n\
             s3 = boto3.client('s3', **kw)\n\
             {code}\n"
        );
        let mut argv = vec![self.url()];
        argv.extend(args.iter().map(|a| a.to_string()));
        python(&script, argv).assert_ok();
    }

    /// The environment that points an AWS client at this server and nowhere else: its
    /// endpoint, test credentials, `us-east-1`, no shared files, no instance metadata.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_CONFIG_FILE", "/nonexistent/iron-e2e-aws-config".into()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/iron-e2e-aws-credentials".into(),
            ),
        ]
    }
}
