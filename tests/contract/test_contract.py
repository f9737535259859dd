"""The annotation contract: what parses, what does not, and what the error says."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelcache.contract import annotation, keys, sources, wire
from modelcache.contract.errors import ContractError
from modelcache.contract.sources import HttpSource, HubSource, S3Source


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("hf://Qwen/Qwen3-0.6B", HubSource("Qwen/Qwen3-0.6B", "main"), id="hub-default-revision"),
        pytest.param("hf://Qwen/Qwen3-0.6B@v1.0", HubSource("Qwen/Qwen3-0.6B", "v1.0"), id="hub-tag"),
        pytest.param("hf://org/name@refs/pr/4", HubSource("org/name", "refs/pr/4"), id="hub-pr-ref"),
        pytest.param("HF://org/m_1.x@" + "a" * 40, HubSource("org/m_1.x", "a" * 40), id="hub-commit-scheme-case"),
        pytest.param("s3://models/llama/3.1/", S3Source("models", "llama/3.1"), id="s3-trailing-slash"),
        pytest.param("s3://my.bucket-1", S3Source("my.bucket-1", ""), id="s3-whole-bucket"),
        pytest.param("s3://b12/k=v/part(1)", S3Source("b12", "k=v/part(1)"), id="s3-hive-style"),
        pytest.param(
            "https://Models.Example.com:8443/a/b.gguf?v=2#sha256=" + "AB" * 32,
            HttpSource("https://models.example.com:8443/a/b.gguf?v=2", "b.gguf", "ab" * 32),
            id="https-port-query-digest",
        ),
        pytest.param("https://[::1]/m.bin", HttpSource("https://[::1]/m.bin", "m.bin"), id="https-ipv6"),
        pytest.param("https://h/x%2Bv.bin", HttpSource("https://h/x%2Bv.bin", "x+v.bin"), id="https-encoded-name"),
    ],
)
def test_valid_sources_parse(value: str, expected: sources.Source) -> None:
    assert sources.parse_source(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("", "it is empty", id="empty"),
        pytest.param("Qwen/Qwen3-0.6B", "has no scheme", id="no-scheme"),
        pytest.param("gs://b/p", "scheme 'gs' is not supported", id="unknown-scheme"),
        pytest.param("http://h/m.bin", "plain http is not allowed", id="plain-http"),
        pytest.param("hf://gpt2", "openai-community/gpt2", id="hub-no-org"),
        pytest.param("hf://a/b/c", "exactly one '/'", id="hub-three-parts"),
        pytest.param("hf://../etc", "is not a valid Hub name", id="hub-dotdot-org"),
        pytest.param("hf://org/..", "is not a valid Hub name", id="hub-dotdot-name"),
        pytest.param("hf://org/a..b", "may not contain '--' or '..'", id="hub-inner-dotdot"),
        pytest.param("hf://org/a--b", "may not contain '--' or '..'", id="hub-double-dash"),
        pytest.param("hf://org/-x", "is not a valid Hub name", id="hub-leading-dash"),
        pytest.param("hf://org/" + "x" * 100, "exceed 96", id="hub-too-long"),
        pytest.param("hf://org/name@", "revision after '@' is empty", id="hub-empty-revision"),
        pytest.param("hf://org/name@../../x", "not a valid branch", id="revision-traversal"),
        pytest.param("hf://org/name@a//b", "not a valid branch", id="revision-empty-part"),
        pytest.param("hf://org/name@.hidden", "not a valid branch", id="revision-dot-led"),
        pytest.param("hf://org/name@x.lock", "not a valid branch", id="revision-lock"),
        pytest.param("hf://org/name@a b", "contains a space", id="revision-space"),
        pytest.param("hf://org/name\x00", "U+0000", id="nul"),
        pytest.param("hf://org/name\n", "U+000A", id="newline"),
        pytest.param("hf://org\u2215name", "U+2215", id="unicode-division-slash"),
        pytest.param("hf://org/n\u0430me", "U+0430", id="cyrillic-homoglyph"),
        pytest.param("hf://org/name\u202e", "U+202E", id="right-to-left-override"),
        pytest.param("hf://org/" + "a" * 3000, "longer than 2048", id="huge"),
        pytest.param("s3://Bad_Bucket/x", "not a valid bucket name", id="s3-bad-bucket"),
        pytest.param("s3://192.168.1.1/x", "not a valid bucket name", id="s3-ip-bucket"),
        pytest.param("s3://ab/x", "not a valid bucket name", id="s3-short-bucket"),
        pytest.param("s3://b12/a/../b", "prefix part '..'", id="s3-traversal"),
        pytest.param("s3://b12/a//b", "prefix part ''", id="s3-empty-part"),
        pytest.param("s3://b12/a\\b", "prefix part", id="s3-backslash"),
        pytest.param("https://h/", "one file, not a directory", id="https-directory"),
        pytest.param("https://h/a/%2e%2e/b", "path segment '%2e%2e'", id="https-encoded-traversal"),
        pytest.param("https://h/a%2Fb", "path segment 'a%2Fb'", id="https-encoded-slash"),
        pytest.param("https://h/.env", "not a safe file name", id="https-dot-file"),
        pytest.param("https://h/m.bin#md5=abc", "'#sha256='", id="https-wrong-digest"),
        pytest.param("https://h/m.bin#sha256=abc", "'#sha256='", id="https-short-digest"),
        pytest.param("https://h_x/m.bin", "not a valid host", id="https-bad-host"),
        pytest.param("https://h:0/m.bin", "port 0", id="https-port-zero"),
        pytest.param("https://h:99999/m.bin", "not a valid URL", id="https-port-range"),
    ],
)
def test_invalid_sources_say_what_is_wrong(value: str, message: str) -> None:
    with pytest.raises(ContractError) as caught:
        sources.parse_source(value)
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"annotation {annotation.MODEL_ANNOTATION}=")
    assert "Expected " in text
    assert "for example" in text


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("https://alice:hunter2@h.example/m.bin", id="userinfo"),
        pytest.param("https://h.example/m.bin?X-Amz-Signature=hunter2&X-Amz-Credential=AK", id="presigned-s3"),
        pytest.param("https://h.example/m.bin?sig=hunter2&se=2030", id="azure-sas"),
        pytest.param("https://h.example/m.bin?token=hunter2", id="token-param"),
    ],
)
def test_credentials_in_urls_are_refused_and_never_echoed(value: str) -> None:
    with pytest.raises(ContractError) as caught:
        sources.parse_source(value)
    assert "hunter2" not in str(caught.value)
    assert wire.HTTP_AUTHORIZATION_ENV in str(caught.value)


def test_plain_http_only_when_allowed() -> None:
    assert sources.parse_source("http://mirror.internal/m.bin", allow_http=True) == HttpSource(
        "http://mirror.internal/m.bin", "m.bin", scheme="http"
    )


def test_long_values_are_cut_in_messages() -> None:
    with pytest.raises(ContractError) as caught:
        sources.parse_source("hf://" + "x" * 5000)
    assert len(str(caught.value)) < 600
    assert "(5005 characters)" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("*.safetensors", ("*.safetensors",), id="one"),
        pytest.param("*.json, *.safetensors,*.json", ("*.json", "*.safetensors"), id="sorted-deduplicated-spaces"),
        pytest.param("tokenizer/*,[ab]?.bin", ("[ab]?.bin", "tokenizer/*"), id="classes-and-dirs"),
    ],
)
def test_include_patterns(value: str, expected: tuple[str, ...]) -> None:
    assert annotation.parse_include(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(" , ", id="only-commas"),
        pytest.param("../x", id="traversal"),
        pytest.param("/etc/*", id="absolute"),
        pytest.param("a/./b", id="dot-part"),
        pytest.param("x;rm -rf", id="shell"),
        pytest.param(",".join(f"p{i}" for i in range(65)), id="too-many"),
    ],
)
def test_bad_include_patterns(value: str) -> None:
    with pytest.raises(ContractError, match=re.escape(annotation.INCLUDE_ANNOTATION)):
        annotation.parse_include(value)


@pytest.mark.parametrize("value", ["/models", "/opt/ml/model", "/data/hf-cache", "/var/lib/models"])
def test_good_mount_paths(value: str) -> None:
    assert annotation.parse_mount_path(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "models",
        "/",
        "/models/",
        "/a/../etc",
        "//models",
        "/etc",
        "/etc/models",
        "/proc/x",
        "/tmp",
        "/run/x",
        "/var/run/secrets/kubernetes.io",
        "/dev/shm",
        "/usr/local/models",
        "/mo dels",
        "/mo:dels",
    ],
)
def test_bad_mount_paths(value: str) -> None:
    with pytest.raises(ContractError, match=re.escape(annotation.MOUNT_PATH_ANNOTATION)):
        annotation.parse_mount_path(value)


def test_container_names() -> None:
    assert annotation.parse_container_names("vllm, router,vllm") == ("vllm", "router")
    with pytest.raises(ContractError, match="'Vllm' is not a container name"):
        annotation.parse_container_names("Vllm")
    with pytest.raises(ContractError, match="'' is not a container name"):
        annotation.parse_container_names("a,,b")


def test_secret_names() -> None:
    assert annotation.parse_secret_name("hf-token.v2") == "hf-token.v2"
    for bad in ("HF_TOKEN", "-x", "a/b", "x" * 254):
        with pytest.raises(ContractError, match=re.escape(annotation.SECRET_ANNOTATION)):
            annotation.parse_secret_name(bad)


@pytest.mark.parametrize(
    ("value", "kind", "amount"),
    [
        pytest.param("500m", "cpu", Decimal("0.5"), id="millicores"),
        pytest.param("2", "cpu", Decimal(2), id="cores"),
        pytest.param("1.5", "cpu", Decimal("1.5"), id="fraction"),
        pytest.param("8Gi", "memory", Decimal(8 * 2**30), id="gibibytes"),
        pytest.param("1G", "memory", Decimal(10**9), id="gigabytes"),
        pytest.param("1e3", "memory", Decimal(1000), id="exponent"),
    ],
)
def test_quantities(value: str, kind: str, amount: Decimal) -> None:
    assert annotation.parse_quantity(value, annotation="a", kind=kind) == amount  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("0", "cpu"),
        ("-1", "cpu"),
        ("1.5.5", "cpu"),
        ("1n", "cpu"),
        ("1Gb", "memory"),
        ("0.5", "memory"),
        ("lots", "memory"),
    ],
)
def test_bad_quantities(value: str, kind: str) -> None:
    with pytest.raises(ContractError):
        annotation.parse_quantity(value, annotation="a", kind=kind)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "result"),
    [
        ("true", True),
        ("TRUE", True),
        (" 1 ", True),
        ("Yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("", False),
        ("enabled", False),
    ],
)
def test_opt_out_values(value: str, result: bool) -> None:
    assert wire.is_true(value) is result


def test_same_source_meets_the_same_key() -> None:
    implicit = keys.model_key(sources.parse_source("hf://Qwen/Qwen3-0.6B"))
    assert implicit == keys.model_key(sources.parse_source("hf://Qwen/Qwen3-0.6B@main"))
    assert implicit == keys.model_key(sources.parse_source("HF://Qwen/Qwen3-0.6B"))
    assert keys.model_key(sources.parse_source("s3://b12/p/")) == keys.model_key(sources.parse_source("s3://b12/p"))
    digest = "#sha256=" + "a" * 64
    assert keys.model_key(sources.parse_source("https://H/m.bin")) == keys.model_key(
        sources.parse_source("https://h/m.bin" + digest)
    )
    assert keys.model_key(sources.parse_source("hf://o/n"), ("*.json", "*.bin")) == keys.model_key(
        sources.parse_source("hf://o/n"), ("*.bin", "*.json")
    )


def test_different_sources_get_different_keys() -> None:
    made = {
        keys.model_key(sources.parse_source("hf://Qwen/Qwen3-0.6B")),
        keys.model_key(sources.parse_source("hf://qwen/qwen3-0.6b")),  # case matters on the Hub's ids we send
        keys.model_key(sources.parse_source("hf://Qwen/Qwen3-0.6B@v2")),
        keys.model_key(sources.parse_source("hf://Qwen/Qwen3-0.6B"), ("*.json",)),
        keys.model_key(sources.parse_source("s3://qwen/Qwen3-0.6B")),
        keys.model_key(sources.parse_source("https://qwen/Qwen3-0.6B")),
    }
    assert len(made) == 6


def test_keys_are_label_values_and_path_components() -> None:
    key = keys.model_key(sources.parse_source("hf://" + "A" * 40 + "/" + "b" * 50 + "@refs/pr/12345"))
    assert len(key) <= 63
    assert re.fullmatch(r"[a-z0-9]([a-z0-9._-]*[a-z0-9])?", key)
    assert keys.check_model_key(key) == key
    assert wire.model_path("/models", key) == f"/models/ready/{key}"
    assert wire.hub_cache_path("/models") == "/models/hub"


@pytest.mark.parametrize("bad", ["../x_0123456789abcdef", "a/b_0123456789abcdef", "x", "A_0123456789abcdef"])
def test_check_model_key_refuses_what_model_key_never_makes(bad: str) -> None:
    with pytest.raises(ValueError, match="not a model key"):
        keys.check_model_key(bad)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=300) | st.from_regex(r"(hf|s3|https)://[ -~]{0,80}", fullmatch=True))
def test_fuzzed_sources_either_parse_safely_or_raise_contract_error(value: str) -> None:
    try:
        source = sources.parse_source(value)
    except ContractError as err:
        message = str(err)
        assert message.startswith("annotation ")
        return
    key = keys.check_model_key(keys.model_key(source))
    assert "/" not in key
    assert ".." not in key
    assert ".." not in source.uri.split("://", 1)[1].split("/")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_fuzzed_annotations_never_escape(value: str) -> None:
    for parse in (
        annotation.parse_include,
        annotation.parse_mount_path,
        annotation.parse_container_names,
        annotation.parse_secret_name,
    ):
        try:
            result = parse(value)
        except ContractError:
            continue
        items = result if isinstance(result, tuple) else (result,)
        for item in items:
            assert ".." not in item.split("/")
            assert all("!" <= ch <= "~" for ch in item)
