"""Model keys: the name every pod that asks for the same model meets on the cache volume."""

from __future__ import annotations

import hashlib
import re

from modelcache.contract.sources import Source

MAX_KEY_LENGTH = 63  # fits a label value, so the key can label the pod

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
