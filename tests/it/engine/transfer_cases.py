"""Python ftplib sessions for tests/it/engine_transfers.rs: commands on the
control connection while a transfer runs, ABOR in its three wire forms, QUIT
right after or during an upload, and FTPS uploads with the stock API.

Usage: transfer_cases.py CASE HOST PORT USER PASSWORD [ARGS...]

Every case prints what the server answered, one "name: reply" line per step,
and ends with "case ok"; any unexpected reply raises (non-zero exit). Socket
reads wait at most REPLY_WAIT seconds, so a server that answers only after
the transfer has ended fails the case instead of hanging it.
"""
import ftplib
import socket
import ssl
import sys

REPLY_WAIT = 20
# Longer than the data connection's TLS handshake deadline (30 s).
STALL_WAIT = 90
CHUNK = 64 * 1024

IAC, IP, DM = b"\xff", b"\xf4", b"\xf2"


def connect(host, port, user, password, cafile=None, tls13=False):
    if cafile:
        context = ssl.create_default_context(cafile=cafile)
        if tls13:
            context.minimum_version = ssl.TLSVersion.TLSv1_3
        ftp = ftplib.FTP_TLS(context=context, timeout=REPLY_WAIT)
    else:
        ftp = ftplib.FTP(timeout=REPLY_WAIT)
    ftp.connect(host, port)
    ftp.login(user, password)
    if cafile:
        ftp.prot_p()
    ftp.voidcmd("TYPE I")
    return ftp


def step(name, reply, *codes):
    print(f"{name}: {reply}", flush=True)
    if reply[:3] not in codes:
        raise SystemExit(f"{name}: expected {'/'.join(codes)}, got {reply!r}")


def commands_during(ftp, what):
    """NOOP, PWD and STAT, each answered while the transfer is running."""
    for cmd, code in (("NOOP", "200"), ("PWD", "257"), ("STAT", "211")):
        ftp.putcmd(cmd)
        step(f"{cmd} during {what}", ftp.getmultiline(), code)


def send_abor(ftp, form):
    """ABOR as plain text, as ftplib.abort() sends it (the whole line as
    urgent data), or as lftp sends it (Telnet IP, then the Synch: IAC DM as
    urgent data, then the line)."""
    if form == "plain":
        ftp.sock.sendall(b"ABOR\r\n")
    elif form == "ftplib":
        ftp.sock.sendall(b"ABOR\r\n", socket.MSG_OOB)
    elif form == "lftp":
        ftp.sock.sendall(IAC + IP + IAC)
        ftp.sock.sendall(DM, socket.MSG_OOB)
        ftp.sock.sendall(b"ABOR\r\n")
    else:
        raise SystemExit(f"unknown ABOR form {form}")


