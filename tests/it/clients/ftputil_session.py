"""ftputil against the gateway: walk, stat, isdir and upload_if_newer, which
all parse LIST lines (a directory without a real date breaks them).

Usage: ftputil_session.py HOST PORT USER PASSWORD LOCAL_DIR
Prints one JSON object with what ftputil saw.
"""
import json
import os
import sys
import time

import ftputil
import ftputil.session


def main(host, port, user, password, local_dir):
    factory = ftputil.session.session_factory(port=int(port), encoding="UTF-8")
    result = {}
    with ftputil.FTPHost(host, user, password, session_factory=factory) as ftp:
        result["walk"] = sorted(
            [root, sorted(dirs), sorted(files)] for root, dirs, files in ftp.walk("/"))
        result["isdir_sub"] = ftp.path.isdir("/sub")
        result["isfile_sub"] = ftp.path.isfile("/sub")
        sub = ftp.stat("/sub")
        result["sub_mtime"] = sub.st_mtime
        result["b_size"] = ftp.stat("/sub/b.txt").st_size
        local = os.path.join(local_dir, "new.txt")
        with open(local, "wb") as f:
            f.write(b"first version\n")
        # An hour old: the remote copy made now is newer than it.
        hour_ago = time.time() - 3600
        os.utime(local, (hour_ago, hour_ago))
        result["upload_missing"] = ftp.upload_if_newer(local, "/sub/new.txt")
        result["upload_older"] = ftp.upload_if_newer(local, "/sub/new.txt")
        with open(local, "wb") as f:
            f.write(b"second version\n")
        # A day ahead: newer than the remote copy whatever the clocks say.
        day_ahead = time.time() + 86400
        os.utime(local, (day_ahead, day_ahead))
        result["upload_newer"] = ftp.upload_if_newer(local, "/sub/new.txt")
        result["new_size"] = ftp.stat("/sub/new.txt").st_size
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:6])
