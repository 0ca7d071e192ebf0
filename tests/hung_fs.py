#!/usr/bin/env python3
"""A file system whose reads never return, as a hung network file system's do.

    hung_fs.py MOUNTPOINT NAME...

Mounts a FUSE file system at MOUNTPOINT (run as root) holding one regular file
per NAME, 64 bytes each: `stat`, `open` and `fstat` answer at once, `read`
blocks until the process ends (its blocked readers then get ENOTCONN). Writes
"ready" on stdout once the mount answers, and "read NAME" as each read starts. The harness unmounts it and stops
the process by PID when the test ends.

It also ends with the test process that started it, whose PID is in
HUNG_FS_PARENT: a test run killed outright (SIGKILL, a CI timeout) never runs
the harness's clean-up, and would leave this process and its mount behind.
The kernel sends SIGTERM when the parent dies (PR_SET_PDEATHSIG); SIGTERM, from
the kernel or anyone, detaches the mount (lazily: blocked readers get ENOTCONN
as the process exits) and exits at once. The mount's source is
`ipx-<parent>-hung_fs`, so the harness's sweep can tell a dead run's mount.
"""

import ctypes
import ctypes.util
import errno
import os
import signal
import stat
import sys
import threading
import time

from fuse import FUSE, FuseOSError, Operations

SIZE = 64
PR_SET_PDEATHSIG = 1
MNT_DETACH = 2
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Hung(Operations):
    def __init__(self, names):
        self.names = set(names)
        self.never = threading.Event()
        self.now = time.time()

    def getattr(self, path, fh=None):
        attrs = dict(st_uid=0, st_gid=0, st_atime=self.now, st_mtime=self.now, st_ctime=self.now)
        if path == "/":
            return dict(attrs, st_mode=stat.S_IFDIR | 0o755, st_nlink=2)
        if path.lstrip("/") in self.names:
            return dict(attrs, st_mode=stat.S_IFREG | 0o644, st_nlink=1, st_size=SIZE)
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path, fh):
        return [".", ".."] + sorted(self.names)

    def open(self, path, flags):
        if path.lstrip("/") not in self.names:
            raise FuseOSError(errno.ENOENT)
        return 0

    def read(self, path, size, offset, fh):
        print("read " + path.lstrip("/"), flush=True)
        self.never.wait()
        return b""


def die_with_parent(mountpoint, parent):
    """Ends this process, its mount detached, on SIGTERM, which the kernel
    sends when the parent dies. Runs before any other thread starts."""
    # Blocked in every thread (those started later, libfuse's included, inherit
    # the mask), so that it waits for `sigwait` below: libfuse's own handler
    # would wait for the blocked reads to end, which they never do.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_PDEATHSIG): " + os.strerror(ctypes.get_errno()))
    # The parent may have died before the line above took effect, and then no
    # signal comes: we have been handed to another parent.
    if os.getppid() != parent:
        sys.exit("the test process %d is gone" % parent)

    def on_sigterm():
        signal.sigwait({signal.SIGTERM})
        # A signal that came while the mount was being made: let it finish,
        # then detach it (5 s at most; the harness's sweep is the backstop).
        for _ in range(250):
            if os.path.ismount(mountpoint):
                break
            time.sleep(0.02)
        libc.umount2(os.fsencode(mountpoint), MNT_DETACH)
        os._exit(0)

    threading.Thread(target=on_sigterm, daemon=True).start()


def main():
    mountpoint, names = sys.argv[1], sys.argv[2:]
    parent = int(os.environ["HUNG_FS_PARENT"])
    die_with_parent(mountpoint, parent)
    fs = Hung(names)

    def announce():
        # The mount answers once the root's attributes come back from the kernel.
        for _ in range(500):
            if os.path.ismount(mountpoint):
                print("ready", flush=True)
                return
            time.sleep(0.02)

    threading.Thread(target=announce, daemon=True).start()
    # direct_io: the kernel's page cache must not answer a read itself.
    FUSE(
        fs,
        mountpoint,
        foreground=True,
        nothreads=False,
        direct_io=True,
        allow_other=True,
        fsname="ipx-%d-hung_fs" % parent,
        subtype="hung_fs",
    )


if __name__ == "__main__":
    main()
