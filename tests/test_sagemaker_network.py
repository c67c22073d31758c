"""The tests' network guard works, and the SageMaker SDK's telemetry is off in skuvision's sessions.

Every test using the ``aws`` fixture fails if it (or a subprocess) tried to reach a host other
than 127.0.0.1; these tests show the guard catches such attempts, so that assertion means something.
"""

from __future__ import annotations

import socket

import pytest

from helpers import run_cli
from helpers.moto_aws import REGION


def test_guard_refuses_and_records_hosts_beyond_loopback(aws):
    with pytest.raises(OSError, match="no network beyond 127.0.0.1"):
        socket.create_connection(("192.0.2.1", 443), timeout=1)
    result = run_cli("-c", "import socket; socket.getaddrinfo('sagemaker.us-west-2.amazonaws.com', 443)", env=aws.env)
    assert result.returncode != 0 and "no network beyond 127.0.0.1" in result.stderr
    assert aws.outbound() == ["192.0.2.1", "sagemaker.us-west-2.amazonaws.com"]
    aws.attempts.clear()
    aws.guard_log.unlink()


def test_sdk_telemetry_is_off_in_skuvision_sessions(aws):
    from sagemaker.config.config_schema import TELEMETRY_OPT_OUT_PATH
    from sagemaker.telemetry import telemetry_logging
    from sagemaker.utils import resolve_value_from_config

    from skuvision.sagemaker.job import make_session

    session = make_session(REGION)
    assert resolve_value_from_config(None, TELEMETRY_OPT_OUT_PATH, False, session) is True
    # what the SDK would do without the opt-out: a GET to AWS's telemetry bucket, caught by the guard
    telemetry_logging._send_telemetry_request(1, [1], session, extra_info="test")
    assert [h for h in aws.outbound() if "sm-pysdk-t" in h]
    aws.attempts.clear()
