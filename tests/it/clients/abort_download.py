"""Aborts a download the way Python's ftplib.abort() does (ABOR as urgent
data), then checks the same session still works: prints the abort reply and
the size of a second, complete download.

Usage: abort_download.py HOST PORT USER PASSWORD REMOTE_NAME
"""
import ftplib
import socket
import sys

host, port, user, password, name = sys.argv[1:6]
# A reply that never comes fails the test instead of hanging the suite.
ftp = ftplib.FTP(timeout=120)
ftp.connect(host, int(port))
ftp.login(user, password)
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("RETR " + name)
conn.recv(65536)
ftp.sock.sendall(b"ABOR" + ftplib.B_CRLF, socket.MSG_OOB)
conn.close()
print("abort reply:", ftp.getmultiline())
# A fresh session reads the whole file: the gateway is unharmed.
again = ftplib.FTP(timeout=120)
again.connect(host, int(port))
again.login(user, password)
chunks = []
again.retrbinary("RETR " + name, chunks.append)
print("second download:", sum(len(c) for c in chunks))
again.quit()
