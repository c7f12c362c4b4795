"""`ResultCache` alone (pure logic): keys, least-recently-used eviction by size."""

from __future__ import annotations

from typing import Any

import orjson

from query_api.repository.runs import ResultCache

GEN = ("runstream", "5d460564-1960-4c1c-b2ba-e2d1e0bcc57e")
KEY = ("default", "1", "a")


def result(run_id: str, pad: int = 0) -> dict[str, Any]:
    return {"run_id": run_id, "notes": "x" * pad}


def size(r: dict[str, Any]) -> int:
    return ResultCache.OVERHEAD * len(orjson.dumps(r))


def test_a_result_is_found_only_under_its_generation_run_and_touches() -> None:
    cache = ResultCache(1 << 20)
    cache.put(GEN, {(KEY, 3): result("a")})
    assert cache.get(GEN, {KEY: 3}) == {KEY: result("a")}
    assert cache.get(GEN, {KEY: 4}) == {}  # the run changed since
    assert cache.get(("runstream", "another-uuid"), {KEY: 3}) == {}
    assert cache.get(("runstream_v2", GEN[1]), {KEY: 3}) == {}
    assert cache.get(GEN, {("other", "1", "a"): 3}) == {}  # another project's run a
    assert cache.get(GEN, {("default", "2", "a"): 3}) == {}


def test_the_least_recently_used_results_go_first_once_full() -> None:
    one = size(result("a"))
    cache = ResultCache(3 * one)
    keys = [("default", "1", r) for r in "abc"]
    cache.put(GEN, {(k, 1): result(k[2]) for k in keys})
    assert len(cache) == 3
    cache.get(GEN, {keys[0]: 1})  # a is used: b is now the oldest
    cache.put(GEN, {(("default", "1", "d"), 1): result("d")})
    assert set(cache.get(GEN, {k: 1 for k in keys})) == {keys[0], keys[2]}
    assert len(cache) == 3


def test_a_new_state_of_a_run_replaces_its_entry_and_sizes_add_up() -> None:
    cache = ResultCache(1 << 20)
    other = ("default", "1", "b")
    cache.put(GEN, {(KEY, 1): result("a"), (other, 1): result("b")})
    cache.put(GEN, {(KEY, 1): result("a")})  # the same entry again: counted once
    cache.put(GEN, {(KEY, 2): result("a", pad=10)})  # the run changed: one entry for it
    assert len(cache) == 2
    assert cache._bytes == size(result("b")) + size(result("a", pad=10))
    assert cache.get(GEN, {KEY: 1}) == {}
    assert cache.get(GEN, {KEY: 2}) == {KEY: result("a", pad=10)}


def test_a_result_larger_than_the_whole_cache_is_not_held() -> None:
    cache = ResultCache(size(result("a", pad=100)) - 1)
    cache.put(GEN, {(KEY, 1): result("a", pad=100), (("default", "1", "b"), 1): result("b")})
    assert cache.get(GEN, {KEY: 1}) == {}
    assert len(cache) == 1


def test_a_result_orjson_cannot_write_is_held_all_the_same() -> None:
    """An int beyond 64 bits (orjson refuses it; the response encoder falls back to json):
    sized by `json`, held, never an error in the search that put it."""
    cache = ResultCache(1 << 20)
    big = {"run_id": "a", "count": 2**70}
    cache.put(GEN, {(KEY, 1): big})
    assert cache.get(GEN, {KEY: 1}) == {KEY: big}
