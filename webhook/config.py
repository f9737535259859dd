"""Webhook settings: a frozen dataclass read once from MODELCACHE_* environment variables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from modelcache.contract.annotation import DNS_SUBDOMAIN, parse_mount_path, parse_quantity
from modelcache.contract.errors import ContractError
from modelcache.contract.wire import DEFAULT_FETCHER_IMAGE, DEFAULT_LOCK_TIMEOUT, DEFAULT_TAKEOVER_AFTER
from modelcache.runtime.logs import FORMATS, LEVELS
from modelcache.runtime.settings import (
    ENV_PREFIX,
    Reader,
    load_settings,
    read_boolean,
    read_choice,
    read_port,
    read_seconds,
    read_text,
    read_url,
)

# [registry[:port]/]path[:tag][@sha256:digest], lowercase path as the distribution spec requires.
_IMAGE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::\d+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the webhook can be told; each field is MODELCACHE_<FIELD NAME IN UPPER CASE>."""

    # What gets injected.
    fetcher_image: str = DEFAULT_FETCHER_IMAGE
    fetcher_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    pvc_name: str = "modelcache"
    mount_path: str = "/models"
    # Requests below a small app's: a pod reserves the larger of its biggest init container's requests
    # and its apps' sum, so the fetcher's must not set that floor (96Mi covers its measured peak RSS).
    fetcher_cpu_request: str = "50m"
    fetcher_cpu_limit: str = "2"
    fetcher_memory_request: str = "96Mi"
    fetcher_memory_limit: str = "1Gi"
    # Size limit of the emptyDir that replaces the cache for pods that opt out.
    pod_local_size_limit: str = "100Gi"
    # Size limit of the fetcher's private /tmp.
    scratch_size_limit: str = "1Gi"
    # The UID the fetcher runs as when the pod itself runs as root (runAsNonRoot would refuse it).
    fetcher_uid: int = 65532
    # How long a fetcher waits for another pod's download of the same model before its init container
    # gives up (and restarts), and after how long without a heartbeat it takes a holder's lock over (0: never).
    fetcher_lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    fetcher_takeover_after: float = DEFAULT_TAKEOVER_AFTER
    # Passed to the fetcher: a Hub mirror (HF_ENDPOINT) and an S3-compatible endpoint (AWS_ENDPOINT_URL).
    hf_endpoint: str = ""
    s3_endpoint: str = ""
    # Accept http:// model URLs (inside a trusted network only).
    allow_http: bool = False
    # Pods that do not say (annotation modelcache.io/wait-for-model) wait for their model unscheduled:
    # a scheduling gate until it is Ready in their namespace's cache (needs volume_status and the
    # controller, which removes the gate). docs/operations.md, "Schedule pods when their model is ready".
    wait_for_model: bool = False
    # Cache volumes per namespace: "<namespace>/<name>" of the ConfigMap the modelcache controller
    # publishes (docs/install.md). Empty: every pod gets the PVC pvc_name, unchecked.
    volume_status: str = ""
    # How to reach the Kubernetes API for it: in a pod, the service account (defaults below).
    kube_api_url: str = ""
    kube_token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105 (a path)
    kube_ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    # Serving.
    host: str = "0.0.0.0"  # noqa: S104 (the apiserver reaches us through a Service)
    port: int = 9443
    health_port: int = 8080  # plain HTTP, GET /healthz only: liveness that needs no certificate
    tls_dir: str = "/etc/modelcache/tls"
    tls_min_version: Literal["1.2", "1.3"] = "1.2"
    tls_reload_seconds: float = 10.0
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """Read and validate every MODELCACHE_* variable; one SettingsError lists every problem."""
        api_url = ENV_PREFIX + "KUBE_API_URL"
        if not environ.get(api_url) and _in_cluster_api_url(environ):  # in a pod: the apiserver it announces
            environ = {**environ, api_url: _in_cluster_api_url(environ)}
        return load_settings(cls, _READERS, environ, what="webhook")

    def problems(self) -> list[str]:
        """Cross-field checks (also run on settings built in code, e.g. by tests)."""
        problems: list[str] = []
        if self.volume_status and not self.kube_api_url:
            problems.append(
                f"{ENV_PREFIX}VOLUME_STATUS={self.volume_status!r} needs the Kubernetes API: run the webhook in a pod, "
                f"or set {ENV_PREFIX}KUBE_API_URL (and {ENV_PREFIX}KUBE_TOKEN_FILE, {ENV_PREFIX}KUBE_CA_FILE)"
            )
        pairs: tuple[tuple[Literal["cpu", "memory"], str, str], ...] = (
            ("cpu", self.fetcher_cpu_request, self.fetcher_cpu_limit),
            ("memory", self.fetcher_memory_request, self.fetcher_memory_limit),
        )
        for kind, request, limit in pairs:
            request_env = f"{ENV_PREFIX}FETCHER_{kind.upper()}_REQUEST"
            limit_env = f"{ENV_PREFIX}FETCHER_{kind.upper()}_LIMIT"
            try:
                too_much = parse_quantity(request, annotation=request_env, kind=kind) > parse_quantity(
                    limit, annotation=limit_env, kind=kind
                )
            except ContractError as err:
                problems.append(str(err))
                continue
            if too_much:
                problems.append(
                    f"{request_env}={request!r} is more than {limit_env}={limit!r}; a request may not exceed its limit"
                )
        return problems


