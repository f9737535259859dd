"""Controller settings: a frozen dataclass read once from MODELCACHE_* environment variables.

Durations and sizes use the one grammar of modelcache.runtime.settings (``90s``, ``1d``, ``1w``; ``100Gi``).
"""

from __future__ import annotations

import posixpath
import socket
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

from modelcache.contract.annotation import DNS_LABEL, DNS_SUBDOMAIN
from modelcache.contract.volumes import NODE_CLAIM_SUFFIX, NODE_LOCAL_CHOICES, VOLUME_MODES, NodeLocal, VolumeMode
from modelcache.contract.wire import DEFAULT_FETCHER_IMAGE
from modelcache.runtime.logs import FORMATS, LEVELS
from modelcache.runtime.settings import (
    Reader,
    load_settings,
    read_boolean,
    read_choice,
    read_duration,
    read_name,
    read_storage,
    read_text,
)
from modelcache.runtime.timings import LeaseTimings


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSettings:
    """Everything the controller can be told; each field is MODELCACHE_<FIELD NAME IN UPPER CASE>."""

    namespace: str = "modelcache-system"
    identity: str = ""  # this replica's name in the Lease (the pod name); the host name when empty
    lease_name: str = "modelcache-controller"
    # client-go's leader election durations: a candidate takes over a Lease whose record has not changed
    # for lease_duration of its own time; the leader stops acting after lease_renew_deadline without a
    # successful renewal; both try every lease_retry_period.
    lease_duration: timedelta = timedelta(seconds=15)
    lease_renew_deadline: timedelta = timedelta(seconds=10)
    lease_retry_period: timedelta = timedelta(seconds=2)
    # Cache volumes per namespace (docs/install.md).
    volume_mode: VolumeMode = "existing"
    claim_name: str = "modelcache"
    storage_class: str = ""
    storage_size: str = "100Gi"
    bypass_storage_check: bool = False
    volume_pending_deadline: timedelta = timedelta(minutes=3)
    # Node-local caches (docs/install.md, "Caches on the nodes' own disks"): off; fallback for the
    # namespaces the shared volume cannot serve; always for every namespace. Each node keeps its copy in
    # node_local_path, through a hostPath PersistentVolume per namespace bound to the PVC <claim>-node.
    node_local: NodeLocal = "off"
    node_local_path: str = "/var/lib/modelcache"
    resync_every: timedelta = timedelta(seconds=30)
    # Certificates for the webhook (off when cert-manager issues them).
    manage_certificates: bool = True
    webhook_configuration: str = "modelcache-webhook"
    service_name: str = "modelcache-webhook"
    tls_secret: str = "modelcache-webhook-tls"  # noqa: S105 (a Secret's name)
    ca_secret: str = "modelcache-ca"  # noqa: S105 (a Secret's name)
    certificate_check_every: timedelta = timedelta(minutes=5)
    # Pods that wait for their model: lift the scheduling gate once it is Ready, start a fetch Job for
    # gated pods, and tell waiting pods (gated or in Init) why, as Events (modelcache/controller/waiting.py).
    model_waits: bool = True
    # The image of the fetch Jobs' one container (it only says the model is ready; the webhook injects the
    # fetcher itself): the fetcher image, which the nodes pull anyway.
    fetcher_image: str = DEFAULT_FETCHER_IMAGE
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ControllerSettings:
        """Read and validate every MODELCACHE_* variable; one SettingsError lists every problem."""
        settings = load_settings(cls, _READERS, environ, what="controller")
        return settings if settings.identity else replace(settings, identity=socket.gethostname())

    @property
    def lease_timings(self) -> LeaseTimings:
        return LeaseTimings.of(self.lease_duration, self.lease_renew_deadline, self.lease_retry_period)

    @property
    def node_claim(self) -> str:
        """The node-local PVC's name in every namespace ("" when node-local caches are off)."""
        return "" if self.node_local == "off" else self.claim_name + NODE_CLAIM_SUFFIX

    def problems(self) -> list[str]:
        """Cross-field checks."""
        problems = self.lease_timings.problems()
        if self.node_local == "always":
            return problems  # no shared volume: its StorageClass does not matter
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


def read_node_path(value: str) -> str:
    """A node directory for the hostPath volume: absolute, normalized, neither a system directory nor in one."""
    clean = posixpath.normpath(value)
    if not value.startswith("/") or clean != value.rstrip("/") or ".." in value.split("/"):
        raise ValueError(f"{value!r} is not a normalized absolute path (such as /var/lib/modelcache)")
    inside = any(clean.startswith(top + "/") for top in _SYSTEM_TREES)
    if clean in _SYSTEM_DIRECTORIES or inside or any(c in value for c in ",:\n\0"):
        raise ValueError(f"{value!r} is a system directory, is inside one, or has , : or a newline; use one of its own")
    return clean


