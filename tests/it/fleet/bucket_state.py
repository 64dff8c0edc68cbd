"""What the S3 emulator holds under a prefix, read through its own API
(boto3), never through bucketftp: the fleet test compares it with what its
clients were told.

Usage:
  bucket_state.py PREFIX           what is there
  bucket_state.py --delete PREFIX  remove it (the emulator keeps all in memory)
The first prints one line per object, `object KEY SIZE SHA256`, then one
line per in-progress multipart upload, `upload KEY`. The endpoint and bucket come
from BUCKETFTP_TEST_S3_ENDPOINT and BUCKETFTP_TEST_S3_BUCKET (see
.ci/emulators.sh), as for tests/it/clients/emulator.py.
"""
import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor


def client():
    # The same boto3 client the other emulator checks use.
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "clients"))
    from emulator import s3

    return s3()


def digest(s3, bucket, key):
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    h = hashlib.sha256()
    size = 0
    for chunk in iter(lambda: body.read(1 << 20), b""):
        h.update(chunk)
        size += len(chunk)
    return key, size, h.hexdigest()


def list_keys(s3, bucket, prefix):
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    return keys


def main(argv):
    delete = argv[1:2] == ["--delete"]
    args = argv[2:] if delete else argv[1:]
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    prefix = args[0]
    bucket = os.environ.get("BUCKETFTP_TEST_S3_BUCKET", "bucketftp")
    s3 = client()
    keys = list_keys(s3, bucket, prefix)
    if delete:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i:i + 1000]]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        return 0
    # A few readers at once: hundreds of objects, one emulator.
    with ThreadPoolExecutor(max_workers=8) as pool:
        for key, size, sha in pool.map(lambda k: digest(s3, bucket, k), keys):
            print(f"object {key} {size} {sha}")
    uploads = s3.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
    for page in uploads:
        for u in page.get("Uploads", []):
            print(f"upload {u['Key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
