"""Model sources: what ``modelcache.io/model`` may name, parsed strictly.

``hf://org/name[@revision]``, ``s3://bucket/prefix`` and ``https://host/path`` (``http://`` only where the
webhook's settings allow it). A value that is not what we expect raises :class:`ContractError`, whose
message names the annotation, the value, what was expected and an example. Anything that could escape
a directory (``..``, absolute paths, NUL, control characters, non-ASCII look-alikes, over-long values)
or leak a credential (user info, signed query parameters) is refused before it reaches a path, an env
var or a log line.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Literal

from modelcache.contract.annotation import MAX_URI_LENGTH, MODEL_ANNOTATION, SECRET_ANNOTATION, require_plain_ascii
from modelcache.contract.errors import ContractError
from modelcache.contract.wire import HTTP_AUTHORIZATION_ENV

_HUB_EXPECTED = "hf://<org>/<name>[@<revision>]"
_HUB_EXAMPLE = "hf://Qwen/Qwen3-0.6B@main"
_S3_EXPECTED = "s3://<bucket>/<prefix>"
_S3_EXAMPLE = "s3://models/llama-3.1-8b"
_HTTP_EXPECTED = "https://<host>/<path to one file>[#sha256=<64 hex digits>]"
_HTTP_EXAMPLE = "https://models.example.com/gpt2/model.safetensors#sha256=" + "0" * 64
_SOURCE_EXPECTED = f"one of {_HUB_EXPECTED}, {_S3_EXPECTED} or {_HTTP_EXPECTED}"

DEFAULT_REVISION = "main"
_HUB_PART = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")
_HUB_MAX_ID = 96
_REVISION = re.compile(r"[A-Za-z0-9._/-]{1,200}")
_COMMIT = re.compile(r"[0-9a-f]{40}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_S3_KEY_PART = re.compile(r"[A-Za-z0-9._=+,@!()'-]+")
_S3_MAX_PREFIX = 1024
_DNS_LABEL_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+=,@()-]{0,254}")
# Query parameters that carry credentials: a signed URL in an annotation leaks to every reader of the pod.
_CREDENTIAL_PARAMS = frozenset(
    {
        "x-amz-signature",
        "x-amz-credential",
        "x-amz-security-token",
        "x-goog-signature",
        "x-goog-credential",
        "sig",
        "signature",
        "token",
        "access_token",
        "api_key",
        "apikey",
        "key",
        "password",
    }
)


@dataclass(frozen=True, slots=True)
class HubSource:
    """A model repository on the Hugging Face Hub (or a Hub-compatible server)."""

    repo_id: str
    revision: str = DEFAULT_REVISION
    scheme: Literal["hf"] = "hf"

    @property
    def uri(self) -> str:
        return f"hf://{self.repo_id}@{self.revision}"

    @property
    def identity(self) -> str:
        return self.uri

    @property
    def pinned(self) -> bool:
        """True when the revision is a full commit id, so nothing can drift."""
        return _COMMIT.fullmatch(self.revision) is not None

    @property
    def slug_parts(self) -> tuple[str, ...]:
        org, name = self.repo_id.split("/")
        return ("hf", org, name, self.revision)


@dataclass(frozen=True, slots=True)
class S3Source:
    """Every object under a prefix of an S3 (or S3-compatible) bucket."""

    bucket: str
    prefix: str
    scheme: Literal["s3"] = "s3"

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def identity(self) -> str:
        return self.uri

    @property
    def slug_parts(self) -> tuple[str, ...]:
        return ("s3", self.bucket, *self.prefix.split("/")[-2:])


@dataclass(frozen=True, slots=True)
class HttpSource:
    """One file behind an HTTPS URL, optionally pinned by its sha256."""

    url: str
    file_name: str
    sha256: str | None = None
    scheme: Literal["https", "http"] = "https"

    @property
    def uri(self) -> str:
        return f"{self.url}#sha256={self.sha256}" if self.sha256 else self.url

    @property
    def identity(self) -> str:
        return self.url

    @property
    def slug_parts(self) -> tuple[str, ...]:
        host = urllib.parse.urlsplit(self.url).hostname or ""
        return ("http", host, self.file_name)


Source = HubSource | S3Source | HttpSource


def parse_source(value: str, *, allow_http: bool = False) -> Source:
    """Parse the ``modelcache.io/model`` annotation into a source."""
    require_plain_ascii(MODEL_ANNOTATION, value, MAX_URI_LENGTH, expected=_SOURCE_EXPECTED, example=_HUB_EXAMPLE)
    scheme, sep, _ = value.partition("://")
    if not sep:
        raise ContractError(
            MODEL_ANNOTATION, value, "it has no scheme", expected=_SOURCE_EXPECTED, example=_HUB_EXAMPLE
        )
    scheme = scheme.lower()
    if scheme == "hf":
        return _parse_hub(value)
    if scheme == "s3":
        return _parse_s3(value)
    if scheme == "https" or (scheme == "http" and allow_http):
        return _parse_http(value)
    problem = f"the scheme {scheme!r} is not supported"
    if scheme == "http":
        problem = "plain http is not allowed (the download could be tampered with on the way); use https"
    raise ContractError(MODEL_ANNOTATION, value, problem, expected=_SOURCE_EXPECTED, example=_HUB_EXAMPLE)


def _hub_error(value: str, problem: str) -> ContractError:
    return ContractError(MODEL_ANNOTATION, value, problem, expected=_HUB_EXPECTED, example=_HUB_EXAMPLE)


def _parse_hub(value: str) -> HubSource:
    rest = value[len("hf://") :]
    repo_id, at, revision = rest.partition("@")
    if at and not revision:
        raise _hub_error(value, "the revision after '@' is empty")
    parts = repo_id.split("/")
    if len(parts) != 2:
        hint = (
            "it needs an organisation and a name; ids without one, such as gpt2, now live under an "
            "organisation (openai-community/gpt2)"
            if len(parts) == 1
            else "a repository id has exactly one '/' (datasets and spaces are not models)"
        )
        raise _hub_error(value, hint)
    for part in parts:
        if not _HUB_PART.fullmatch(part):
            raise _hub_error(
                value,
                f"{part!r} is not a valid Hub name (letters, digits, '-', '_', '.', "
                "starting and ending with a letter, digit or '_')",
            )
    if "--" in repo_id or ".." in repo_id or repo_id.endswith(".git") or len(repo_id) > _HUB_MAX_ID:
        raise _hub_error(
            value,
            f"repository ids may not contain '--' or '..', end in '.git' or exceed {_HUB_MAX_ID} characters",
        )
    if at:
        _check_revision(value, revision)
        return HubSource(repo_id=repo_id, revision=revision)
    return HubSource(repo_id=repo_id)


def _check_revision(value: str, revision: str) -> None:
    """Git ref-name rules, narrowed to characters that are safe in a path."""
    bad = not _REVISION.fullmatch(revision)
    components = revision.split("/")
    bad = bad or any(not c or c.startswith(".") or c.endswith(".lock") for c in components)
    bad = bad or ".." in revision or revision.endswith(".")
    if bad:
        raise _hub_error(
            value,
            f"the revision {revision!r} is not a valid branch, tag or commit "
            "(letters, digits, '.', '_', '-', '/'; no '..', empty or dot-led parts; at most 200 characters)",
        )


def _s3_error(value: str, problem: str) -> ContractError:
    return ContractError(MODEL_ANNOTATION, value, problem, expected=_S3_EXPECTED, example=_S3_EXAMPLE)


def _parse_s3(value: str) -> S3Source:
    rest = value[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
        raise _s3_error(
            value,
            f"{bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.', '-', "
            "starting and ending with a letter or digit, not an IP address)",
        )
    prefix = prefix.rstrip("/")
    if len(prefix) > _S3_MAX_PREFIX:
        raise _s3_error(value, f"the prefix is longer than {_S3_MAX_PREFIX} characters")
    if prefix:
        for part in prefix.split("/"):
            if part in ("", ".", "..") or not _S3_KEY_PART.fullmatch(part):
                raise _s3_error(
                    value,
                    f"the prefix part {part!r} is not allowed (letters, digits and . _ = + , @ ! ( ) ' -; "
                    "no empty, '.' or '..' parts)",
                )
    return S3Source(bucket=bucket, prefix=prefix)


def _http_error(value: str, problem: str) -> ContractError:
    return ContractError(MODEL_ANNOTATION, value, problem, expected=_HTTP_EXPECTED, example=_HTTP_EXAMPLE)


def _parse_http(value: str) -> HttpSource:
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as err:
        raise _http_error(_redact_userinfo(value), f"it is not a valid URL ({err})") from err
    if "@" in parts.netloc:
        # Never echo the value: the part before '@' is a user name and maybe a password.
        raise _http_error(
            _redact_userinfo(value),
            "credentials in the URL would be readable by anyone who can read the pod; put an "
            f"Authorization header value under key {HTTP_AUTHORIZATION_ENV} in the Secret named by "
            f"{SECRET_ANNOTATION}",
        )
    host = parts.hostname or ""
    if not _valid_host(host):
        raise _http_error(value, f"{host!r} is not a valid host name or IP address")
    if port == 0:
        raise _http_error(value, "port 0 is not a valid port")
    _check_http_path(value, parts.path)
    _check_query(value, parts.query)
    sha256 = _parse_fragment(value, parts.fragment)
    file_name = urllib.parse.unquote(parts.path.rsplit("/", 1)[-1])
    netloc = host.lower() if port is None else f"{host.lower()}:{port}"
    if ":" in host:
        netloc = f"[{host.lower()}]" if port is None else f"[{host.lower()}]:{port}"
    url = urllib.parse.urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, ""))
    scheme: Literal["https", "http"] = "https" if parts.scheme.lower() == "https" else "http"
    return HttpSource(url=url, file_name=file_name, sha256=sha256, scheme=scheme)


def _redact_userinfo(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "<redacted>@" + authority.rsplit("@", 1)[1]
    return f"{scheme}{sep}{authority}{slash}{tail}"


def _valid_host(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    if ":" in host:  # an IPv6 literal, already unbracketed by urlsplit
        return re.fullmatch(r"[0-9a-fA-F:.]+", host) is not None
    return all(_DNS_LABEL_HOST.fullmatch(label) for label in host.rstrip(".").split("."))


def _check_http_path(value: str, path: str) -> None:
    if not path or path.endswith("/"):
        raise _http_error(value, "the URL must name one file, not a directory")
    for segment in path.split("/")[1:]:
        decoded = urllib.parse.unquote(segment)
        if decoded in (".", "..") or "/" in decoded or "\\" in decoded or "\x00" in decoded:
            raise _http_error(value, f"the path segment {segment!r} is not allowed")
    name = urllib.parse.unquote(path.rsplit("/", 1)[-1])
    if not _FILE_NAME.fullmatch(name):
        raise _http_error(
            value,
            f"the file name {name!r} is not a safe file name (letters, digits and . _ + = , @ ( ) -, "
            "not starting with '.' or '-')",
        )


def _check_query(value: str, query: str) -> None:
    for name, _ in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name.lower() in _CREDENTIAL_PARAMS:
            raise _http_error(
                value.split("?", 1)[0] + "?<redacted>",
                f"the query parameter {name!r} carries a credential, which would be readable by anyone "
                f"who can read the pod; put an Authorization header value under key {HTTP_AUTHORIZATION_ENV} "
                f"in the Secret named by {SECRET_ANNOTATION}",
            )


def _parse_fragment(value: str, fragment: str) -> str | None:
    if not fragment:
        return None
    name, eq, digest = fragment.partition("=")
    if name != "sha256" or not eq or not _SHA256.fullmatch(digest):
        raise _http_error(value, "the fragment must be '#sha256=' followed by 64 hex digits")
    return digest.lower()
