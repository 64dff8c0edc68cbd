"""The README's Python session, with the server's address, the account and
the file as arguments, against a running gateway (tests/it/cli.rs runs the
README's block itself, as written).

Usage: seed.py HOST PORT USER PASSWORD FILE
Prints the LIST output; exits non-zero on any FTP error.
"""
import ftplib
import io
import sys

host, port, u, p, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

ftp = ftplib.FTP()
ftp.connect(host, port)
ftp.login(u, p)
with open(path, "rb") as f:
    ftp.storbinary("STOR upload.txt", f)
out = io.BytesIO()
ftp.retrbinary("RETR upload.txt", out.write)
ftp.retrlines("LIST")
ftp.quit()

with open(path, "rb") as original:
    assert out.getvalue() == original.read(), "RETR returned different bytes"
print("seed example ok")
