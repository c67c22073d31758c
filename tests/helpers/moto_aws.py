"""A real moto server on 127.0.0.1 for tests that talk to AWS (S3, SageMaker, Secrets Manager, STS).

conftest.py imports the fixtures, so every test module can ask for ``aws``; the ``aws``
fixture resets the server, points the standard AWS settings (``AWS_ENDPOINT_URL``, dummy
credentials, region, no instance-metadata lookups, no ~/.aws files) at it for the test and for
its subprocesses (``aws.env``), and fails the test if anything in the test process tried to
reach a host other than 127.0.0.1. Subprocesses get the same guard through ``aws.env``
(a ``sitecustomize`` on PYTHONPATH); ``aws.outbound()`` lists what they attempted.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REGION = "us-west-2"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}

GUARD = '''"""Test guard (tests/helpers/moto_aws.py): record and refuse connections to anything but loopback."""
import os, socket
_LOG = os.environ.get("SKUVISION_TEST_NET_LOG")
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo

def _refuse(host):
    if _LOG:
        with open(_LOG, "a") as f:
            f.write(f"{host}\\n")
    raise OSError(f"test guard: no network beyond 127.0.0.1 (tried {host})")

def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in _LOOPBACK:
        _refuse(address[0])
    return _connect(self, address)

def getaddrinfo(host, *args, **kwargs):
    if host is not None and str(host) not in _LOOPBACK:
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)

socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
'''


@dataclass
class MotoAWS:
    endpoint: str
    env: dict[str, str]
    guard_log: Path
    attempts: list[str] = field(default_factory=list)

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def outbound(self) -> list[str]:
        """Hosts beyond 127.0.0.1 that this test or its subprocesses tried to reach."""
        logged = self.guard_log.read_text().split() if self.guard_log.is_file() else []
        return self.attempts + logged


@pytest.fixture(scope="session")
def moto_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws(moto_server, monkeypatch, tmp_path):
    urllib.request.urlopen(urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")).close()
    guard_dir = tmp_path / "net_guard"
    guard_dir.mkdir()
    (guard_dir / "sitecustomize.py").write_text(GUARD)
    env = {
        "AWS_ENDPOINT_URL": moto_server,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "SKUVISION_TEST_NET_LOG": str(tmp_path / "net_guard.log"),
        "PYTHONPATH": os.pathsep.join(p for p in (str(guard_dir), os.environ.get("PYTHONPATH")) if p),
    }
    for key in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "SKUVISION_SAGEMAKER_ROLE",
        "SKUVISION_IMAGE_URI",
        "SKUVISION_S3_PREFIX",
        "SKUVISION_WANDB_SECRET",
        "WANDB_API_KEY",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        if key != "PYTHONPATH":
            monkeypatch.setenv(key, value)
    moto = MotoAWS(endpoint=moto_server, env=env, guard_log=tmp_path / "net_guard.log")

    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and str(address[0]) not in LOOPBACK:
            moto.attempts.append(str(address[0]))
            raise OSError(f"test guard: no network beyond 127.0.0.1 (tried {address[0]})")
        return connect(sock, address)

    def guarded_getaddrinfo(host, *args, **kwargs):
        if host is not None and str(host) not in LOOPBACK:
            moto.attempts.append(str(host))
            raise OSError(f"test guard: no network beyond 127.0.0.1 (tried {host})")
        return getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    yield moto
    assert moto.outbound() == [], f"tried to reach beyond 127.0.0.1: {moto.outbound()}"


def s3_json(client, bucket: str, key: str):
    return json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