def _in_cluster_api_url(environ: Mapping[str, str]) -> str:
    """The apiserver as the kubelet announces it to every pod; "" outside a cluster."""
    host, port = environ.get("KUBERNETES_SERVICE_HOST", ""), environ.get("KUBERNETES_SERVICE_PORT", "443")
    if not host:
        return ""
    return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"


def _object_reference(value: str) -> str:
    namespace, slash, name = value.partition("/")
    if value and (not slash or not re.fullmatch(DNS_SUBDOMAIN, namespace) or not re.fullmatch(DNS_SUBDOMAIN, name)):
        raise ValueError("expected <namespace>/<name> of a ConfigMap, such as modelcache-system/modelcache-volumes")
    return value


def _image(value: str) -> str:
    if not _IMAGE.fullmatch(value):
        raise ValueError("expected an image reference such as registry.example.com/modelcache-fetcher:0.1.0")
    return value


def _uid(value: str) -> int:
    uid = int(value)
    if not 1 <= uid <= 2**31 - 1:
        raise ValueError("expected a non-root UID (1 to 2147483647)")
    return uid


def _pvc_name(value: str) -> str:
    if len(value) > 253 or not re.fullmatch(DNS_SUBDOMAIN, value):
        raise ValueError("expected a PersistentVolumeClaim name (lowercase letters, digits, '-' and '.')")
    return value


def _quantity(kind: Literal["cpu", "memory"]) -> Reader[str]:
    def read(value: str) -> str:
        parse_quantity(value, annotation="value", kind=kind)
        return value

    return Reader("size" if kind == "memory" else "text", read)


def _mount_path(value: str) -> str:
    return parse_mount_path(value, annotation=f"{ENV_PREFIX}MOUNT_PATH")


