"""Purge decisions, table-tested: TTL, in use, locked, downloading, interrupted, corrupt, watermark."""

from __future__ import annotations

import pytest

from modelcache.cache.inventory import CacheEntry, Download
from modelcache.cache.purge import Cause, PurgePolicy, plan_purge
from modelcache.contract.quantities import format_duration

NOW = 10_000_000.0
DAY = 86400.0
WEEK = 7 * DAY
GIB = 1 << 30


def model(key: str, *, idle_days: float | None, state: str = "ready", size: int = GIB, **fields: object) -> CacheEntry:
    last_used = None if idle_days is None else NOW - idle_days * DAY
    return CacheEntry(key, state, source=f"hf://org/{key}", size=size, last_used=last_used, **fields)  # type: ignore[arg-type]


HOLDER = Download("serving/llm-0 on node-a (pid 7)", "abc.123", 10, 100, NOW)


@pytest.mark.parametrize(
    ("entry", "pods", "cause", "reason"),
    [
        (model("old", idle_days=8), [], Cause.UNUSED, "unused for 1w 1d (purge after 1w)"),
        (model("fresh", idle_days=2), [], Cause.RECENT, "used 2d ago (purge after 1w)"),
        (model("edge", idle_days=7), [], Cause.UNUSED, "unused for 1w (purge after 1w)"),
        (model("old-in-use", idle_days=30), ["serving/llm-0"], Cause.IN_USE, "in use by 1 live pod(s): serving/llm-0"),
        (
            model("old-locked", idle_days=30, locked=True, download=HOLDER),
            [],
            Cause.LOCKED,
            "locked by serving/llm-0 on node-a (pid 7): a download or removal is under way",
        ),
        (
            model("downloading", idle_days=None, state="downloading", locked=True, download=HOLDER),
            [],
            Cause.LOCKED,
            "locked by serving/llm-0 on node-a (pid 7)",
        ),
        (
            model("interrupted", idle_days=30, state="interrupted"),
            [],
            Cause.NOT_READY,
            "not ready: its leftovers are cleaned",
        ),
        (model("corrupt", idle_days=9, state="corrupt"), [], Cause.UNUSED, "corrupt and unused for 1w 2d"),
        (model("never-used", idle_days=None, published_at=NOW - 10 * DAY), [], Cause.UNUSED, "unused for 1w 3d"),
        (model("never-used-new", idle_days=None, published_at=NOW - DAY), [], Cause.RECENT, "used 1d ago"),
        (
            model("many-pods", idle_days=30),
            ["a/p1", "a/p2", "b/p3", "b/p4"],
            Cause.IN_USE,
            "in use by 4 live pod(s): a/p1, a/p2, b/p3 and 1 more",
        ),
    ],
    ids=lambda value: value.key if isinstance(value, CacheEntry) else None,
)
def test_a_model_is_purged_only_when_unused_past_the_ttl_and_not_in_use_or_locked(
    entry: CacheEntry, pods: list[str], cause: Cause, reason: str
) -> None:
    [decision] = plan_purge(
        [entry], in_use={entry.key: pods}, now=NOW, policy=PurgePolicy(unused_for=WEEK), free_bytes=100 * GIB
    )
    assert decision.cause is cause  # a typed field: nothing downstream reads the reason text
    assert decision.remove is (cause in (Cause.UNUSED, Cause.WATERMARK))
    assert decision.reason.startswith(reason)


def test_the_watermark_evicts_least_recently_used_unused_models_until_enough_is_free() -> None:
    models = [
        model("a-newest", idle_days=1, size=4 * GIB),
        model("b-oldest", idle_days=5, size=3 * GIB),
        model("c-middle", idle_days=3, size=2 * GIB),
        model("d-in-use-oldest", idle_days=6, size=50 * GIB),
        model("e-expired", idle_days=9, size=1 * GIB),
    ]
    decisions = plan_purge(
        models,
        in_use={"d-in-use-oldest": ["ns/pod"]},
        now=NOW,
        policy=PurgePolicy(unused_for=WEEK, min_free_bytes=10 * GIB),
        free_bytes=5 * GIB,
    )
    removed = {d.key: d.reason for d in decisions if d.remove}
    # 5 free + 1 (expired) + 3 (oldest) + 2 (next oldest) = 11 >= 10: the newest and the one in use stay.
    assert set(removed) == {"e-expired", "b-oldest", "c-middle"}
    causes = {d.key: d.cause for d in decisions}
    assert causes == {
        "a-newest": Cause.RECENT,
        "b-oldest": Cause.WATERMARK,
        "c-middle": Cause.WATERMARK,
        "d-in-use-oldest": Cause.IN_USE,
        "e-expired": Cause.UNUSED,
    }
    assert removed["b-oldest"].startswith("free space 5.0 GiB is below the watermark 10.0 GiB; least recently used")
    assert removed["e-expired"].startswith("unused for")


def test_without_a_watermark_problem_nothing_within_the_ttl_goes() -> None:
    decisions = plan_purge(
        [model("a", idle_days=1), model("b", idle_days=2)],
        in_use={},
        now=NOW,
        policy=PurgePolicy(unused_for=WEEK, min_free_bytes=10 * GIB),
        free_bytes=20 * GIB,
    )
    assert not any(d.remove for d in decisions)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59, "59s"), (61, "1m 1s"), (3600, "1h"), (90061, "1d 1h"), (WEEK + DAY, "1w 1d")]
)
def test_durations_read_as_mlis_writes_them(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
