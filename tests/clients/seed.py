"""The README's seed example, verbatim, against a running gateway.

Usage: seed.py HOST PORT USER PASSWORD FILE
Prints the LIST output; exits non-zero on any FTP error.
"""
import ftplib
import io
import sys

host, port, u, p, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]

# ftplib.FTP(host) connects to port 21; the test server listens on a free
# port, so the class default is pointed at it. The session itself is the
# seed example unchanged.
ftplib.FTP.port = port

f = open(path, "rb")
out = io.BytesIO()
ftp = ftplib.FTP(host); ftp.login(user=u, passwd=p)
ftp.storbinary('STOR upload.txt', f); ftp.retrbinary('RETR upload.txt', out.write)
ftp.retrlines('LIST'); ftp.quit()

with open(path, "rb") as original:
    assert out.getvalue() == original.read(), "RETR returned different bytes"
print("seed example ok")
