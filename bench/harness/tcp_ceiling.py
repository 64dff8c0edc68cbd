"""The loopback ceiling: the same bytes over one plain TCP connection, with
no protocol at all.

* upload: a client `sendfile`s the source file to a receiver that writes
  what it reads into a new file on the same disk (what a server does on
  STOR, minus FTP and minus any store);
* download: a server `sendfile`s the file to a client that discards it
  (what vsftpd does on RETR, minus FTP).
"""

import os
import socket
import threading
import time

_BUF = 1024 * 1024


def _listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s


def upload(src, dest):
    """Seconds to copy `src` into `dest` over loopback TCP."""
    lst = _listener()
    received = []

    def receive():
        conn, _ = lst.accept()
        total = 0
        buf = bytearray(_BUF)
        view = memoryview(buf)
        with conn, open(dest, "wb") as out:
            while True:
                n = conn.recv_into(buf)
                if n == 0:
                    break
                out.write(view[:n])
                total += n
        received.append(total)

    t = threading.Thread(target=receive)
    t.start()
    began = time.perf_counter()
    with socket.create_connection(lst.getsockname()) as c, open(src, "rb") as f:
        c.sendfile(f)
        c.shutdown(socket.SHUT_WR)
        t.join()
    elapsed = time.perf_counter() - began
    lst.close()
    if received != [os.path.getsize(src)]:
        raise RuntimeError(f"ceiling upload moved {received} bytes")
    return elapsed


def download(src):
    """Seconds to send `src` over loopback TCP to a reader that discards it."""
    lst = _listener()

    def send():
        conn, _ = lst.accept()
        with conn, open(src, "rb") as f:
            conn.sendfile(f)

    t = threading.Thread(target=send)
    t.start()
    began = time.perf_counter()
    total = 0
    buf = bytearray(_BUF)
    with socket.create_connection(lst.getsockname()) as c:
        while True:
            n = c.recv_into(buf)
            if n == 0:
                break
            total += n
    elapsed = time.perf_counter() - began
    t.join()
    lst.close()
    if total != os.path.getsize(src):
        raise RuntimeError(f"ceiling download moved {total} bytes")
    return elapsed