def case_during_upload(ftp, name, size):
    size = int(size)
    with ftp.transfercmd("STOR " + name) as conn:
        conn.sendall(b"u" * (size // 2))
        commands_during(ftp, "upload")
        conn.sendall(b"u" * (size - size // 2))
    step("STOR", ftp.voidresp(), "226")


def case_during_download(ftp, name):
    with ftp.transfercmd("RETR " + name) as conn:
        first = conn.recv(CHUNK)
        assert first, "no data"
        commands_during(ftp, "download")
        received = len(first)
        while chunk := conn.recv(CHUNK):
            received += len(chunk)
    print("downloaded:", received)
    step("RETR", ftp.voidresp(), "226")


def case_abort_upload(ftp, name, form):
    conn = ftp.transfercmd("STOR " + name)
    conn.sendall(b"a" * (3 * CHUNK))
    # The data connection stays open: only ABOR can end this transfer.
    send_abor(ftp, form)
    step("ABOR first reply", ftp.getmultiline(), "426")
    step("ABOR second reply", ftp.getmultiline(), "226")
    conn.close()
    step("NOOP after ABOR", ftp.sendcmd("NOOP"), "200")


def case_abort_download(ftp, name, form):
    conn = ftp.transfercmd("RETR " + name)
    assert conn.recv(CHUNK), "no data"
    # Not reading any further: the server is blocked writing.
    send_abor(ftp, form)
    step("ABOR first reply", ftp.getmultiline(), "426")
    step("ABOR second reply", ftp.getmultiline(), "226")
    conn.close()
    step("SIZE after ABOR", ftp.sendcmd("SIZE " + name), "213")


def case_quit_after_upload(ftp, name, size):
    """Close the data connection and send QUIT at once, without waiting
    for the transfer's reply: 226 must still come, then 221."""
    with ftp.transfercmd("STOR " + name) as conn:
        conn.sendall(b"q" * int(size))
    ftp.putcmd("QUIT")
    step("upload reply", ftp.getmultiline(), "226")
    step("QUIT reply", ftp.getmultiline(), "221")


def case_quit_during_upload(ftp, name, size):
    """QUIT while the data connection is still open; the upload goes on."""
    size = int(size)
    with ftp.transfercmd("STOR " + name) as conn:
        conn.sendall(b"d" * (size // 2))
        ftp.putcmd("QUIT")
        conn.sendall(b"d" * (size - size // 2))
    step("upload reply", ftp.getmultiline(), "226")
    step("QUIT reply", ftp.getmultiline(), "221")


def case_tls_storbinary(ftp, name, size):
    """The stock FTP_TLS.storbinary (it ends with conn.unwrap(), which waits
    for the server's close_notify), then a download of the same bytes."""
    import io

    data = bytes(range(256)) * (int(size) // 256)
    ftp.storbinary("STOR " + name, io.BytesIO(data))
    out = io.BytesIO()
    ftp.retrbinary("RETR " + name, out.write)
    assert out.getvalue() == data, "RETR returned different bytes"
    print("control channel:", ftp.sock.version())


def case_tls_data_tickets(ftp, name):
    """TLS 1.3 session tickets come on the control connection only. A
    download is read to its end, so every record the server sent on the data
    connection (tickets come first) has been processed when it is checked.
    A ticket left unread by an uploading client makes its kernel reset the
    connection, which loses the upload's unread tail on the server."""
    import io

    ftp.storbinary("STOR " + name, io.BytesIO(b"t" * 100000))
    with ftp.transfercmd("RETR " + name) as conn:
        while conn.recv(CHUNK):
            pass
        print("data ticket:", conn.session.has_ticket)
        assert not conn.session.has_ticket, "a session ticket was sent on the data connection"
    step("RETR", ftp.voidresp(), "226")
    print("control ticket:", ftp.sock.session.has_ticket)
    assert ftp.sock.session.has_ticket, "no session ticket on the control connection"


def case_data_tls_junk(ftp, name):
    """Junk instead of a TLS handshake on the data connection: the data
    command is answered 425 (no panic, no hang) and the session goes on."""
    import io

    host, port = ftp.makepasv()
    junk = socket.create_connection((host, port), timeout=REPLY_WAIT)
    junk.sendall(b"GET / HTTP/1.0\r\n\r\n" * 8)
    ftp.putcmd("STOR " + name)
    reply = ftp.getmultiline()
    if reply.startswith("150"):
        print(f"STOR: {reply}")
        reply = ftp.getmultiline()
    step("STOR over a junk data connection", reply, "425")
    junk.close()
    step("NOOP after a failed data handshake", ftp.sendcmd("NOOP"), "200")
    ftp.storbinary("STOR " + name, io.BytesIO(b"after the junk"))


def case_data_tls_stall(ftp, name):
    """A data connection that never starts its TLS handshake: after the
    handshake deadline (30 s) the data command is answered 425 and the
    session goes on."""
    host, port = ftp.makepasv()
    silent = socket.create_connection((host, port), timeout=REPLY_WAIT)
    ftp.sock.settimeout(STALL_WAIT)
    ftp.putcmd("STOR " + name)
    reply = ftp.getmultiline()
    if reply.startswith("150"):
        print(f"STOR: {reply}")
        reply = ftp.getmultiline()
    step("STOR over a silent data connection", reply, "425")
    ftp.sock.settimeout(REPLY_WAIT)
    silent.close()
    step("NOOP after a stalled data handshake", ftp.sendcmd("NOOP"), "200")


def case_tls_logins(host, port, user, password, cafile, count, workers):
    """COUNT fresh FTPS logins (AUTH TLS, USER, PASS, QUIT) from WORKERS
    threads; every one must succeed."""
    import concurrent.futures

    def login(_):
        try:
            ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=cafile), timeout=REPLY_WAIT)
            ftp.connect(host, port)
            ftp.login(user, password)
            ftp.quit()
            return None
        except Exception as e:  # noqa: BLE001 - every failure is reported
            return repr(e)

    with concurrent.futures.ThreadPoolExecutor(int(workers)) as pool:
        failures = [f for f in pool.map(login, range(int(count))) if f]
    print(f"logins: {int(count) - len(failures)} of {count} succeeded")
    for failure in failures[:10]:
        print("failure:", failure)
    if failures:
        raise SystemExit("some FTPS logins failed")


def case_auth_piggyback(host, port, cafile):
    """AUTH TLS and USER in one packet: the USER, plaintext received before
    the handshake, is discarded, not executed (RFC 4217, CVE-2011-0411)."""
    raw = socket.create_connection((host, port), timeout=REPLY_WAIT)
    lines = raw.makefile("rb")
    step("greeting", lines.readline().decode(), "220")
    raw.sendall(b"AUTH TLS\r\nUSER alice\r\n")
    step("AUTH TLS", lines.readline().decode(), "234")
    context = ssl.create_default_context(cafile=cafile)
    tls = context.wrap_socket(raw, server_hostname=host)
    tls_lines = tls.makefile("rb")
    # Had the piggybacked USER run, its 331 would come first.
    tls.sendall(b"NOOP\r\n")
    step("first reply over TLS", tls_lines.readline().decode(), "200")
    tls.sendall(b"QUIT\r\n")
    step("QUIT", tls_lines.readline().decode(), "221")


class ImplicitFTP_TLS(ftplib.FTP_TLS):
    """ftplib has no implicit FTPS: the control socket is wrapped in TLS
    before the greeting is read; data connections are protected (PROT P)."""

    def connect(self, host, port, timeout=REPLY_WAIT):
        self.host, self.port, self.timeout = host, port, timeout
        raw = socket.create_connection((host, port), timeout)
        self.af = raw.family
        self.sock = self.context.wrap_socket(raw, server_hostname=host)
        self.file = self.sock.makefile("r", encoding=self.encoding)
        self.welcome = self.getresp()
        return self.welcome


def case_implicit(host, port, user, password, cafile, name):
    """Implicit FTPS: log in, upload, list and download over TLS."""
    import io

    ftp = ImplicitFTP_TLS(context=ssl.create_default_context(cafile=cafile), timeout=REPLY_WAIT)
    print("greeting:", ftp.connect(host, port))
    print("control channel:", ftp.sock.version())
    ftp.login(user, password)
    ftp.prot_p()
    data = b"implicit " * 10000
    ftp.storbinary("STOR " + name, io.BytesIO(data))
    assert name in ftp.nlst(), "NLST lists the upload"
    out = io.BytesIO()
    ftp.retrbinary("RETR " + name, out.write)
    assert out.getvalue() == data, "RETR returned different bytes"
    step("QUIT", ftp.quit(), "221")


CASES = {
    "data-tls-junk": case_data_tls_junk,
    "data-tls-stall": case_data_tls_stall,
    "during-upload": case_during_upload,
    "during-download": case_during_download,
    "abort-upload": case_abort_upload,
    "abort-download": case_abort_download,
    "quit-after-upload": case_quit_after_upload,
    "quit-during-upload": case_quit_during_upload,
    "tls-storbinary": case_tls_storbinary,
    "tls-data-tickets": case_tls_data_tickets,
}


def main():
    case, host, port, user, password, *rest = sys.argv[1:]
    if case == "tls-logins":
        case_tls_logins(host, int(port), user, password, *rest)
        print("case ok")
        return
    if case == "implicit":
        case_implicit(host, int(port), user, password, *rest)
        print("case ok")
        return
    if case == "auth-piggyback":
        case_auth_piggyback(host, int(port), *rest)
        print("case ok")
        return
    cafile = None
    tls13 = False
    while rest and rest[0].startswith("--"):
        flag = rest.pop(0)
        if flag == "--tls":
            cafile = rest.pop(0)
        elif flag == "--tls13":
            tls13 = True
        else:
            raise SystemExit(f"unknown flag {flag}")
    ftp = connect(host, int(port), user, password, cafile, tls13)
    CASES[case](ftp, *rest)
    if case not in ("quit-after-upload", "quit-during-upload"):
        step("QUIT", ftp.quit(), "221")
    print("case ok")


main()
