"""Aborts an upload the way Python's ftplib.abort() does: ABOR sent as
urgent (out-of-band) data on the control connection, then the data
connection closed. Prints the server's reply to the STOR.

Usage: abort_upload.py HOST PORT USER PASSWORD REMOTE_NAME BYTES_BEFORE_ABORT
"""
import ftplib
import socket
import sys

host, port, user, password, name, size = sys.argv[1:7]
# A reply that never comes fails the test instead of hanging the suite.
ftp = ftplib.FTP(timeout=120)
ftp.connect(host, int(port))
ftp.login(user, password)
ftp.voidcmd("TYPE I")
conn = ftp.transfercmd("STOR " + name)
conn.sendall(b"x" * int(size))
# What ftplib.abort() sends: ABOR with MSG_OOB (the Telnet Synch).
ftp.sock.sendall(b"ABOR" + ftplib.B_CRLF, socket.MSG_OOB)
conn.close()
reply = ftp.getmultiline()
print(reply)
