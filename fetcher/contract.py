"""The annotation contract shared by the webhook and the fetcher.

Standard library only: the webhook imports this module and nothing else of the fetcher.

A pod opts in with ``modelcache.io/model``; the other ``modelcache.io/*`` annotations refine what it
gets. Every parser here is strict: a value that is not what we expect raises :class:`ContractError`,
whose message names the annotation, the value, what was expected and an example. Anything that
could escape a directory (``..``, absolute paths, NUL, control characters, non-ASCII look-alikes,
over-long values) is refused before it reaches a path, an env var or a log line.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import urllib.parse
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

# --- annotation keys ------------------------------------------------------------------------------
ANNOTATION_PREFIX = "modelcache.io/"
MODEL_ANNOTATION = "modelcache.io/model"
INCLUDE_ANNOTATION = "modelcache.io/include"
MOUNT_PATH_ANNOTATION = "modelcache.io/mount-path"
CONTAINERS_ANNOTATION = "modelcache.io/containers"
SECRET_ANNOTATION = "modelcache.io/secret"  # noqa: S105 (an annotation name, not a secret)
CPU_REQUEST_ANNOTATION = "modelcache.io/fetcher-cpu-request"
CPU_LIMIT_ANNOTATION = "modelcache.io/fetcher-cpu-limit"
MEMORY_REQUEST_ANNOTATION = "modelcache.io/fetcher-memory-request"
MEMORY_LIMIT_ANNOTATION = "modelcache.io/fetcher-memory-limit"
# For prefetch Jobs (`modelcache refresh --job`): the fetcher re-resolves a branch or tag to its newest
# commit even when the model is ready. Not for Deployments: every pod start would ask the source.
REFRESH_ANNOTATION = "modelcache.io/refresh"
KNOWN_ANNOTATIONS = frozenset(
    {
        MODEL_ANNOTATION,
        INCLUDE_ANNOTATION,
        MOUNT_PATH_ANNOTATION,
        CONTAINERS_ANNOTATION,
        SECRET_ANNOTATION,
        CPU_REQUEST_ANNOTATION,
        CPU_LIMIT_ANNOTATION,
        MEMORY_REQUEST_ANNOTATION,
        MEMORY_LIMIT_ANNOTATION,
        REFRESH_ANNOTATION,
    }
)

# The label the webhook puts on injected pods, so that "which pods use this model" is one selector.
MODEL_KEY_LABEL = "modelcache.io/model-key"

# --- names the webhook reserves in a pod -----------------------------------------------------------
FETCHER_CONTAINER_NAME = "modelcache-fetch"
CACHE_VOLUME_NAME = "modelcache"
SCRATCH_VOLUME_NAME = "modelcache-tmp"
SCRATCH_MOUNT_PATH = "/tmp"  # noqa: S108 (a private emptyDir: the root filesystem is read-only)
# The pod's pin: a small emptyDir where the fetcher links the exact version it made ready; the app's
# MODEL_PATH is that link, so a refresh of the model never moves what a running pod reads. Under /run,
# which no mount path may use (parse_mount_path), so it never collides with the cache.
PIN_VOLUME_NAME = "modelcache-pin"
PIN_MOUNT_PATH = "/run/modelcache"
PIN_PATH = PIN_MOUNT_PATH + "/model"

# --- env ----------------------------------------------------------------------------------------------
OPT_OUT_ENV = "AIOLI_DISABLE_MODEL_CACHE"
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})

# What the app containers get.
MODEL_PATH_ENV = "MODEL_PATH"
HF_HUB_CACHE_ENV = "HF_HUB_CACHE"
HF_HUB_OFFLINE_ENV = "HF_HUB_OFFLINE"

# What the fetcher reads (set on the init container by the webhook).
SOURCE_ENV = "MODELCACHE_SOURCE"
MODEL_KEY_ENV = "MODELCACHE_MODEL_KEY"
INCLUDE_ENV = "MODELCACHE_INCLUDE"
CACHE_ROOT_ENV = "MODELCACHE_CACHE_ROOT"
SHARED_CACHE_ENV = "MODELCACHE_SHARED_CACHE"
POD_NAME_ENV = "MODELCACHE_POD_NAME"
POD_NAMESPACE_ENV = "MODELCACHE_POD_NAMESPACE"
NODE_NAME_ENV = "MODELCACHE_NODE_NAME"
HTTP_AUTHORIZATION_ENV = "MODELCACHE_HTTP_AUTHORIZATION"
ALLOW_HTTP_ENV = "MODELCACHE_ALLOW_HTTP"  # set for http:// sources, which the webhook accepted by setting
REFRESH_ENV = "MODELCACHE_REFRESH"
PIN_PATH_ENV = "MODELCACHE_PIN_PATH"  # where the fetcher links the version it made ready (the app's MODEL_PATH)
SECRET_NAME_ENV = "MODELCACHE_SECRET_NAME"  # noqa: S105 (a variable name; its value names the Secret in messages)

# Keys of the annotated Secret that reach the init container (and only it), each optional, by scheme:
# a pod that reads from S3 gets no HF_TOKEN even if the Secret has one.
SECRET_KEYS_BY_SCHEME: dict[str, tuple[str, ...]] = {
    "hf": ("HF_TOKEN",),
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    "https": (HTTP_AUTHORIZATION_ENV,),
    "http": (HTTP_AUTHORIZATION_ENV,),
}
SECRET_KEYS = tuple(dict.fromkeys(k for keys in SECRET_KEYS_BY_SCHEME.values() for k in keys))

# --- layout of the cache root that both sides must agree on -------------------------------------
HUB_DIR = "hub"  # a huggingface_hub cache: HF_HUB_CACHE points here
READY_DIR = "ready"  # ready/<key>: a link to the newest ready version (present = ready)

# --- limits ----------------------------------------------------------------------------------------
MAX_URI_LENGTH = 2048
MAX_ANNOTATION_VALUE_LENGTH = 4096
MAX_INCLUDE_PATTERNS = 64
MAX_PATTERN_LENGTH = 256
MAX_MOUNT_PATH_LENGTH = 256
MAX_KEY_LENGTH = 63  # fits a label value, so the key can label the pod
_SHOWN_VALUE_LENGTH = 120


class ContractError(ValueError):
    """An annotation value that does not follow the contract."""

    def __init__(self, annotation: str, value: str, problem: str, *, expected: str, example: str) -> None:
        self.annotation = annotation
        self.value = value
        self.problem = problem
        super().__init__(
            f"annotation {annotation}={show_value(value)} is invalid: {problem}. "
            f"Expected {expected}, for example {annotation}: {example!r}."
        )


def show_value(value: str) -> str:
    """Quote a value for a message: escaped, so control characters show, and cut if long."""
    if len(value) > _SHOWN_VALUE_LENGTH:
        return repr(value[:_SHOWN_VALUE_LENGTH]) + f"... ({len(value)} characters)"
    return repr(value)


# --- sources ---------------------------------------------------------------------------------------
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
    _require_plain_ascii(MODEL_ANNOTATION, value, MAX_URI_LENGTH, expected=_SOURCE_EXPECTED, example=_HUB_EXAMPLE)
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


# --- the other annotations -------------------------------------------------------------------------
_GLOB = re.compile(r"[A-Za-z0-9._*?/\[\]!+=,@()-]+")


def parse_include(value: str) -> tuple[str, ...]:
    """Parse ``modelcache.io/include``: comma-separated globs matched against paths in the model."""
    expected = "comma-separated relative glob patterns"
    example = "*.safetensors,*.json,tokenizer.model"
    _require_plain_ascii(
        INCLUDE_ANNOTATION,
        value,
        MAX_ANNOTATION_VALUE_LENGTH,
        expected=expected,
        example=example,
        spaces=True,
    )
    patterns = sorted({p.strip() for p in value.split(",") if p.strip()})
    if not patterns:
        raise ContractError(INCLUDE_ANNOTATION, value, "it names no pattern", expected=expected, example=example)
    if len(patterns) > MAX_INCLUDE_PATTERNS:
        raise ContractError(
            INCLUDE_ANNOTATION,
            value,
            f"it has {len(patterns)} patterns, more than {MAX_INCLUDE_PATTERNS}",
            expected=expected,
            example=example,
        )
    for pattern in patterns:
        parts = pattern.split("/")
        if (
            len(pattern) > MAX_PATTERN_LENGTH
            or not _GLOB.fullmatch(pattern)
            or pattern.startswith("/")
            or ".." in parts
            or "." in parts
        ):
            raise ContractError(
                INCLUDE_ANNOTATION,
                value,
                f"the pattern {pattern!r} is not a relative glob (letters, digits, * ? [ ] / . _ -; "
                f"no '..', at most {MAX_PATTERN_LENGTH} characters)",
                expected=expected,
                example=example,
            )
    return tuple(patterns)


_MOUNT_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
# Paths the model may not shadow: the system, the service-account token, the fetcher's scratch space.
_FORBIDDEN_MOUNT_ROOTS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/lib",
    "/lib32",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/tmp",  # noqa: S108 (a path we refuse, not one we write to)
    "/usr",
    "/var/run",
    "/var/lib/kubelet",
)


def parse_mount_path(value: str, *, annotation: str = MOUNT_PATH_ANNOTATION) -> str:
    """Parse a mount path: absolute, normalized, and not over a system directory."""
    expected = "an absolute, normalized directory path outside system directories"
    example = "/models"
    _require_plain_ascii(annotation, value, MAX_MOUNT_PATH_LENGTH, expected=expected, example=example)
    if not _MOUNT_PATH.fullmatch(value) or posixpath.normpath(value) != value or value.startswith("//"):
        raise ContractError(
            annotation,
            value,
            "it is not an absolute, normalized path of letters, digits, '.', '_', '-' and '/'",
            expected=expected,
            example=example,
        )
    if value == "/" or any(value == root or value.startswith(root + "/") for root in _FORBIDDEN_MOUNT_ROOTS):
        raise ContractError(
            annotation,
            value,
            "it would hide the root or a system directory of the container",
            expected=expected,
            example=example,
        )
    return value


_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")


def parse_container_names(value: str) -> tuple[str, ...]:
    """Parse ``modelcache.io/containers``: comma-separated container names."""
    expected = "comma-separated container names of the pod"
    example = "vllm,sidecar"
    _require_plain_ascii(
        CONTAINERS_ANNOTATION,
        value,
        MAX_ANNOTATION_VALUE_LENGTH,
        expected=expected,
        example=example,
        spaces=True,
    )
    names: list[str] = []
    for raw in value.split(","):
        name = raw.strip()
        if not _DNS_LABEL.fullmatch(name):
            raise ContractError(
                CONTAINERS_ANNOTATION,
                value,
                f"{name!r} is not a container name (lowercase letters, digits and '-', at most 63)",
                expected=expected,
                example=example,
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def parse_secret_name(value: str) -> str:
    """Parse ``modelcache.io/secret``: the name of a Secret in the pod's namespace."""
    expected = f"the name of a Secret in the pod's namespace with keys among {', '.join(SECRET_KEYS)}"
    example = "hf-token"
    _require_plain_ascii(SECRET_ANNOTATION, value, 253, expected=expected, example=example)
    if not _DNS_SUBDOMAIN.fullmatch(value):
        raise ContractError(
            SECRET_ANNOTATION,
            value,
            "it is not a Secret name (lowercase letters, digits, '-' and '.')",
            expected=expected,
            example=example,
        )
    return value


