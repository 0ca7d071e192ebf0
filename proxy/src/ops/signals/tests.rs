//! Signals delivered to this test process, the drain, and sd_notify datagrams.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{kill, Signal as Sig};
use nix::unistd::Pid;

use super::*;
use crate::ops::management::{FnReloader, ReloadSummary};

#[tokio::test]
async fn sighup_reloads_through_the_controller() {
    let count = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (c2, d2) = (count.clone(), done.clone());
    let reloader = FnReloader(move || {
        c2.fetch_add(1, Ordering::SeqCst);
        d2.notify_one();
        async { Ok(ReloadSummary::default()) }
    });
    let controller = ReloadController::new(Arc::new(reloader), String::new(), None);
    let task = spawn_reload_on_sighup(controller.clone()).expect("install SIGHUP");
    kill(Pid::this(), Sig::SIGHUP).expect("send SIGHUP to self");
    tokio::time::timeout(Duration::from_secs(10), done.notified())
        .await
        .expect("SIGHUP did not trigger a reload");
    assert_eq!(count.load(Ordering::SeqCst), 1);
    // Let the controller record the outcome.
    for _ in 0..100 {
        if controller.status().last_reload.is_some() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let last = controller.status().last_reload.expect("recorded");
    assert_eq!(last.trigger, Trigger::Signal);
    task.abort();
}

#[tokio::test]
async fn sigterm_resolves_shutdown_signal() {
    let mut s = ShutdownSignal::install().expect("install");
    kill(Pid::this(), Sig::SIGTERM).expect("send SIGTERM to self");
    let which = tokio::time::timeout(Duration::from_secs(10), s.recv())
        .await
        .expect("SIGTERM not seen");
    assert_eq!(which, "SIGTERM");
}

#[tokio::test(start_paused = true)]
async fn drain_waits_for_guards_up_to_the_grace_period() {
    let d = Drain::new();
    let stopping = d.stopping();
    let g = d.guard();
    let _t = d.spawn(async {});
    assert!(!d.is_stopping());
    let out = d.drain(Duration::from_secs(5)).await;
    assert_eq!(out, DrainOutcome::TimedOut { in_flight: 1 });
    assert!(d.is_stopping());
    stopping.await;
    drop(g);
    assert_eq!(d.drain(Duration::from_secs(5)).await, DrainOutcome::Drained);
}

#[tokio::test(start_paused = true)]
async fn drain_finishes_when_the_last_request_ends() {
    let d = Drain::new();
    let g = d.guard();
    let d2 = d.clone();
    let waiter = tokio::spawn(async move { d2.drain(Duration::from_secs(60)).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(d.in_flight(), 1);
    drop(g);
    assert_eq!(waiter.await.expect("join"), DrainOutcome::Drained);
}

#[test]
fn sd_notify_sends_one_datagram() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind");
    sd_notify_to(path.to_str().expect("utf8 path"), "READY=1").expect("send");
    let mut buf = [0u8; 64];
    let n = sock.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"READY=1");

    let name = format!("iron-proxy-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let abs = UnixDatagram::bind_addr(&addr).expect("bind abstract");
    sd_notify_to(&format!("@{name}"), "STOPPING=1").expect("send abstract");
    let n = abs.recv(&mut buf).expect("recv");
    assert_eq!(&buf[..n], b"STOPPING=1");
}
