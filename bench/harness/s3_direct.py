"""The direct S3 client (boto3, default transfer settings) as its own
process, so that its time and peak RSS are its own.

    python3 s3_direct.py ENDPOINT put FILE BUCKET KEY
    python3 s3_direct.py ENDPOINT get BUCKET KEY SIZE
    python3 s3_direct.py ENDPOINT small-put BUCKET PREFIX COUNT SIZE THREADS
    python3 s3_direct.py ENDPOINT small-get BUCKET PREFIX COUNT SIZE THREADS
    python3 s3_direct.py ENDPOINT list BUCKET PREFIX

Prints one JSON object: seconds (the operation only, not the import or
client set-up), cpu_s (this process's CPU time in that span), peak_mib
(this process's VmHWM) and count where it applies.
"""

import io
import json
import sys
import threading
import time

import boto3
from botocore.config import Config

ACCESS_KEY, SECRET_KEY, REGION = "test", "testtest", "us-east-1"


def client(endpoint):
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=16),
    )


class Discard(io.RawIOBase):
    """A seekable sink, so that boto3 downloads ranges in parallel into it
    (as into a file) without the disk in the way."""

    def writable(self):
        return True

    def seekable(self):
        return True

    def seek(self, offset, whence=0):
        return offset

    def write(self, data):
        return len(data)


def peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def in_threads(threads, count, job):
    """Runs job(i) for i in range(count) over `threads` threads."""
    errors = []

    def worker(k):
        try:
            for i in range(k, count, threads):
                job(i)
        except Exception as e:
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def main(argv):
    endpoint, op, args = argv[0], argv[1], argv[2:]
    s3 = client(endpoint)
    s3.list_buckets()  # connect and sign once before the clock starts
    result = {}
    cpu0 = time.process_time()
    began = time.perf_counter()
    if op == "put":
        path, bucket, key = args
        s3.upload_file(path, bucket, key)
    elif op == "get":
        bucket, key, size = args
        sink = Discard()
        s3.download_fileobj(bucket, key, sink)
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] != int(size):
            raise SystemExit(f"{key}: {head['ContentLength']} bytes, expected {size}")
    elif op in ("small-put", "small-get"):
        bucket, prefix, count, size, threads = args
        count, size, threads = int(count), int(size), int(threads)
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        clients = [client(endpoint) for _ in range(threads)]
        began = time.perf_counter()

        def put(i):
            clients[i % threads].put_object(Bucket=bucket, Key=f"{prefix}f{i:05d}", Body=payload)

        def get(i):
            body = clients[i % threads].get_object(Bucket=bucket, Key=f"{prefix}f{i:05d}")["Body"].read()
            if len(body) != size:
                raise RuntimeError(f"f{i:05d}: {len(body)} bytes")

        in_threads(threads, count, put if op == "small-put" else get)
    elif op == "list":
        bucket, prefix = args
        count = 0
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
        for page in pages:
            count += len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        result["count"] = count
    else:
        raise SystemExit(f"unknown operation {op}")
    result["seconds"] = time.perf_counter() - began
    result["cpu_s"] = time.process_time() - cpu0
    result["peak_mib"] = peak_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
