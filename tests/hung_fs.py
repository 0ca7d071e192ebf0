#!/usr/bin/env python3
"""A file system whose reads never return, as a hung network file system's do.

    hung_fs.py MOUNTPOINT NAME...

Mounts a FUSE file system at MOUNTPOINT (run as root) holding one regular file
per NAME, 64 bytes each: `stat`, `open` and `fstat` answer at once, `read`
blocks until the process ends (its blocked readers then get ENOTCONN). Writes
"ready" on stdout once the mount answers, and "read NAME" as each read starts. The harness unmounts it and stops
the process by PID when the test ends.
"""

import errno
import os
import stat
import sys
import threading
import time

from fuse import FUSE, FuseOSError, Operations

SIZE = 64


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


def main():
    mountpoint, names = sys.argv[1], sys.argv[2:]
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
    FUSE(fs, mountpoint, foreground=True, nothreads=False, direct_io=True, allow_other=True)


if __name__ == "__main__":
    main()