_READERS: dict[str, Reader[Any]] = {
    "fetcher_image": Reader("text", _image),
    "fetcher_image_pull_policy": read_choice("Always", "IfNotPresent", "Never"),
    "pvc_name": Reader("name", _pvc_name),
    "mount_path": Reader("text", _mount_path),
    "fetcher_cpu_request": _quantity("cpu"),
    "fetcher_cpu_limit": _quantity("cpu"),
    "fetcher_memory_request": _quantity("memory"),
    "fetcher_memory_limit": _quantity("memory"),
    "pod_local_size_limit": _quantity("memory"),
    "scratch_size_limit": _quantity("memory"),
    "fetcher_uid": Reader("integer", _uid),
    "fetcher_lock_timeout": read_seconds(minimum=1.0),
    "fetcher_takeover_after": read_seconds(),
    "hf_endpoint": read_url,
    "s3_endpoint": read_url,
    "allow_http": read_boolean,
    "wait_for_model": read_boolean,
    "volume_status": Reader("name", _object_reference),
    "kube_api_url": read_url,
    "kube_token_file": read_text,
    "kube_ca_file": read_text,
    "host": read_text,
    "port": read_port,
    "health_port": read_port,
    "tls_dir": read_text,
    "tls_min_version": read_choice("1.2", "1.3"),
    "tls_reload_seconds": read_seconds(minimum=0.1, maximum=3600, bare_unit="s"),
    "log_format": read_choice(*FORMATS),
    "log_level": read_choice(*LEVELS),
}

MEANINGS = {
    "fetcher_image": "image of the injected init container; pin it by digest in production",
    "fetcher_image_pull_policy": "Always, IfNotPresent or Never",
    "pvc_name": "the cache PVC in the pod's namespace, when MODELCACHE_VOLUME_STATUS is empty",
    "mount_path": "default mount path of the cache (the modelcache.io/mount-path annotation overrides it)",
    "fetcher_cpu_request": "the fetcher's CPU request (modelcache.io/fetcher-cpu-request overrides it)",
    "fetcher_cpu_limit": "the fetcher's CPU limit: hashing and parallel downloads use up to this much",
    "fetcher_memory_request": "the fetcher's memory request",
    "fetcher_memory_limit": "the fetcher's memory limit (it streams to disk: its memory does not grow with the model)",
    "pod_local_size_limit": "size limit of the emptyDir that replaces the cache for pods that opt out",
    "scratch_size_limit": "size limit of the fetcher's private /tmp",
    "fetcher_uid": "the UID the fetcher runs as when the pod itself runs as root",
    "fetcher_lock_timeout": "how long a pod's fetcher waits for another pod's download of the same model",
    "fetcher_takeover_after": "take over the lock of a holder without a heartbeat for this long; 0 never",
    "hf_endpoint": "a Hub mirror for hf:// models, passed to the fetcher as HF_ENDPOINT",
    "s3_endpoint": "an S3-compatible endpoint, passed to the fetcher as AWS_ENDPOINT_URL",
    "allow_http": "accept http:// model URLs; only inside a network you trust",
    "wait_for_model": "pods that do not say (modelcache.io/wait-for-model) are scheduled once their model is Ready",
    "volume_status": "<namespace>/<name> of the controller's volume status ConfigMap; empty: MODELCACHE_PVC_NAME",
    "kube_api_url": "the Kubernetes API, for the volume status (in a pod: from KUBERNETES_SERVICE_HOST)",
    "kube_token_file": "bearer token file, read again on every request (projected tokens rotate)",
    "kube_ca_file": "CA of the API server",
    "host": "listen address",
    "port": "listen port (HTTPS)",
    "health_port": "plain-HTTP port for GET /healthz (liveness): answers before a certificate exists",
    "tls_dir": "directory with tls.crt and tls.key (a mounted kubernetes.io/tls Secret)",
    "tls_min_version": "1.2 or 1.3",
    "tls_reload_seconds": "how often the certificate files are checked for a change",
    "log_format": "text or json (one object per line)",
    "log_level": "DEBUG, INFO, WARNING or ERROR; INFO logs one line per review",
}


def help_text() -> str:
    """`modelcache-webhook --help`."""
    from modelcache.runtime.settings import help_text as render

    return render(
        Settings,
        _READERS,
        MEANINGS,
        intro="usage: modelcache-webhook\n\nThe modelcache admission webhook: serves POST /mutate (AdmissionReview "
        "v1) over HTTPS, /healthz, /readyz and /metrics. docs/configuration.md has every setting.",
    )