# Every node's directory is mounted into pods that may write it: never one the node itself lives from.
_SYSTEM_TREES: tuple[str, ...] = ("/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/root", "/run", "/sbin", "/sys")
_SYSTEM_TREES += ("/usr", "/tmp", "/var/lib/kubelet")  # noqa: S108 (refused, never used)
_SYSTEM_DIRECTORIES = frozenset({"/", "/home", "/var", "/var/lib", "/var/log", "/var/run", *_SYSTEM_TREES})


_READERS: dict[str, Reader[Any]] = {
    "namespace": read_name(DNS_LABEL, "a namespace name", limit=63),
    "identity": read_text,
    "lease_name": read_name(DNS_SUBDOMAIN, "a Lease name", limit=253),
    "lease_duration": read_duration(minimum=1.0),
    "lease_renew_deadline": read_duration(minimum=0.5),
    "lease_retry_period": read_duration(minimum=0.1),
    "volume_mode": read_choice(*VOLUME_MODES),
    # A PV copy is named after the claim and the namespace, so the claim name leaves room for both.
    "claim_name": read_name(DNS_LABEL, "a PersistentVolumeClaim name", limit=63),
    "storage_class": read_name(DNS_SUBDOMAIN, "a StorageClass name", limit=253, empty=True),
    "storage_size": read_storage,
    "bypass_storage_check": read_boolean,
    "volume_pending_deadline": read_duration(),
    "node_local": read_choice(*NODE_LOCAL_CHOICES),
    "node_local_path": Reader("text", read_node_path),
    "resync_every": read_duration(),
    "manage_certificates": read_boolean,
    "webhook_configuration": read_name(DNS_SUBDOMAIN, "a MutatingWebhookConfiguration name", limit=253),
    "service_name": read_name(DNS_LABEL, "a Service name", limit=63),
    "tls_secret": read_name(DNS_SUBDOMAIN, "a Secret name", limit=253),
    "ca_secret": read_name(DNS_SUBDOMAIN, "a Secret name", limit=253),
    "certificate_check_every": read_duration(),
    "model_waits": read_boolean,
    "fetcher_image": read_text,
    "log_format": read_choice(*FORMATS),
    "log_level": read_choice(*LEVELS),
}

MEANINGS = {
    "namespace": "its own namespace (the manifests set it from the pod)",
    "identity": "its name in the Lease, before a unique suffix (the manifests set the pod name)",
    "lease_name": "the Lease for leader election",
    "lease_duration": "a standby takes over a Lease whose record has not changed this long on its own clock",
    "lease_renew_deadline": "the leader stops acting after this long without a successful renewal",
    "lease_retry_period": "how often candidates try and the leader renews",
    "volume_mode": "existing, provision or clone: how each namespace gets its cache PVC",
    "claim_name": "name of the cache PVC in every namespace",
    "storage_class": "the ReadWriteMany StorageClass for provision and clone (required there)",
    "storage_size": "size of the PVCs it creates",
    "bypass_storage_check": "clone volume types other than nfs and hostPath; skip the single-node provisioner check",
    "volume_pending_deadline": "a cache PVC Pending for longer is reported as an error, and its namespace denied",
    "node_local": "off, fallback (for namespaces the shared volume cannot serve) or always: caches on each node's disk",
    "node_local_path": "the directory on every node that holds its node-local cache (a hostPath volume)",
    "resync_every": "full reconcile and status heartbeat (watches wake it sooner)",
    "manage_certificates": "issue and rotate the webhook's certificates; false with cert-manager",
    "webhook_configuration": "the MutatingWebhookConfiguration whose caBundle it publishes",
    "service_name": "the webhook's Service: its DNS names go into the serving certificate",
    "tls_secret": "Secret with the serving pair (mounted by the webhook)",
    "ca_secret": "Secret with the CA key (read by the controller only)",
    "certificate_check_every": "how often certificates are checked for renewal",
    "model_waits": "lift the gate of pods whose model is ready, fetch for gated pods, Events on waiting pods",
    "fetcher_image": "the image of the fetch Jobs' container (for gated pods and declared CachedModels)",
    "log_format": "text or json (one object per line)",
    "log_level": "DEBUG, INFO, WARNING or ERROR",
}


def help_text() -> str:
    """`modelcache-controller --help`."""
    from modelcache.runtime.settings import help_text as render

    return render(
        ControllerSettings,
        _READERS,
        MEANINGS,
        intro="usage: modelcache-controller\n\nThe modelcache controller: a cache PVC for every namespace that runs "
        "modelcache pods, the webhook's certificates and their rotation, under a Lease. Serves /healthz on 8081.",
    )
