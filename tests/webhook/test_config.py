"""Settings from MODELCACHE_* variables: defaults, overrides, and one error that lists every problem."""

from __future__ import annotations

import pytest

from modelcache.runtime.settings import SettingsError
from webhook.config import Settings


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.problems() == []


def test_overrides_are_read_and_typed() -> None:
    settings = Settings.from_env(
        {
            "MODELCACHE_FETCHER_IMAGE": "registry.example.com:5000/ml/modelcache-fetcher:0.1.0@sha256:" + "a" * 64,
            "MODELCACHE_PVC_NAME": "shared-models",
            "MODELCACHE_PORT": "8443",
            "MODELCACHE_ALLOW_HTTP": "yes",
            "MODELCACHE_TLS_MIN_VERSION": "1.3",
            "MODELCACHE_HF_ENDPOINT": "https://hub-mirror.internal/",
            "PATH": "/usr/bin",
        }
    )
    assert settings.pvc_name == "shared-models"
    assert settings.port == 8443
    assert settings.allow_http is True
    assert settings.tls_min_version == "1.3"
    assert settings.hf_endpoint == "https://hub-mirror.internal"


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {
                "MODELCACHE_PORT": "0",
                "MODELCACHE_FETCHER_IMAGE": "Not An Image",
                "MODELCACHE_MOUNT_PATH": "/etc",
                "MODELCACHE_LOG_FORMAT": "xml",
                "MODELCACHE_PVCNAME": "typo",
            }
        )
    text = str(caught.value)
    assert "5 problem(s)" in text
    for name in ("MODELCACHE_PORT", "MODELCACHE_FETCHER_IMAGE", "MODELCACHE_MOUNT_PATH", "MODELCACHE_LOG_FORMAT"):
        assert name in text
    assert "MODELCACHE_PVCNAME is not a webhook setting" in text


def test_a_request_above_its_limit_is_refused() -> None:
    with pytest.raises(SettingsError, match="MODELCACHE_FETCHER_MEMORY_REQUEST='4Gi' is more than"):
        Settings.from_env({"MODELCACHE_FETCHER_MEMORY_REQUEST": "4Gi", "MODELCACHE_FETCHER_MEMORY_LIMIT": "1Gi"})


def test_kubernetes_service_links_are_not_mistaken_for_settings() -> None:
    Settings.from_env(
        {
            "MODELCACHE_WEBHOOK_SERVICE_HOST": "10.0.0.1",
            "MODELCACHE_WEBHOOK_SERVICE_PORT": "443",
            "MODELCACHE_WEBHOOK_SERVICE_PORT_HTTPS": "443",
            "MODELCACHE_WEBHOOK_PORT": "tcp://10.0.0.1:443",
            "MODELCACHE_WEBHOOK_PORT_443_TCP": "tcp://10.0.0.1:443",
            "MODELCACHE_WEBHOOK_PORT_443_TCP_ADDR": "10.0.0.1",
        }
    )
