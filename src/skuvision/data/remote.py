"""Reading shard manifests from S3 (endpoint and credentials from the usual AWS settings)."""

from __future__ import annotations

from skuvision.errors import DataError

import json


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise DataError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key.strip("/")


def read_remote_manifest(root: str) -> dict:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_s3_uri(root)
    key = f"{prefix}/manifest.json" if prefix else "manifest.json"
    try:
        body = boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise DataError(f"data.root={root}: cannot read s3://{bucket}/{key} ({code}); build shards there with `skuvision shards build --out {root}`") from None
    except BotoCoreError as exc:
        raise DataError(f"data.root={root}: {exc}; check AWS credentials/region (AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL)") from None
    return json.loads(body)
