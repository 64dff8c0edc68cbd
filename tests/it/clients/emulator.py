"""Talks to the cloud emulators through their own APIs (boto3, the Azure
blob SDK), never through bucketftp, so tests can check what really landed.

Usage:
  emulator.py create-buckets
  emulator.py create s3|azure NAME        -> a bucket / container of that name (if missing)
  emulator.py get s3|azure KEY            -> object bytes on stdout (exit 3 if missing)
  emulator.py put s3|azure KEY            <- object bytes from stdin
  emulator.py list s3|azure PREFIX        -> one key per line
  emulator.py uploads s3|azure PREFIX     -> in-progress multipart uploads / uncommitted blocks
  emulator.py sha256 s3|azure KEY         -> hex digest and size of the object
  emulator.py put-folder azure KEY        -> zero-byte blob with hdi_isfolder=true (ADLS/blobfuse folder)
  emulator.py meta s3|azure KEY           -> size and user metadata as JSON
Endpoints come from BUCKETFTP_TEST_* (see .ci/emulators.sh).
"""
import os
import sys

AZURE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsu"
             "Fq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")


def s3():
    import boto3
    return boto3.client(
        "s3",
        endpoint_url=os.environ["BUCKETFTP_TEST_S3_ENDPOINT"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def azure(container=None):
    from azure.storage.blob import BlobServiceClient
    endpoint = os.environ["BUCKETFTP_TEST_AZURE_ENDPOINT"]
    conn = (f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURE_KEY};BlobEndpoint={endpoint};")
    service = BlobServiceClient.from_connection_string(conn)
    return service.get_container_client(
        container or os.environ.get("BUCKETFTP_TEST_AZURE_CONTAINER", "bucketftp"))


def s3_bucket():
    return os.environ.get("BUCKETFTP_TEST_S3_BUCKET", "bucketftp")


def main(argv):
    cmd = argv[1]
    if cmd == "create-buckets":
        s3().create_bucket(Bucket=s3_bucket())
        c = azure()
        if not c.exists():
            c.create_container()
        return 0
    cloud, arg = argv[2], argv[3]
    if cmd == "create":
        if cloud == "s3":
            try:
                s3().create_bucket(Bucket=arg)
            except s3().exceptions.BucketAlreadyOwnedByYou:
                pass
        else:
            c = azure(arg)
            if not c.exists():
                c.create_container()
        return 0
    if cmd == "get":
        try:
            if cloud == "s3":
                data = s3().get_object(Bucket=s3_bucket(), Key=arg)["Body"].read()
            else:
                data = azure().download_blob(arg).readall()
        except Exception as e:  # missing object
            print(e, file=sys.stderr)
            return 3
        sys.stdout.buffer.write(data)
    elif cmd == "put":
        data = sys.stdin.buffer.read()
        if cloud == "s3":
            s3().put_object(Bucket=s3_bucket(), Key=arg, Body=data)
        else:
            azure().upload_blob(arg, data, overwrite=True)
    elif cmd == "list":
        if cloud == "s3":
            pages = s3().get_paginator("list_objects_v2").paginate(Bucket=s3_bucket(), Prefix=arg)
            for page in pages:
                for o in page.get("Contents", []):
                    print(o["Key"])
        else:
            for b in azure().list_blobs(name_starts_with=arg):
                print(b.name)
    elif cmd == "uploads":
        if cloud == "s3":
            r = s3().list_multipart_uploads(Bucket=s3_bucket(), Prefix=arg)
            for u in r.get("Uploads", []):
                print(u["Key"])
        else:
            # Blobs that exist only as uncommitted blocks (Azure's
            # in-progress uploads: never visible, dropped after 7 days).
            committed = {b.name for b in azure().list_blobs(name_starts_with=arg)}
            for b in azure().list_blobs(name_starts_with=arg, include=["uncommittedblobs"]):
                if b.name not in committed:
                    print(b.name)
    elif cmd == "sha256":
        import hashlib
        h = hashlib.sha256()
        size = 0
        if cloud == "s3":
            body = s3().get_object(Bucket=s3_bucket(), Key=arg)["Body"]
            chunks = iter(lambda: body.read(1 << 20), b"")
        else:
            chunks = azure().download_blob(arg).chunks()
        for chunk in chunks:
            h.update(chunk)
            size += len(chunk)
        print(h.hexdigest(), size)
    elif cmd == "put-folder":
        azure().upload_blob(arg, b"", overwrite=True, metadata={"hdi_isfolder": "true"})
    elif cmd == "meta":
        import json
        if cloud == "s3":
            r = s3().head_object(Bucket=s3_bucket(), Key=arg)
            print(json.dumps({"size": r["ContentLength"], "metadata": r.get("Metadata", {}),
                              "storage_class": r.get("StorageClass", "STANDARD")}))
        else:
            p = azure().get_blob_client(arg).get_blob_properties()
            print(json.dumps({"size": p.size, "metadata": dict(p.metadata or {})}))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
