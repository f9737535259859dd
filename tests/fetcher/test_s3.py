"""s3:// through a moto server on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from devtools.faultproxy import FaultProxy, Rule
from devtools.fetcher_env import fetcher_environment, run_fetcher
from modelcache.contract import keys, sources, wire
from tests.helpers import aws_env, s3_client

WEIGHTS = os.urandom(9 << 20)  # 9 MiB: uploaded in parts, like a real checkpoint shard
FILES = {"config.json": b'{"model_type": "tiny"}', "weights/model.safetensors": WEIGHTS, "tokenizer.json": b"{}"}


@pytest.fixture(scope="module")
def bucket(moto: str) -> str:
    s3 = s3_client(moto)
    s3.create_bucket(Bucket="models")
    for path, data in FILES.items():
        extra = {"ChecksumAlgorithm": "SHA256"} if path == "config.json" else {}
        s3.put_object(Bucket="models", Key=f"llama/v1/{path}", Body=data, **extra)
    s3.put_object(Bucket="models", Key="llama/v1/", Body=b"")  # a "directory" marker some tools write
    return "models"


def test_an_s3_prefix_is_fetched_into_one_immutable_directory(moto: str, bucket: str, cache: Path) -> None:
    result = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=aws_env(moto)))
    assert result.returncode == 0, result.stderr
    key = keys.model_key(sources.parse_source("s3://models/llama/v1"))
    model = Path(wire.model_path(str(cache), key))
    for path, data in FILES.items():
        assert (model / path).read_bytes() == data
    assert model.resolve().parent == (cache / "store" / key).resolve()
    assert "downloaded" in (cache.parent / "pod-0.termination-log").read_text()
    again = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=aws_env(moto)))
    assert "cache hit" in again.stderr


def test_s3_include_patterns(moto: str, bucket: str, cache: Path) -> None:
    env = fetcher_environment("s3://models/llama/v1", cache, include=("*.json",), extra=aws_env(moto))
    assert run_fetcher(env).returncode == 0
    model = Path(env[wire.MODEL_PATH_ENV])
    assert sorted(p.name for p in model.rglob("*") if p.is_file()) == ["config.json", "tokenizer.json"]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        pytest.param("s3://models/nothing-here", "no objects under s3://models/nothing-here", id="empty-prefix"),
        pytest.param("s3://no-such-bucket/x", "not found", id="missing-bucket"),
    ],
)
def test_s3_not_found(moto: str, bucket: str, cache: Path, source: str, fragment: str) -> None:
    result = run_fetcher(fetcher_environment(source, cache, extra=aws_env(moto)))
    assert result.returncode == 3, result.stderr
    assert fragment in (cache.parent / "pod-0.termination-log").read_text()


def test_irsa_web_identity_credentials_are_used(moto: str, bucket: str, cache: Path, tmp_path: Path) -> None:
    """No static keys: boto3's chain assumes the role with the projected token, as on EKS with IRSA."""
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl")
    env = fetcher_environment(
        "s3://models/llama/v1",
        cache,
        include=("config.json",),
        extra={
            "AWS_ENDPOINT_URL": moto,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/model-reader",
            "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
            "AWS_ROLE_SESSION_NAME": "modelcache",
        },
    )
    result = run_fetcher(env)
    assert result.returncode == 0, result.stderr
    assert (Path(env[wire.MODEL_PATH_ENV]) / "config.json").read_bytes() == FILES["config.json"]


def test_without_any_credentials_the_message_says_where_to_put_them(moto: str, bucket: str, cache: Path) -> None:
    env = fetcher_environment(
        "s3://models/llama/v1",
        cache,
        extra={
            "AWS_ENDPOINT_URL": moto,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/nonexistent",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
        },
    )
    result = run_fetcher(env)
    assert result.returncode == 4, result.stderr
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert "no AWS credentials found" in message
    assert "IRSA" in message


