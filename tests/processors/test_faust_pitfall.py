"""Why the worker is not a faust agent: a characterization test of faust-streaming 0.15.3.

`Stream.take()` acks its buffered events in a `finally:` (faust/streams.py, around the
`yield list(buffer)`), so when the sink write raises out of `async for batch in
stream.take(...)`, the batch's offsets are committed although nothing was written. If this
test starts failing, faust changed and the choice can be revisited (README "Why not a faust
agent")."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import GroupCoordinatorNotAvailableError

from runstream.stack import Connection
from runstream.stack.kafka import create_topics

pytestmark = [pytest.mark.stack, pytest.mark.slow]


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offs = await admin.list_consumer_group_offsets(group)
    except GroupCoordinatorNotAvailableError:
        return -1
    finally:
        await admin.close()
    return sum(m.offset for tp, m in offs.items() if tp.topic == topic)


@pytest.mark.filterwarnings("ignore")
def test_faust_take_commits_a_batch_whose_sink_raised(
    connection: Connection, tmp_path: Path
) -> None:
    import faust

    boot = connection.kafka_bootstrap
    topic_name = f"faust.pitfall.{uuid.uuid4().hex[:8]}"
    create_topics(boot, {topic_name: 1})
    app_id = f"pitfall-{uuid.uuid4().hex[:8]}"
    app = faust.App(
        app_id,
        broker=f"kafka://{boot}",
        web_enabled=False,
        topic_partitions=1,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_commit_interval=0.2,
        consumer_auto_offset_reset="earliest",
        store="memory://",
        datadir=str(tmp_path / "faust"),
    )
    topic = app.topic(topic_name, value_serializer="raw", key_serializer="raw")
    written: list[Any] = []
    attempts: list[int] = []

    @app.agent(topic)
    async def project(stream: Any) -> None:
        async for batch in stream.take(100, within=0.5):
            attempts.append(len(batch))
            raise RuntimeError("sink down")  # the write fails: nothing is written

    async def main() -> int:
        prod = AIOKafkaProducer(bootstrap_servers=boot)
        await prod.start()
        for i in range(50):
            await prod.send_and_wait(topic_name, b"%d" % i)
        await prod.stop()
        await app.start()
        try:
            deadline = time.monotonic() + 30
            while await _committed(boot, app_id, topic_name) < 50:
                assert time.monotonic() < deadline, "faust committed nothing"
                await asyncio.sleep(0.2)
            return await _committed(boot, app_id, topic_name)
        finally:
            await app.stop()

    committed = asyncio.run(main())
    assert attempts  # the agent got the batch
    assert written == []  # ... the sink wrote none of it
    assert committed == 50  # ... and faust committed it all: those events are lost
