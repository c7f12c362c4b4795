"""Transports: how spooled events leave the machine. Same events, same bytes, either way.

- `KafkaTransport` (direct, trusted clusters): aiokafka idempotent producer, acks=all, the
  best compression the installed codecs allow (zstd > lz4 > none; gzip only when asked: at
  aiokafka's fixed level 9 it costs more CPU than a training job should pay).
- `HttpTransport` (multi-tenant, through the query API): POSTs batches to
  `{api_url}/api/v1/ingest` with `Authorization: Bearer <token>` and
  `Content-Type: application/vnd.runstream.avro-batch`. UNTESTED until the API exists.
  Body: `b"RSB1"`, then per event `u32 LE length | event bytes` (each event exactly as
  `schemas.encode` produced it; the server recomputes the partition key from the event).
  Expected answer: 2xx when every event is durable in Kafka; 4xx (except 408/429) means
  rejected; anything else (5xx, 408, 429, connection errors) is retried.
- `NullTransport` (offline): never connects; events wait in the spool for `runstream sync`.

Rule: `send` returns only when every record is acknowledged durable by the far side, and
raises `TransportUnavailable` (retry later, same bytes) or `TransportRejected` (do not retry
blindly) otherwise. Resending after any failure is harmless: events carry their own ids.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, Protocol

from producers.config import ClientConfig
from producers.errors import ConfigError, TransportRejected, TransportUnavailable
from producers.spool import Record

HTTP_CONTENT_TYPE = "application/vnd.runstream.avro-batch"
HTTP_MAGIC = b"RSB1"
_U32 = struct.Struct("<I")


class Transport(Protocol):
    """Moves encoded events to the log; see the module rule."""

    name: str

    async def start(self) -> None: ...

    async def send(self, records: Sequence[Record]) -> None: ...

    async def close(self) -> None: ...


def best_compression() -> str | None:
    """zstd > lz4 > None, by what aiokafka can encode in this environment."""
    from aiokafka import codec

    if codec.has_zstd():
        return "zstd"
    if codec.has_lz4():
        return "lz4"
    return None


class KafkaTransport:
    """Direct produce to Kafka (idempotent, acks=all)."""

    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        compression: str | None = "auto",
        request_timeout_s: float = 30.0,
        max_request_size: int = 1024 * 1024,
        linger_ms: int = 5,
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.compression = best_compression() if compression == "auto" else compression
        self.request_timeout_ms = int(request_timeout_s * 1000)
        self.max_request_size = max_request_size
        self.linger_ms = linger_ms
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer
        from aiokafka.errors import KafkaError

        # connection refusals while a broker is down are expected and reported by us
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            enable_idempotence=True,
            acks="all",
            compression_type=self.compression,
            linger_ms=self.linger_ms,
            max_batch_size=self.max_request_size,
            max_request_size=self.max_request_size,
            request_timeout_ms=self.request_timeout_ms,
            retry_backoff_ms=200,
            client_id="runstream-sdk",
        )
        try:
            await asyncio.wait_for(producer.start(), self.request_timeout_ms / 1000)
        except (KafkaError, OSError, asyncio.TimeoutError) as exc:
            await _quiet_stop(producer)
            raise TransportUnavailable(f"Kafka at {self.bootstrap} unreachable: {exc!r}") from exc
        self._producer = producer

    async def send(self, records: Sequence[Record]) -> None:
        from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

        producer = self._producer
        if producer is None:
            raise TransportUnavailable("Kafka transport not started")
        try:
            futures = [await producer.send(self.topic, value=r.payload, key=r.key) for r in records]
            await asyncio.gather(*futures)
        except (KafkaConnectionError, KafkaTimeoutError, OSError, asyncio.TimeoutError) as exc:
            raise TransportUnavailable(f"Kafka send failed: {exc!r}") from exc
        except KafkaError as exc:
            if getattr(exc, "retriable", False):
                raise TransportUnavailable(f"Kafka send failed: {exc!r}") from exc
            raise TransportRejected(f"Kafka refused the events: {exc!r}") from exc

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _quiet_stop(producer)


async def _quiet_stop(producer: Any) -> None:
    try:
        await asyncio.wait_for(producer.stop(), 10)
    except Exception:  # noqa: BLE001 - stopping a broken producer must not mask the cause
        logging.getLogger(__name__).debug("aiokafka producer stop failed", exc_info=True)


def encode_http_batch(records: Sequence[Record]) -> bytes:
    """The `application/vnd.runstream.avro-batch` body (see the module docstring)."""
    parts = [HTTP_MAGIC]
    for r in records:
        parts.append(_U32.pack(len(r.payload)))
        parts.append(r.payload)
    return b"".join(parts)


def decode_http_batch(body: bytes) -> list[bytes]:
    """The inverse of `encode_http_batch` (for the API's ingest endpoint and tests)."""
    if body[:4] != HTTP_MAGIC:
        raise ValueError("not a runstream avro-batch body")
    out, off = [], 4
    while off < len(body):
        if off + 4 > len(body):
            raise ValueError("truncated avro-batch body")
        (n,) = _U32.unpack_from(body, off)
        off += 4
        if off + n > len(body):
            raise ValueError("truncated avro-batch body")
        out.append(body[off : off + n])
        off += n
    return out


class HttpTransport:
    """POSTs event batches to the query API's ingest endpoint. UNTESTED: no API yet."""

    name = "http"

    def __init__(
        self,
        api_url: str,
        token: str | None,
        *,
        timeout_s: float = 30.0,
        max_batch_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.url = api_url.rstrip("/") + "/api/v1/ingest"
        self.token = token
        self.timeout_s = timeout_s
        self.max_batch_bytes = max_batch_bytes

    async def start(self) -> None:
        return None

    async def send(self, records: Sequence[Record]) -> None:
        batch: list[Record] = []
        size = 0
        for r in records:
            if batch and size + len(r.payload) > self.max_batch_bytes:
                await asyncio.to_thread(self._post, encode_http_batch(batch))
                batch, size = [], 0
            batch.append(r)
            size += len(r.payload)
        if batch:
            await asyncio.to_thread(self._post, encode_http_batch(batch))

    def _post(self, body: bytes) -> None:
        headers = {"Content-Type": HTTP_CONTENT_TYPE}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500 and exc.code not in (408, 429):
                raise TransportRejected(f"ingest refused the batch: HTTP {exc.code}") from exc
            raise TransportUnavailable(f"ingest failed: HTTP {exc.code}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise TransportUnavailable(f"ingest unreachable at {self.url}: {exc}") from exc

    async def close(self) -> None:
        return None


class NullTransport:
    """Offline mode: nothing leaves the machine; `send` is never called by the engine."""

    name = "offline"

    async def start(self) -> None:
        return None

    async def send(self, records: Sequence[Record]) -> None:
        raise TransportUnavailable("offline mode: events stay in the spool until synced")

    async def close(self) -> None:
        return None


def make_transport(config: ClientConfig, *, compression: str | None = "auto") -> Transport:
    """The transport `config.mode` selects."""
    if config.mode == "kafka":
        if not config.kafka_bootstrap:
            raise ConfigError("mode 'kafka' needs RUNSTREAM_KAFKA_BOOTSTRAP")
        return KafkaTransport(config.kafka_bootstrap, config.topic, compression=compression)
    if config.mode == "http":
        if not config.api_url:
            raise ConfigError("mode 'http' needs RUNSTREAM_API_URL")
        return HttpTransport(config.api_url, config.token)
    return NullTransport()
