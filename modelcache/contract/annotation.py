"""The annotations a pod opts in with, and their strict parsers.

A pod opts in with ``modelcache.io/model`` (parsed in :mod:`modelcache.contract.sources`); the other
``modelcache.io/*`` annotations refine what it gets. Every parser here is strict: a value that is not what
we expect raises :class:`ContractError`, whose message names the annotation, the value, what was expected
and an example.
"""

from __future__ import annotations

import posixpath
import re
from decimal import Decimal
from typing import Literal

from modelcache.contract.errors import ContractError
from modelcache.contract.quantities import quantity
from modelcache.contract.wire import SECRET_KEYS

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
# "true": the pod is not scheduled until its model is Ready in its namespace's cache (a scheduling gate
# that the controller removes), so it holds no node, and no GPU, while the model downloads; "false":
# never gated, whatever the cluster default (MODELCACHE_WAIT_FOR_MODEL) says.
WAIT_ANNOTATION = "modelcache.io/wait-for-model"
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
        WAIT_ANNOTATION,
    }
)

# --- limits ----------------------------------------------------------------------------------------
MAX_URI_LENGTH = 2048
MAX_ANNOTATION_VALUE_LENGTH = 4096
MAX_INCLUDE_PATTERNS = 64
MAX_PATTERN_LENGTH = 256
MAX_MOUNT_PATH_LENGTH = 256


# --- parsers ------------------------------------------------------------------------------------------
_GLOB = re.compile(r"[A-Za-z0-9._*?/\[\]!+=,@()-]+")


def parse_include(value: str) -> tuple[str, ...]:
    """Parse ``modelcache.io/include``: comma-separated globs matched against paths in the model."""
    expected = "comma-separated relative glob patterns"
    example = "*.safetensors,*.json,tokenizer.model"
    require_plain_ascii(
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
    require_plain_ascii(annotation, value, MAX_MOUNT_PATH_LENGTH, expected=expected, example=example)
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


# Kubernetes names (patterns, compiled by re on first use): labels (namespaces, containers) and subdomains.
DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_SUBDOMAIN = r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"


def parse_container_names(value: str) -> tuple[str, ...]:
    """Parse ``modelcache.io/containers``: comma-separated container names."""
    expected = "comma-separated container names of the pod"
    example = "vllm,sidecar"
    require_plain_ascii(
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
        if not re.fullmatch(DNS_LABEL, name):
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
    require_plain_ascii(SECRET_ANNOTATION, value, 253, expected=expected, example=example)
    if not re.fullmatch(DNS_SUBDOMAIN, value):
        raise ContractError(
            SECRET_ANNOTATION,
            value,
            "it is not a Secret name (lowercase letters, digits, '-' and '.')",
            expected=expected,
            example=example,
        )
    return value


def parse_quantity(value: str, *, annotation: str, kind: Literal["cpu", "memory"]) -> Decimal:
    """Parse a positive Kubernetes resource quantity ("500m", "2", "8Gi") into its value."""
    expected = "a positive Kubernetes quantity"
    example = "500m" if kind == "cpu" else "8Gi"
    require_plain_ascii(annotation, value, 64, expected=expected, example=example)
    try:
        amount = quantity(value)
    except ValueError as err:
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


def require_plain_ascii(
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