def test_every_attempt_is_one_request_botocore_does_not_retry_under_ours(moto: str, bucket: str, cache: Path) -> None:
    with FaultProxy(moto).running() as proxy:
        proxy.rules.append(Rule("GET", "/models/llama/v1/weights/model.safetensors", times=100, status=503))
        env = {**aws_env(proxy.url), "MODELCACHE_RETRIES": "3"}
        result = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=env))
    assert result.returncode == 8, result.stderr
    assert proxy.count("GET", "weights/model.safetensors") == 3  # our 3 attempts, one request each
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert "failed 3 times" in message
    assert proxy.url in message  # the endpoint is named
    assert not (cache / "store").exists() or not any((cache / "store").iterdir())


def test_a_listing_that_fails_for_a_while_is_retried_by_our_policy(moto: str, bucket: str, cache: Path) -> None:
    with FaultProxy(moto).running() as proxy:
        proxy.rules.append(Rule("GET", "/models", times=2, status=500))  # ListObjectsV2 is a GET on the bucket
        result = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=aws_env(proxy.url)))
    assert result.returncode == 0, result.stderr
    assert proxy.count("GET", "/models") == 3
    assert "retrying in" in result.stderr


def test_an_object_replaced_after_the_listing_is_refused_not_mixed(moto: str, bucket: str, cache: Path) -> None:
    s3 = s3_client(moto)

    def replace_it() -> None:
        s3.put_object(Bucket="models", Key="llama/v1/tokenizer.json", Body=b'{"replaced": true}')

    try:
        with FaultProxy(moto).running() as proxy:
            proxy.rules.append(Rule("GET", "/models/llama/v1/tokenizer.json", times=1, hook=replace_it))
            result = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=aws_env(proxy.url)))
        assert result.returncode == 8, result.stderr
        message = (cache.parent / "pod-0.termination-log").read_text()
        assert "changed since it was listed" in message
        key = keys.model_key(sources.parse_source("s3://models/llama/v1"))
        assert not (cache / "ready" / key).exists()  # nothing of either version was published
    finally:
        s3.put_object(Bucket="models", Key="llama/v1/tokenizer.json", Body=FILES["tokenizer.json"])


def test_an_s3_prefix_with_a_key_inside_a_key_is_refused_at_resolve(moto: str, bucket: str, cache: Path) -> None:
    s3 = s3_client(moto)
    s3.put_object(Bucket="models", Key="odd/sub", Body=b"a")  # S3 holds both; no directory can
    s3.put_object(Bucket="models", Key="odd/sub/inner", Body=b"b")
    result = run_fetcher(fetcher_environment("s3://models/odd", cache, extra=aws_env(moto)))
    assert result.returncode == 5, result.stderr
    message = (cache.parent / "pod-0.termination-log").read_text()
    assert "s3://models/odd lists both a file 'sub' and a file 'sub/inner' inside it" in message
    assert not [p for p in (cache / ".modelcache" / "staging").rglob("*") if p.is_file()]


def test_a_large_object_comes_over_ranged_requests(moto: str, bucket: str, cache: Path) -> None:
    """S3 serves ranges: the 9 MiB object in 1 MiB chunks, each verified by its sha256 before publication."""
    extra = {**aws_env(moto), "MODELCACHE_RANGE_CHUNK": "1Mi", "MODELCACHE_WORKERS": "4"}
    with FaultProxy(moto).running() as proxy:
        extra["AWS_ENDPOINT_URL"] = proxy.url
        result = run_fetcher(fetcher_environment("s3://models/llama/v1", cache, extra=extra))
        ranges = proxy.count("GET", "model.safetensors")
    assert result.returncode == 0, result.stderr
    key = keys.model_key(sources.parse_source("s3://models/llama/v1"))
    assert (Path(wire.model_path(str(cache), key)) / "weights/model.safetensors").read_bytes() == WEIGHTS
    assert ranges == 9  # one request per chunk
