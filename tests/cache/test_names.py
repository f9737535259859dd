"""Names that come from a remote never become paths outside the model."""

from __future__ import annotations

import pytest

from modelcache.cache.layout import blob_name
from modelcache.cache.markers import check_remote_path
from modelcache.contract.errors import IntegrityError


@pytest.mark.parametrize(
    ("sha256", "git_sha1"),
    [("../../etc/passwd", None), (None, "x" * 40), ("A" * 63, None), (None, None), ("a" * 64 + "/", None)],
)
def test_a_digest_that_is_not_a_digest_is_refused(sha256: str | None, git_sha1: str | None) -> None:
    with pytest.raises(IntegrityError, match="not a sha256 or git sha1"):
        blob_name(sha256, git_sha1)


def test_digests_name_blobs_in_lowercase() -> None:
    assert blob_name("AB" * 32, None) == "ab" * 32
    assert blob_name(None, "0123456789abcdef0123456789abcdef01234567") == "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "path",
    ["../x", "/etc/passwd", "a/../../b", "a//b", "a\\b", "a\x00b", "a/\x1bb", "weights.bin.part", "", "./a", "a/."],
)
def test_remote_paths_that_could_escape_are_refused(path: str) -> None:
    with pytest.raises(IntegrityError, match="could escape"):
        check_remote_path(path, source="hf://org/model")


@pytest.mark.parametrize("path", ["model.safetensors", "tokenizer/vocab.json", "onnx/model (1).onnx", "日本語.txt"])
def test_ordinary_remote_paths_pass(path: str) -> None:
    assert check_remote_path(path, source="hf://org/model") == path
