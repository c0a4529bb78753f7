"""S3 Inventory reports as AWS writes them, put into the local S3 for tests: data files under
`<prefix>data/` (gzip CSV without a header and every field quoted, or Parquet) listed, with
their sizes and MD5 checksums, by `<prefix><date>/manifest.json`."""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

REPORT_DATE = "2026-12-01T01-00Z"  # the folder of one day's manifest


def put_csv_inventory(client, bucket: str, prefix: str, source_bucket: str,
                      schema: list[str], rows: list[list[str]], files: int = 1) -> str:
    """A CSV report of `source_bucket` in `bucket` under `prefix`: `rows` (values as AWS
    writes them: keys URL-encoded, times ISO-8601, empty for none) in the order of `schema`
    (AWS's field names, e.g. Bucket, Key, Size, LastModifiedDate, ETag), split into `files`
    data files; returns the manifest's s3a:// URI."""
    bodies = []
    for part in range(files):
        text = io.StringIO()
        csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows[part::files])
        bodies.append((f"{prefix}data/part-{part}.csv.gz", gzip.compress(text.getvalue().encode())))
    return _put_report(client, bucket, prefix, source_bucket, "CSV", ", ".join(schema), bodies)


def put_parquet_inventory(client, bucket: str, prefix: str, source_bucket: str,
                          columns: dict[str, list]) -> str:
    """A Parquet report of `source_bucket` in `bucket` under `prefix`: one data file of
    `columns` (AWS's column names, e.g. bucket, key, size, last_modified_date; keys as they
    are); returns the manifest's s3a:// URI."""
    data = io.BytesIO()
    pq.write_table(pa.table(columns), data)
    return _put_report(client, bucket, prefix, source_bucket, "Parquet",
                       "message s3.inventory { required binary bucket (STRING); ... }",
                       [(f"{prefix}data/part-0.parquet", data.getvalue())])


def _put_report(client, bucket: str, prefix: str, source_bucket: str, file_format: str,
                schema: str, bodies: list[tuple[str, bytes]]) -> str:
    for key, body in bodies:
        client.put_object(Bucket=bucket, Key=key, Body=body)
    manifest = {"sourceBucket": source_bucket, "destinationBucket": f"arn:aws:s3:::{bucket}",
                "version": "2016-11-30", "fileFormat": file_format, "fileSchema": schema,
                "files": [{"key": key, "size": len(body),
                           "MD5checksum": hashlib.md5(body).hexdigest()}
                          for key, body in bodies]}
    key = f"{prefix}{REPORT_DATE}/manifest.json"
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(manifest).encode())
    return f"s3a://{bucket}/{key}"