_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d*)?|\.\d+)(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE]\d+)?")
_SUFFIXES = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: str, *, annotation: str, kind: Literal["cpu", "memory"]) -> Decimal:
    """Parse a positive Kubernetes resource quantity ("500m", "2", "8Gi") into its value."""
    expected = "a positive Kubernetes quantity"
    example = "500m" if kind == "cpu" else "8Gi"
    _require_plain_ascii(annotation, value, 64, expected=expected, example=example)
    match = _QUANTITY.fullmatch(value)
    if match is None:
        raise ContractError(annotation, value, "it is not a Kubernetes quantity", expected=expected, example=example)
    suffix = match["suffix"] or ""
    try:
        scale = Decimal(10) ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIXES[suffix]
        amount = Decimal(match["number"]) * scale
    except (InvalidOperation, ValueError, OverflowError) as err:  # pragma: no cover - regex bounds it
        raise ContractError(
            annotation, value, "it is not a Kubernetes quantity", expected=expected, example=example
        ) from err
    if amount <= 0:
        raise ContractError(annotation, value, "it must be greater than zero", expected=expected, example=example)
    if kind == "cpu" and amount < Decimal("0.001"):
        raise ContractError(annotation, value, "the smallest CPU amount is 1m", expected=expected, example=example)
    if kind == "memory" and amount < 1:
        raise ContractError(annotation, value, "memory is counted in whole bytes", expected=expected, example=example)
    return amount


