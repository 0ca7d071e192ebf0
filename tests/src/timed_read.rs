//! Reads with a timeout that a signal does not end.
//!
//! A socket read with a timeout (`set_read_timeout`, `SO_RCVTIMEO`) is never restarted after a
//! signal handler ran, even with `SA_RESTART` (signal(7)): it fails with `EINTR`. Test
//! processes have a SIGCHLD handler once anything used tokio's process driver, so another
//! test's child exiting interrupts every timed read in flight; that is no answer from the peer.
//! Every timed read loop in the suite reads through [`read_some`].

use std::io::{ErrorKind, Read};

/// `r.read(buf)`, retried while it fails with [`ErrorKind::Interrupted`]: the bytes read
/// (0 at end of stream), or the first other error (a timeout is `WouldBlock`/`TimedOut`).
/// `read_exact` and `read_to_end` already retry; plain `read` does not.
pub fn read_some(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Reads one byte at a time up to and including the blank line that ends an HTTP/1 head;
/// panics, naming `what` and what was read, on a timeout, an error or an early end.
pub fn read_head(r: &mut impl Read, what: &str) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match read_some(r, &mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!(
                "{what}: reading a response head: {other:?} after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that is interrupted before each chunk, as a timed socket read is by a signal.
    struct Interrupted<'a> {
        data: &'a [u8],
        interrupt: bool,
    }

    impl Read for Interrupted<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.interrupt = !self.interrupt;
            if self.interrupt {
                return Err(std::io::Error::from(ErrorKind::Interrupted));
            }
            let n = buf.len().min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn an_interrupted_read_is_retried() {
        let mut r = Interrupted {
            data: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nrest",
            interrupt: false,
        };
        let mut buf = [0u8; 4];
        assert_eq!(read_some(&mut r, &mut buf).expect("a read"), 4);
        assert_eq!(&buf, b"HTTP");
        let head = read_head(&mut r, "interrupted reader");
        assert_eq!(head, "/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }

    #[test]
    fn other_errors_and_the_end_are_returned() {
        let mut empty: &[u8] = b"";
        assert_eq!(read_some(&mut empty, &mut [0u8; 8]).expect("end"), 0);
        struct TimesOut;
        impl Read for TimesOut {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(ErrorKind::WouldBlock))
            }
        }
        let e = read_some(&mut TimesOut, &mut [0u8; 8]).expect_err("a timeout");
        assert_eq!(e.kind(), ErrorKind::WouldBlock);
    }
}
