"""Review log lines: one per review, with the fields an operator filters on, and no pod bodies."""

from __future__ import annotations

import json
import logging

import pytest

from devtools.admission import admission_review
from modelcache.runtime.logs import JsonFormatter
from webhook.config import Settings
from webhook.handlers import _log_review, review_admission

POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"generateName": "qwen-", "annotations": {"modelcache.io/model": "hf://Qwen/Qwen3-0.6B"}},
    "spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0", "args": ["--api-key", "s3cr3t"]}]},
}


def test_json_log_line_of_a_review(caplog: pytest.LogCaptureFixture) -> None:
    result = review_admission(json.dumps(admission_review(POD, "serving", uid="u-1")).encode(), settings=Settings())
    with caplog.at_level(logging.INFO, logger="webhook.handlers"):
        _log_review(result, 0.0012)
    line = json.loads(JsonFormatter().format(caplog.records[0]))
    assert line["uid"] == "u-1"
    assert line["namespace"] == "serving"
    assert line["pod"] == "qwen-*"
    assert line["outcome"] == "injected"
    assert line["model_key"] == result.key
    assert line["ms"] == 1.2
    assert "s3cr3t" not in json.dumps(line)


def test_a_denial_is_logged_as_a_warning_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    pod = json.loads(json.dumps(POD))
    pod["metadata"]["annotations"]["modelcache.io/model"] = "hf://nope"
    result = review_admission(json.dumps(admission_review(pod, "serving")).encode(), settings=Settings())
    with caplog.at_level(logging.INFO, logger="webhook.handlers"):
        _log_review(result, 0.001)
    assert caplog.records[0].levelno == logging.WARNING
    assert "outcome=denied" in caplog.records[0].getMessage()
    assert "openai-community/gpt2" in caplog.records[0].getMessage()
