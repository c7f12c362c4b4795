"""SDK fuzz: generated calls (odd keys, values, steps, timestamps, params, tags, artifact
names) raise only the documented validation errors, never crash the background sender, and
every call that did not raise is delivered — no silently dropped point.

The oracle is written from the documented rules (producers/README.md, validation.py), not
from the SDK's own validators. The transport is a recorder (this is the SDK's validation and
queueing logic); artifact names go to the real S3, and one case goes through real Kafka.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import fractions
import math
import re
import struct
import threading
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import producers
import producers.session as session
from producers.config import ClientConfig
from producers.errors import InvalidArgument, InvalidType, ParamConflict
from schemas import codec
from schemas.metrics import unpack_points
from tests.reliability._api import bucket_objects

INT64 = (-(2**63), 2**63 - 1)
KEY_RE = re.compile(r"[A-Za-z0-9_\-. /]{1,250}\Z")
DOCUMENTED = (InvalidArgument, InvalidType)  # the call-site validation errors


class RecordingTransport:
    """Keeps every payload the engine sends (acknowledges at once)."""

    name = "recording"

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self._lock = threading.Lock()

    async def start(self) -> None:
        return None

    async def send(self, records: Sequence[Any]) -> None:
        await asyncio.sleep(0)
        with self._lock:
            self.payloads.extend(r.payload for r in records)

    async def close(self) -> None:
        return None


@pytest.fixture
def recording(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[RecordingTransport, ClientConfig]]:
    home = tmp_path_factory.mktemp("rs-fuzz")
    monkeypatch.setenv("RUNSTREAM_HOME", str(home))
    for name in ("RUNSTREAM_RUN_ID", "RUNSTREAM_EXPERIMENT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    transport = RecordingTransport()
    monkeypatch.setattr(session, "make_transport", lambda config, **kw: transport)
    config = ClientConfig(
        kafka_bootstrap="127.0.0.1:9",  # never dialled: the recorder replaces the transport
        mode="kafka",
        project="fuzz",
        spool_dir=str(home / "spool"),
    )
    yield transport, config
    producers.shutdown(timeout=2.0)


# ---- the oracle (documented rules) -------------------------------------------------------


def key_ok(key: object) -> bool:
    return (
        type(key) is str
        and KEY_RE.match(key) is not None
        and not key.startswith("/")
        and not any(seg in (".", "..") for seg in key.split("/"))
    )


def int64_ok(value: object, minimum: int = INT64[0]) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        return False
    return minimum <= int(value) <= INT64[1]


def metric_value(value: object) -> float | None:
    """The float stored for `value`, or None when it must be refused."""
    if value is None or isinstance(value, (str, bytes, complex)):
        return None
    try:
        return float(value)  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError):
        return None


def timestamp_ok(value: object) -> bool:
    if value is None or isinstance(value, dt.datetime):
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float, fractions.Fraction)):
        return False
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= 1e11
    except OverflowError:
        return False


def param_text(value: object) -> str | None:
    if value is None:
        return "None"
    if not isinstance(value, (str, bool, int, float, fractions.Fraction)):
        return None
    try:
        text = str(value)
    except ValueError:  # more digits than Python converts
        return None
    return text if len(text) <= 6000 else None


def tag_text(value: object) -> str | None:
    if isinstance(value, (bool, int, float, fractions.Fraction)):
        try:
            value = str(value)
        except ValueError:
            return None
    if not isinstance(value, str):
        return None
    return value if len(value) <= 8000 else None


# ---- strategies --------------------------------------------------------------------------

KEY_CHARS = "abcXYZ019_-. /"
#: ints past float64 and past Python's int-to-str digit limit (4,300): fed by a plain loop,
#: hypothesis cannot print them
HUGE = [10**400, -(10**400), 10**4299, 10**4300, -(10**5000), 2**64]
BIG = 2**1100  # past float64
keys = st.one_of(
    st.text(KEY_CHARS, min_size=1, max_size=12),
    st.text(KEY_CHARS, min_size=245, max_size=255),
    st.text(min_size=0, max_size=8),  # any unicode, control characters included
    st.sampled_from(["..", "a/../b", "/a", "a/..", "ä", "a\x00", "a\\b", "", " ", "loss"]),
    st.integers(),
    st.none(),
    st.binary(max_size=4),
)
splits = st.one_of(st.none(), st.sampled_from(["train", "val", "", "a/../b", "ü"]), keys)
values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-BIG, max_value=BIG),
    st.booleans(),
    st.fractions(),
    st.sampled_from([np.float32(1.5), np.int64(-3), np.float64("nan"), np.float16("inf")]),
    st.text(max_size=3),
    st.none(),
    st.complex_numbers(max_magnitude=2),
    st.binary(max_size=2),
)
steps = st.one_of(
    st.none(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([0, 1, INT64[0], INT64[1], True, np.int32(7), np.int64(INT64[1])]),
    st.floats(),
    st.text(max_size=2),
)
epochs = st.one_of(st.none(), st.integers(min_value=-5, max_value=2**64), st.booleans())
stamps = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-BIG, max_value=BIG),
    st.floats(min_value=0, max_value=4e9),
    st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2500, 1, 1)),
    st.datetimes(
        min_value=dt.datetime(1970, 1, 2),
        max_value=dt.datetime(2500, 1, 1),
        timezones=st.just(dt.timezone(dt.timedelta(hours=-5))),
    ),
    st.booleans(),
    st.text(max_size=2),
)
param_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-BIG, max_value=BIG),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.text(min_size=5995, max_size=6005, alphabet="xé"),
    st.lists(st.integers(), max_size=2),
    st.binary(max_size=2),
)
tag_values = st.one_of(
    st.text(max_size=20),
    st.text(min_size=7995, max_size=8005, alphabet="y\u202e"),
    st.integers(min_value=-BIG, max_value=BIG),
    st.booleans(),
    st.floats(allow_nan=True),
    st.none(),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)

ops = st.one_of(
    st.tuples(st.just("metric"), keys, values, steps, epochs, stamps, splits),
    st.tuples(
        st.just("metrics"),
        st.dictionaries(st.one_of(keys, st.text("ab", min_size=1, max_size=3)), values, max_size=4),
        steps,
        epochs,
        stamps,
        splits,
    ),
    st.tuples(st.just("params"), st.dictionaries(keys, param_values, max_size=3)),
    st.tuples(
        st.just("tags"),
        st.one_of(
            st.dictionaries(keys, tag_values, max_size=3),
            st.lists(keys, max_size=3),
        ),
    ),
    st.tuples(st.just("remove_tag"), keys),
)


class Model:
    """What the SDK must deliver for the calls it accepted."""

    def __init__(self) -> None:
        self.points: Counter[tuple[str, str, int, Any]] = Counter()
        self.last: dict[tuple[str, str], int] = {}
        self.params: dict[str, str] = {}
        self.tags: dict[str, str] = {}

    def point(self, key: Any, value: Any, step: Any, epoch: Any, ts: Any, split: Any) -> bool:
        """Apply one log_metric; False when it must raise (nothing logged)."""
        if not key_ok(key) or (split is not None and not key_ok(split)):
            return False
        f = metric_value(value)
        if f is None or not timestamp_ok(ts) or (epoch is not None and not int64_ok(epoch, 0)):
            return False
        if step is not None and not int64_ok(step):
            return False
        slot = (key, split or "")
        n = self.last.get(slot, -1) + 1 if step is None else int(step)
        self.last[slot] = n
        self.points[(key, split or "", n, _bits(f))] += 1
        return True


def _bits(f: float) -> Any:
    return "nan" if math.isnan(f) else struct.pack("<d", f)


def _apply(run: producers.Run, model: Model, op: tuple[Any, ...]) -> None:
    kind = op[0]
    raised: BaseException | None = None
    try:
        if kind == "metric":
            run.log_metric(*op[1:])
        elif kind == "metrics":
            run.log_metrics(*op[1:])
        elif kind == "params":
            run.log_params(op[1])
        elif kind == "tags":
            run.set_tags(op[1])
        else:
            run.remove_tag(op[1])
    except Exception as exc:
        if not isinstance(exc, DOCUMENTED):
            raise AssertionError(f"{kind}: undocumented {type(exc).__name__}: {exc}") from exc
        raised = exc
    if kind == "metric":
        ok = model.point(*op[1:])
        assert ok == (raised is None), (op, raised)
    elif kind == "metrics":
        _, metrics, step, epoch, ts, split = op
        # all or nothing: every key and value (and the shared arguments) checked first
        ok = (
            timestamp_ok(ts)
            and (split is None or key_ok(split))
            and (epoch is None or int64_ok(epoch, 0))
            and (step is None or int64_ok(step))
            and all(key_ok(k) and metric_value(x) is not None for k, x in metrics.items())
        )
        assert ok == (raised is None), (op, raised)
        if ok:
            for k, value in metrics.items():  # one point per key, in order
                assert model.point(k, value, step, epoch, 0.0, split)
    elif kind == "params":
        new: dict[str, str] = {}
        ok = True
        for k, value in op[1].items():
            text = param_text(value)
            if not key_ok(k) or text is None:
                ok = False
                break
            if model.params.get(k, text) != text:
                ok = False
                assert isinstance(raised, ParamConflict), (op, raised)
                break
            new[k] = text
        assert ok == (raised is None), (op, raised)
        if ok:
            model.params.update(new)
    elif kind == "tags":
        tags = op[1]
        items = list(tags.items()) if isinstance(tags, Mapping) else [(t, "") for t in tags]
        ok = all(key_ok(k) and tag_text(v) is not None for k, v in items)
        assert ok == (raised is None), (op, raised)
        if ok:
            model.tags.update({k: str(tag_text(v)) for k, v in items})
    else:
        ok = key_ok(op[1])
        assert ok == (raised is None), (op, raised)
        if ok:
            model.tags.pop(op[1], None)


def _delivered(payloads: list[bytes], run_id: str) -> Model:
    got = Model()
    for data in payloads:
        event: Any = codec.decode(data)
        if event.envelope.run_id != run_id:
            continue
        name = type(event).__name__
        if name == "MetricsLogged":
            for p in unpack_points(event).points():
                got.points[(p.key, p.split, p.step, _bits(p.value))] += 1
        elif name == "ParamsLogged":
            got.params.update(event.params)
        elif name == "TagsSet":
            got.tags.update(event.tags)
        elif name == "TagsRemoved":
            for k in event.keys:
                got.tags.pop(k, None)
    return got


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(calls=st.lists(ops, max_size=25))
def test_sdk_calls_raise_only_documented_errors_and_deliver_everything(
    recording: tuple[RecordingTransport, ClientConfig], calls: list[tuple[Any, ...]]
) -> None:
    transport, config = recording
    run = producers.start_run("fuzz", config=config, capture_code=False, capture_environment=False)
    model = Model()
    try:
        for op in calls:
            _apply(run, model, op)
    finally:
        delivered = run.end()
    assert delivered, "end() did not deliver everything"
    assert run.engine.error is None, run.engine.error
    got = _delivered(list(transport.payloads), run.id)
    missing = model.points - got.points
    extra = got.points - model.points
    assert not missing, f"accepted but not delivered: {list(missing)[:5]}"
    assert not extra, f"delivered but never accepted: {list(extra)[:5]}"
    assert got.params == model.params
    assert got.tags == model.tags


def test_huge_ints_raise_documented_errors_and_deliver_the_rest(
    recording: tuple[RecordingTransport, ClientConfig],
) -> None:
    transport, config = recording
    run = producers.start_run("huge", config=config, capture_code=False, capture_environment=False)
    model = Model()
    try:
        for n in HUGE:
            for op in (
                ("metric", "v", n, None, None, None, None),
                ("metric", "s", 1.0, n, None, None, None),
                ("metric", "e", 1.0, None, n, None, None),
                ("metric", "t", 1.0, None, None, n, None),
                ("metrics", {"m": 1.0}, None, None, n, None),
                ("params", {f"p{len(str(abs(n))) if abs(n) < 10**4000 else 'x'}": n}),
                ("tags", {"t": n}),
                ("metric", "ok", 2.0, None, None, None, None),
            ):
                _apply(run, model, op)
    finally:
        assert run.end()
    got = _delivered(list(transport.payloads), run.id)
    assert got.points == model.points
    assert sum(n for (k, *_), n in model.points.items() if k == "ok") == len(HUGE)
    assert sum(n for (k, *_), n in model.points.items() if k != "ok") == 1  # 2**64 as a value
    assert got.params == model.params
    assert got.tags == model.tags


# ---- artifact names against the real S3 --------------------------------------------------

artifact_keys = st.one_of(
    st.text(KEY_CHARS, min_size=1, max_size=20),
    st.text(min_size=1, max_size=10),
    st.sampled_from(
        ["../x", "a/../../x", "/etc/passwd", "a\\..\\b", "a\x00b", "x" * 251, "./", "a/./b", "."]
    ),
)


def _log_artifact(run: producers.Run, name: str) -> tuple[Any, Exception | None]:
    try:
        return run.log_artifact(name.encode("utf-8", "replace"), key=name), None
    except Exception as exc:  # noqa: BLE001 - the caller checks its type
        return None, exc


@pytest.mark.stack
@settings(
    max_examples=40,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(names=st.lists(artifact_keys, min_size=1, max_size=4, unique=True))
def test_sdk_artifact_names_stay_in_the_run_prefix(
    connection: Any, minio_client: Any, tmp_path: Path, names: list[str]
) -> None:
    project = f"fuzz-art-{uuid.uuid4().hex[:8]}"
    config = ClientConfig(
        s3_endpoint=connection.s3_endpoint,
        s3_access_key=connection.s3_access_key,
        s3_secret_key=connection.s3_secret_key,
        s3_bucket=connection.s3_bucket,
        project=project,
        mode="offline",
        spool_dir=str(tmp_path / "spool"),
    )
    run = producers.start_run("art", config=config, capture_code=False, capture_environment=False)
    stored: list[str] = []
    try:
        for name in names:
            info, exc = _log_artifact(run, name)
            if exc is not None:
                assert isinstance(exc, DOCUMENTED), f"{name!r}: {type(exc).__name__}: {exc}"
                assert not key_ok(name), f"{name!r} refused: {exc}"
                continue
            assert info is not None
            assert key_ok(name), f"{name!r} accepted"
            stored.append(info.key)
        listed = sorted(a.key for a in run.list_artifacts())
        assert listed == sorted(stored)
    finally:
        run.end()
        producers.shutdown(timeout=2.0)
    objects = bucket_objects(minio_client, connection.s3_bucket, project + "/")
    prefixes = (f"{project}/runs/{run.id}/artifacts/", f"{project}/blobs/sha256/")
    assert all(o.startswith(prefixes) for o in objects), sorted(objects)
    everything = bucket_objects(minio_client, connection.s3_bucket)
    strays = [o for o in everything if project in o and not o.startswith(prefixes)]
    assert not strays, strays


# ---- one end-to-end case through the real Kafka ------------------------------------------


@pytest.mark.stack
def test_odd_but_valid_input_survives_real_kafka(
    connection: Any, kafka_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.producers.helpers import consume

    monkeypatch.setenv("RUNSTREAM_HOME", str(tmp_path / "home"))
    config = ClientConfig(
        kafka_bootstrap=connection.kafka_bootstrap,
        topic=kafka_topic,
        mode="kafka",
        project="fuzz-e2e",
        spool_dir=str(tmp_path / "spool"),
    )
    run = producers.start_run("e2e", config=config, capture_code=False, capture_environment=False)
    model = Model()
    calls: list[tuple[Any, ...]] = [
        ("metric", "loss", float("nan"), INT64[0], None, None, "val"),
        ("metric", "loss", float("inf"), INT64[1], 0, 1e11, "val"),
        ("metric", "a" * 250, -0.0, None, None, dt.datetime(2500, 1, 1), None),
        ("metric", "x/y z.-_", np.float32(1.25), np.int64(5), None, 0, None),
        ("metric", "bad key!", 1.0, None, None, None, None),
        ("metric", "loss", 10**400, None, None, None, None),
        ("metrics", {"m1": True, "m2": fractions.Fraction(1, 3)}, None, 3, 1.5, "train"),
        ("params", {"p": "é\u202e\x00" * 100, "n": 10**4000, "f": float("nan")}),
        ("params", {"huge": 10**5000}),
        ("tags", {"t": "\U0001f600" * 8000, "empty": ""}),
        ("tags", ["label"]),
        ("remove_tag", "empty"),
    ]
    try:
        for op in calls:
            _apply(run, model, op)
    finally:
        assert run.end(), "end() did not deliver everything"
    got = _delivered(
        [codec.encode(e) for e in consume(connection.kafka_bootstrap, kafka_topic)], run.id
    )
    assert got.points == model.points
    assert got.params == model.params
    assert got.tags == model.tags
    assert len(model.points) == 6
    producers.shutdown(timeout=2.0)
