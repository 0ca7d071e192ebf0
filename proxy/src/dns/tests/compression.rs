//! Names in answers are compressed against the question (RFC 1035 §4.1.4),
//! as a real server compresses them: each answer is the size of dnsmasq's
//! own answer with the same records, and one that fits a datagram only
//! compressed goes whole, without TC.

use super::peers::{dig, Dnsmasq};
use super::*;

/// An intercepted A answer is as small as dnsmasq's answer to the same question with
/// the same record. Before, its owner name went out in full (60 bytes, not 47).
#[tokio::test]
async fn an_intercepted_answer_is_as_small_as_dnsmasqs() {
    let reference = Dnsmasq::start(&[format!("--address=/x.example.com/{PROXY_IP}")]).await;
    let (_server, addr) = start(settings(&[], None)).await;
    for mode in ["+notcp", "+tcp"] {
        let theirs = dig(reference.addr, &[mode, "+noedns", "x.example.com", "A"]).await;
        let ours = dig(addr, &[mode, "+noedns", "x.example.com", "A"]).await;
        assert_eq!(
            theirs.rdata("A"),
            vec![PROXY_IP.to_string()],
            "{}",
            theirs.raw
        );
        assert_eq!(ours.rdata("A"), vec![PROXY_IP.to_string()], "{}", ours.raw);
        // Header 12, question 15 + 4, answer: a pointer 2 + 14.
        assert_eq!(theirs.size, 47, "{mode}: {}", theirs.raw);
        assert_eq!(ours.size, theirs.size, "{mode}: {}", ours.raw);
    }
}

/// A passthrough answer of 30 A records for a 16-byte name: 512 bytes compressed (the
/// limit without EDNS), 526 with the first owner name in full. It goes whole over UDP, as
/// dnsmasq's own answer does. Before, the size check encoded it compressed (it fits) and
/// hickory then sent it uncompressed: cut to 29 records with TC.
#[tokio::test]
async fn an_answer_that_fits_only_compressed_goes_whole_over_udp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hosts = dir.path().join("hosts");
    let lines: String = (0..30)
        .map(|i| format!("198.18.3.{i} many.pass.test\n"))
        .collect();
    std::fs::write(&hosts, lines).expect("hosts file");
    let up = Dnsmasq::start(&[format!("--addn-hosts={}", hosts.display())]).await;
    let (_server, addr) = start(settings(&["*.pass.test"], Some(up.addr))).await;
    let theirs = dig(
        up.addr,
        &["+notcp", "+noedns", "+ignore", "many.pass.test", "A"],
    )
    .await;
    assert_eq!(theirs.rdata("A").len(), 30, "{}", theirs.raw);
    assert_eq!(theirs.size, 512, "{}", theirs.raw);
    let ours = dig(
        addr,
        &["+notcp", "+noedns", "+ignore", "many.pass.test", "A"],
    )
    .await;
    assert!(
        !ours.flags.iter().any(|f| f == "tc"),
        "no TC: the answer fits: {}",
        ours.raw
    );
    assert_eq!(ours.rdata("A").len(), 30, "{}", ours.raw);
    assert_eq!(ours.size, theirs.size, "{}", ours.raw);
    // Over TCP too.
    let tcp = dig(addr, &["+tcp", "+noedns", "many.pass.test", "A"]).await;
    assert_eq!(tcp.rdata("A").len(), 30, "{}", tcp.raw);
    assert_eq!(tcp.size, theirs.size, "{}", tcp.raw);
    // One record more does not fit: TC, the question alone, and dig's retry over TCP
    // gets all 31.
    std::fs::write(
        &hosts,
        (0..31)
            .map(|i| format!("198.18.3.{i} more.pass.test\n"))
            .collect::<String>(),
    )
    .expect("hosts file");
    let up = Dnsmasq::start(&[format!("--addn-hosts={}", hosts.display())]).await;
    let (_server, addr) = start(settings(&["*.pass.test"], Some(up.addr))).await;
    let cut = dig(
        addr,
        &["+notcp", "+noedns", "+ignore", "more.pass.test", "A"],
    )
    .await;
    assert!(cut.flags.iter().any(|f| f == "tc"), "{}", cut.raw);
    assert!(cut.answers.is_empty(), "{}", cut.raw);
    let whole = dig(addr, &["+noedns", "more.pass.test", "A"]).await;
    assert_eq!(whole.rdata("A").len(), 31, "{}", whole.raw);
}