def parse_flag(value: str, *, annotation: str) -> bool:
    """An annotation that is true or false, strictly (a typo must not silently mean false)."""
    word = value.strip().lower()
    if word in ("true", "false"):
        return word == "true"
    raise ContractError(annotation, value, "it is not a boolean", expected='"true" or "false"', example="true")


def is_true(value: str) -> bool:
    """The opt-out reading of an env value: true/1/yes/on in any case, with spaces around ignored."""
    return value.strip().lower() in TRUE_WORDS


# --- model key and paths -----------------------------------------------------------------------------
_SLUG_UNSAFE = re.compile(r"[^a-z0-9.-]+")
_HASH_LENGTH = 16


def model_key(source: Source, include: tuple[str, ...] = ()) -> str:
    """A stable, filesystem- and label-safe key: every pod naming the same source meets the same entry.

    Readable slug, then a hash of the exact source identity and include patterns, which is what makes
    keys unique (the slug is lowercased and cut to fit a 63-character label value).
    """
    material = source.identity + "\n" + "\n".join(sorted(set(include)))
    digest = hashlib.sha256(material.encode()).hexdigest()[:_HASH_LENGTH]
    parts = [_SLUG_UNSAFE.sub("-", part.lower()).strip("-.") for part in source.slug_parts]
    slug = "_".join(part for part in parts if part)
    slug = slug[: MAX_KEY_LENGTH - _HASH_LENGTH - 1].rstrip("_.-")
    return f"{slug}_{digest}"


