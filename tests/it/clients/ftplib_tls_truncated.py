"""An FTPS upload whose data connection ends without a TLS close_notify.

Usage: ftplib_tls_truncated.py HOST PORT USER PASSWORD CAFILE REMOTE_NAME

This is the widely posted replacement for ftplib's storbinary (it skips
conn.unwrap()): the data socket is simply closed, so the server cannot tell
the end of the file from a connection cut by an attacker or a network
failure. Prints the server's final reply to the upload ("reply: 426 ...")
and exits 0; exits non-zero on any other FTP error.
"""
import ftplib
import ssl
import sys

host, port, user, password, cafile, name = sys.argv[1:7]
ftp = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=cafile), timeout=30)
ftp.connect(host, int(port))
ftp.login(user, password)
ftp.prot_p()
ftp.voidcmd("TYPE I")
with ftp.transfercmd("STOR " + name) as conn:
    conn.sendall(b"x" * 100_000)
try:
    print("reply:", ftp.voidresp())
except (ftplib.error_temp, ftplib.error_perm) as e:
    print("reply:", e)
ftp.quit()
