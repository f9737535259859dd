"""Controller settings: a frozen dataclass read once from MODELCACHE_* environment variables.

Durations use MLIS's units: a number and s, m, h, d or w (``90s``, ``1d``, ``1w``).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Literal

from controller.status import VOLUME_MODES, VolumeMode
from webhook.config import read_boolean, read_choice

ENV_PREFIX = "MODELCACHE_"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*")
_QUANTITY = re.compile(r"\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")


class ControllerSettingsError(Exception):
    """One or more settings are wrong; the message lists them all."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid controller settings:\n  " + "\n  ".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSettings:
    """Everything the controller can be told; each field is MODELCACHE_<FIELD NAME IN UPPER CASE>."""

    namespace: str = "modelcache-system"
    identity: str = ""  # this replica's name in the Lease (the pod name); the host name when empty
    lease_name: str = "modelcache-controller"
    # Cache volumes per namespace (docs/install.md).
    volume_mode: VolumeMode = "existing"
    claim_name: str = "modelcache"
    storage_class: str = ""
    storage_size: str = "100Gi"
    bypass_storage_check: bool = False
    volume_pending_deadline: timedelta = timedelta(minutes=3)
    resync_every: timedelta = timedelta(seconds=30)
    # Certificates for the webhook (off when cert-manager issues them).
    manage_certificates: bool = True
    webhook_configuration: str = "modelcache-webhook"
    service_name: str = "modelcache-webhook"
    tls_secret: str = "modelcache-webhook-tls"  # noqa: S105 (a Secret's name)
    ca_secret: str = "modelcache-ca"  # noqa: S105 (a Secret's name)
    certificate_check_every: timedelta = timedelta(minutes=5)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ControllerSettings:
        """Read and validate every MODELCACHE_* variable; one error lists every problem."""
        values, problems = read_env(cls, _READERS, environ, what="controller")
        settings = cls(**values)  # type: ignore[arg-type]  # each reader returns its field's type
        problems += settings.problems()
        if problems:
            raise ControllerSettingsError(problems)
        if not settings.identity:
            return cls(**{**{f.name: getattr(settings, f.name) for f in fields(cls)}, "identity": socket.gethostname()})
        return settings

    def problems(self) -> list[str]:
        """Cross-field checks."""
        problems = []
        if self.volume_mode == "provision" and not self.storage_class:
            problems.append(
                "MODELCACHE_VOLUME_MODE=provision needs MODELCACHE_STORAGE_CLASS: the ReadWriteMany StorageClass "
                "each namespace's cache PVC is provisioned from (kubectl get storageclass)"
            )
        if self.volume_mode == "clone" and not self.storage_class:
            problems.append(
                "MODELCACHE_VOLUME_MODE=clone needs MODELCACHE_STORAGE_CLASS: the ReadWriteMany StorageClass of "
                "the cache PVC whose volume every namespace shares (for example nfs-client)"
            )
        return problems


def read_env(
    cls: type, readers: Mapping[str, Callable[[str], object]], environ: Mapping[str, str], *, what: str
) -> tuple[dict[str, object], list[str]]:
    """The fields of settings class `cls` set in `environ` as MODELCACHE_<FIELD>, read by `readers`;
    and every problem: a value a reader refused, or a MODELCACHE_* name that is no field (a typo)."""
    problems: list[str] = []
    values: dict[str, object] = {}
    known = {ENV_PREFIX + f.name.upper() for f in fields(cls)}
    problems += [
        f"{name} is not a {what} setting (known: {', '.join(sorted(known))})"
        for name in sorted(environ)
        if name.startswith(ENV_PREFIX) and name not in known
    ]
    for f in fields(cls):
        env = ENV_PREFIX + f.name.upper()
        if env in environ:
            try:
                values[f.name] = readers[f.name](environ[env])
            except ValueError as err:
                problems.append(f"{env}={environ[env]!r}: {err}")
    return values, problems


def parse_duration(value: str) -> timedelta:
    """'90s', '15m', '1d', '1w' (MLIS's units) -> timedelta."""
    match = _DURATION.fullmatch(value.strip())
    if not match or float(match[1]) <= 0:
        raise ValueError("expected a positive duration: a number and s, m, h, d or w (for example 90s, 1d, 1w)")
    return timedelta(seconds=float(match[1]) * _UNITS[match[2]])


def read_name(pattern: re.Pattern[str], what: str, *, limit: int, empty: bool = False) -> Callable[[str], str]:
    def read(value: str) -> str:
        if (value or not empty) and (len(value) > limit or not pattern.fullmatch(value)):
            raise ValueError(f"expected {what} (lowercase letters, digits and '-', at most {limit} characters)")
        return value

    return read


def _quantity(value: str) -> str:
    if not _QUANTITY.fullmatch(value):
        raise ValueError("expected a storage size such as 100Gi or 1Ti")
    return value


def _text(value: str) -> str:
    return value


_READERS: dict[str, Callable[[str], object]] = {
    "namespace": read_name(DNS_LABEL, "a namespace name", limit=63),
    "identity": _text,
    "lease_name": read_name(DNS_SUBDOMAIN, "a Lease name", limit=253),
    "volume_mode": read_choice(*VOLUME_MODES),
    # A PV copy is named after the claim and the namespace, so the claim name leaves room for both.
    "claim_name": read_name(DNS_LABEL, "a PersistentVolumeClaim name", limit=63),
    "storage_class": read_name(DNS_SUBDOMAIN, "a StorageClass name", limit=253, empty=True),
    "storage_size": _quantity,
    "bypass_storage_check": read_boolean,
    "volume_pending_deadline": parse_duration,
    "resync_every": parse_duration,
    "manage_certificates": read_boolean,
    "webhook_configuration": read_name(DNS_SUBDOMAIN, "a MutatingWebhookConfiguration name", limit=253),
    "service_name": read_name(DNS_LABEL, "a Service name", limit=63),
    "tls_secret": read_name(DNS_SUBDOMAIN, "a Secret name", limit=253),
    "ca_secret": read_name(DNS_SUBDOMAIN, "a Secret name", limit=253),
    "certificate_check_every": parse_duration,
    "log_format": read_choice("text", "json"),
    "log_level": read_choice("DEBUG", "INFO", "WARNING", "ERROR"),
}
