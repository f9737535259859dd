"""What the webhook puts into a pod and the fetcher reads back: reserved names, paths and env names.

The webhook writes these into the pod spec; the fetcher (and the admin tools that run it) read them.
Both sides import them from here, so a name can never drift between the two.
"""

from __future__ import annotations

import posixpath

from modelcache import __version__

# The fetcher image the webhook injects unless told otherwise (MODELCACHE_FETCHER_IMAGE).
DEFAULT_FETCHER_IMAGE = f"modelcache-fetcher:{__version__}"

# --- names the webhook reserves in a pod -----------------------------------------------------------
FETCHER_CONTAINER_NAME = "modelcache-fetch"
CACHE_VOLUME_NAME = "modelcache"
SCRATCH_VOLUME_NAME = "modelcache-tmp"
SCRATCH_MOUNT_PATH = "/tmp"  # noqa: S108 (a private emptyDir: the root filesystem is read-only)
# The pod's pin: a small emptyDir where the fetcher links the exact version it made ready; the app's
# MODEL_PATH is that link, so a refresh of the model never moves what a running pod reads. Under /run,
# which no mount path may use (annotations.parse_mount_path), so it never collides with the cache.
PIN_VOLUME_NAME = "modelcache-pin"
PIN_MOUNT_PATH = "/run/modelcache"
PIN_PATH = PIN_MOUNT_PATH + "/model"
# An empty directory mounted read-only in the fetcher at the ServiceAccount token path: the apiserver's
# ServiceAccount admission plugin skips a container that mounts something there, so the fetcher (which
# asks no API) gets no token, and that plugin's second pass after our patch changes nothing, which
# spares the pod a second review by our webhook.
NO_TOKEN_VOLUME_NAME = "modelcache-no-token"  # noqa: S105 (a volume name)
SERVICE_ACCOUNT_TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 (a path)
# The label the webhook puts on injected pods, so that "which pods use this model" is one selector.
MODEL_KEY_LABEL = "modelcache.io/model-key"
# The scheduling gate of a pod that waits for its model (modelcache.io/wait-for-model); the controller
# removes it once the model is Ready in the pod's namespace's cache.
SCHEDULING_GATE = "modelcache.io/model"
TERMINATION_LOG_PATH = "/dev/termination-log"

# --- env of the app containers ------------------------------------------------------------------------
OPT_OUT_ENV = "AIOLI_DISABLE_MODEL_CACHE"
TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
MODEL_PATH_ENV = "MODEL_PATH"
HF_HUB_CACHE_ENV = "HF_HUB_CACHE"
HF_HUB_OFFLINE_ENV = "HF_HUB_OFFLINE"

# --- env of the fetcher (set on the init container by the webhook) ---------------------------------
SOURCE_ENV = "MODELCACHE_SOURCE"
MODEL_KEY_ENV = "MODELCACHE_MODEL_KEY"
INCLUDE_ENV = "MODELCACHE_INCLUDE"
CACHE_ROOT_ENV = "MODELCACHE_CACHE_ROOT"
SHARED_CACHE_ENV = "MODELCACHE_SHARED_CACHE"
POD_NAME_ENV = "MODELCACHE_POD_NAME"
POD_NAMESPACE_ENV = "MODELCACHE_POD_NAMESPACE"
POD_UID_ENV = "MODELCACHE_POD_UID"  # tells a recreated pod from the one of the same name before it
NODE_NAME_ENV = "MODELCACHE_NODE_NAME"
HTTP_AUTHORIZATION_ENV = "MODELCACHE_HTTP_AUTHORIZATION"
ALLOW_HTTP_ENV = "MODELCACHE_ALLOW_HTTP"  # set for http:// sources, which the webhook accepted by setting
REFRESH_ENV = "MODELCACHE_REFRESH"
PIN_PATH_ENV = "MODELCACHE_PIN_PATH"  # where the fetcher links the version it made ready (the app's MODEL_PATH)
SECRET_NAME_ENV = "MODELCACHE_SECRET_NAME"  # noqa: S105 (a variable name; its value names the Secret in messages)
# The lock's patience, which the webhook passes from its own settings (MODELCACHE_FETCHER_LOCK_*) when
# they differ from these defaults, which both sides share.
LOCK_TIMEOUT_ENV = "MODELCACHE_LOCK_TIMEOUT"
TAKEOVER_AFTER_ENV = "MODELCACHE_TAKEOVER_AFTER"
DEFAULT_LOCK_TIMEOUT = 3600.0
DEFAULT_TAKEOVER_AFTER = 600.0
TERMINATION_LOG_ENV = "MODELCACHE_TERMINATION_LOG"
HF_ENDPOINT_ENV = "HF_ENDPOINT"
S3_ENDPOINT_ENV = "AWS_ENDPOINT_URL"

# Keys of the annotated Secret that reach the init container (and only it), each optional, by scheme:
# a pod that reads from S3 gets no HF_TOKEN even if the Secret has one.
SECRET_KEYS_BY_SCHEME: dict[str, tuple[str, ...]] = {
    "hf": ("HF_TOKEN",),
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"),
    "https": (HTTP_AUTHORIZATION_ENV,),
    "http": (HTTP_AUTHORIZATION_ENV,),
}
SECRET_KEYS = tuple(dict.fromkeys(k for keys in SECRET_KEYS_BY_SCHEME.values() for k in keys))

# --- the top of the cache root, which apps read ------------------------------------------------------
HUB_DIR = "hub"  # a huggingface_hub cache: HF_HUB_CACHE points here
READY_DIR = "ready"  # ready/<key>: a link to the newest ready version (present = ready)


def is_true(value: str) -> bool:
    """The opt-out reading of an env value: true/1/yes/on in any case, with spaces around ignored."""
    return value.strip().lower() in TRUE_WORDS


def model_path(cache_root: str, key: str) -> str:
    """The cache's link to the ready model (ready/<key>): the fetcher makes it point at the newest
    ready version. Apps get PIN_PATH instead, the version their own pod's fetcher found."""
    return posixpath.join(cache_root, READY_DIR, key)


def hub_cache_path(cache_root: str) -> str:
    """The huggingface_hub cache inside the cache root (HF_HUB_CACHE)."""
    return posixpath.join(cache_root, HUB_DIR)