_KEY = re.compile(r"[a-z0-9][a-z0-9._-]{0,45}_[0-9a-f]{16}")


def check_model_key(key: str) -> str:
    """Validate a key read back from the environment: it becomes a path component."""
    if len(key) > MAX_KEY_LENGTH or not _KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a model key as model_key() makes them")
    return key


def model_path(cache_root: str, key: str) -> str:
    """The cache's link to the ready model (ready/<key>): the fetcher makes it point at the newest
    ready version. Apps get PIN_PATH instead, the version their own pod's fetcher found."""
    return posixpath.join(cache_root, READY_DIR, key)


def hub_cache_path(cache_root: str) -> str:
    """The huggingface_hub cache inside the cache root (HF_HUB_CACHE)."""
    return posixpath.join(cache_root, HUB_DIR)


def _require_plain_ascii(
    annotation: str, value: str, max_length: int, *, expected: str, example: str, spaces: bool = False
) -> None:
    """Printable ASCII only: no control characters, NUL, Unicode look-alikes (nor spaces unless allowed)."""
    if not value:
        raise ContractError(annotation, value, "it is empty", expected=expected, example=example)
    if len(value) > max_length:
        raise ContractError(
            annotation,
            value,
            f"it is longer than {max_length} characters",
            expected=expected,
            example=example,
        )
    for char in value:
        if not ("!" <= char <= "~") and not (spaces and char == " "):
            what = "a space" if char == " " else f"the character U+{ord(char):04X}"
            raise ContractError(
                annotation,
                value,
                f"it contains {what}; only printable ASCII is allowed" + ("" if spaces else ", without spaces"),
                expected=expected,
                example=example,
            )
