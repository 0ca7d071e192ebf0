//! hudsucker, a MITM proxy library on hyper and rustls, as a CONNECT proxy for the benchmark:
//! the same role as squid with ssl-bump and mitmproxy there. It mints leaves from the bench's
//! MITM CA (cached), trusts the bench upstream's CA, and sets TCP_NODELAY on both legs (without
//! it, new connections stall 40 ms on delayed ACKs, as the reference table shows).
//!
//! Usage: `bench-hudsucker LISTEN CA_CERT CA_KEY UPSTREAM_CA NAME=IP`, where `NAME=IP` is how
//! the CONNECT target's name resolves (the bench upstream's name and loopback address).

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use anyhow::{bail, Context as _, Result};
use hudsucker::certificate_authority::RcgenAuthority;
use hudsucker::rcgen::{Issuer, KeyPair};
use hudsucker::Proxy;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::aws_lc_rs;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// Resolves the one name the bench serves, and refuses any other.
#[derive(Clone)]
struct Fixed {
    name: Arc<str>,
    ip: IpAddr,
}

impl tower_service::Service<Name> for Fixed {
    type Response = std::iter::Once<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let found = name.as_str().eq_ignore_ascii_case(&self.name);
        let ip = self.ip;
        Box::pin(async move {
            if found {
                Ok(std::iter::once(SocketAddr::new(ip, 0)))
            } else {
                Err(std::io::Error::other(format!(
                    "{} is not the bench upstream",
                    name.as_str()
                )))
            }
        })
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, ca_cert, ca_key, upstream_ca, resolve] = args.as_slice() else {
        bail!("usage: bench-hudsucker LISTEN CA_CERT CA_KEY UPSTREAM_CA NAME=IP");
    };
    let listen: SocketAddr = listen.parse().context("LISTEN")?;
    let (name, ip) = resolve.split_once('=').context("NAME=IP")?;
    let resolver = Fixed {
        name: name.into(),
        ip: ip.parse().context("NAME=IP")?,
    };

    let key = KeyPair::from_pem(&std::fs::read_to_string(ca_key).context("CA_KEY")?)
        .context("parsing CA_KEY")?;
    let issuer =
        Issuer::from_ca_cert_pem(&std::fs::read_to_string(ca_cert).context("CA_CERT")?, key)
            .context("parsing CA_CERT")?;
    let ca = RcgenAuthority::new(issuer, 1_000, aws_lc_rs::default_provider());

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(upstream_ca).context("UPSTREAM_CA")? {
        roots.add(cert.context("UPSTREAM_CA")?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);

    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            // Accepted sockets inherit TCP_NODELAY from the listening socket.
            let sock = socket2::Socket::new(
                socket2::Domain::for_address(listen),
                socket2::Type::STREAM,
                None,
            )?;
            sock.set_reuse_address(true)?;
            sock.set_nodelay(true)?;
            sock.set_nonblocking(true)?;
            sock.bind(&listen.into())?;
            sock.listen(1024)?;
            let listener = tokio::net::TcpListener::from_std(sock.into())?;
            let proxy = Proxy::builder()
                .with_listener(listener)
                .with_ca(ca)
                .with_http_connector(https)
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .build()?;
            proxy.start().await?;
            Ok(())
        })
}
