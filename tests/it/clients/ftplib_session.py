"""A Python ftplib session against a running gateway, the way scripts use it.

Usage: ftplib_session.py HOST PORT USER PASSWORD FILE REMOTE_DIR [--tls CAFILE] [--active]

Makes REMOTE_DIR, uploads FILE into it under its own name, reads it back,
checks SIZE and NLST, prints LIST. With --tls: FTP_TLS, certificate
verified against CAFILE, PROT P (encrypted data connections). With
--active: set_pasv(False), so the server connects back (PORT).
The debug trace (commands sent, password masked) goes to stdout so the
caller can see which commands were used. Exits non-zero on any FTP error
(except the one documented TLS shutdown quirk after STOR, reported as a
NOTE line).
"""
import argparse
import ftplib
import io
import os
import ssl

parser = argparse.ArgumentParser()
for name in ("host", "port", "user", "password", "file", "remote_dir"):
    parser.add_argument(name)
parser.add_argument("--tls", metavar="CAFILE")
parser.add_argument("--active", action="store_true")
args = parser.parse_args()

if args.tls:
    context = ssl.create_default_context(cafile=args.tls)
    ftp = ftplib.FTP_TLS(context=context, timeout=30)
else:
    ftp = ftplib.FTP(timeout=30)
ftp.set_debuglevel(1)
ftp.connect(args.host, int(args.port))
ftp.login(args.user, args.password)  # FTP_TLS sends AUTH TLS first
if args.tls:
    ftp.prot_p()
ftp.set_pasv(not args.active)

with open(args.file, "rb") as f:
    original = f.read()
name = os.path.basename(args.file)

ftp.mkd(args.remote_dir)
ftp.cwd(args.remote_dir)
try:
    ftp.storbinary("STOR " + name, io.BytesIO(original))
except ssl.SSLEOFError:
    # storbinary ends with conn.unwrap(), which waits for the server's TLS
    # close_notify on the data connection. libunftp 0.24 drops that
    # connection after an upload without sending one (docs/clients.md), so
    # the stock call raises although the upload completed: read the
    # transfer's final reply ourselves, as scripts must.
    print("NOTE: no TLS close_notify from the server after STOR")
    ftp.voidresp()
out = io.BytesIO()
ftp.retrbinary("RETR " + name, out.write)
assert out.getvalue() == original, "RETR returned different bytes"
assert ftp.size(name) == len(original), "SIZE"
assert name in ftp.nlst(), "NLST lists the upload"
ftp.retrlines("LIST")
if args.tls:
    print("control channel:", ftp.sock.version())
ftp.quit()
print("ftplib session ok")
