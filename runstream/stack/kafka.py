"""Apache Kafka 4 (KRaft) from Maven Central jars: install, configure, format, start, probe.

The jars are resolved once by Maven from deploy/kafka/pom.xml into the cache folder; a
second install is a no-op that touches no network. Storage is formatted on first start and
kept on disk, so a restart finds its data.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable, Sequence

from runstream.stack.errors import ComponentFailed
from runstream.stack.procs import ProcessRecord, spawn

POM_NAME = "pom.xml"


def pom_path() -> Path:
    """deploy/kafka/pom.xml of a source checkout, or the copy shipped inside the wheel."""
    here = Path(__file__).resolve()
    for candidate in (
        here.parents[2] / "deploy" / "kafka" / POM_NAME,
        here.parents[1] / "_deploy" / "kafka" / POM_NAME,
    ):
        if candidate.is_file():
            return candidate
    raise ComponentFailed("kafka", "deploy/kafka/pom.xml not found beside the package")


def kafka_version(pom: Path) -> str:
    m = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom.read_text())
    if not m:
        raise ComponentFailed("kafka", f"no <kafka.version> in {pom}")
    return m.group(1).strip()


def lib_dir(cache: Path) -> Path:
    pom = pom_path()
    return cache / f"kafka-{kafka_version(pom)}" / "lib"


def is_installed(cache: Path) -> bool:
    return (lib_dir(cache) / ".complete").is_file()


def install(cache: Path, progress: Callable[[str], None] = lambda _: None) -> Path:
    """Resolve the broker jars with Maven into the cache (no-op when already there)."""
    lib = lib_dir(cache)
    if (lib / ".complete").is_file():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ComponentFailed("kafka", "Maven (mvn) is not installed; it fetches the broker jars")
    pom = pom_path()
    tmp = lib.with_name("lib.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    progress(
        f"resolving Apache Kafka {kafka_version(pom)} jars from Maven Central (first run only)"
    )
    cmd = [
        mvn,
        "-B",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={tmp}",
        "-Dmdep.useBaseVersion=true",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    downloaded = 0
    for line in proc.stdout or ():
        tail = (tail + [line.rstrip()])[-30:]
        if "Downloaded from" in line:
            downloaded += 1
            if downloaded % 10 == 0:
                progress(f"  {downloaded} artifacts downloaded…")
    if proc.wait() != 0:
        raise ComponentFailed("kafka", "mvn could not resolve the broker jars:\n" + "\n".join(tail))
    jars = sorted(p.name for p in tmp.glob("*.jar"))
    if not any(j.startswith("kafka_2.13-") for j in jars):
        raise ComponentFailed("kafka", f"mvn finished but no kafka_2.13 jar in {tmp}")
    (tmp / ".complete").write_text("\n".join(jars) + "\n")
    shutil.rmtree(lib, ignore_errors=True)
    tmp.rename(lib)
    progress(f"  {len(jars)} jars cached in {lib}")
    return lib


LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = OUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def server_properties(
    node_id: int,
    broker_port: int,
    controller_port: int,
    log_dir: Path,
    *,
    partitions: int,
    voters: Sequence[tuple[int, int]] | None = None,
    replication: int = 1,
) -> str:
    """server.properties for one combined broker+controller node on 127.0.0.1."""
    quorum = (
        ",".join(f"127.0.0.1:{p}" for _, p in voters) if voters else f"127.0.0.1:{controller_port}"
    )
    min_isr = 1 if replication == 1 else max(1, replication - 1)
    return f"""\
process.roles=broker,controller
node.id={node_id}
controller.quorum.bootstrap.servers={quorum}
listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={log_dir}
num.partitions={partitions}
default.replication.factor={replication}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replication}
offsets.topic.num.partitions=8
transaction.state.log.replication.factor={replication}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replication}
share.coordinator.state.topic.min.isr={min_isr}
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
auto.create.topics.enable=false
log.retention.hours=-1
log.segment.bytes=268435456
message.max.bytes=8388608
num.network.threads=2
num.io.threads=4
"""


def format_storage(
    lib: Path,
    config: Path,
    log_dir: Path,
    cluster_id: str,
    java: str,
    initial_controllers: str | None = None,
) -> None:
    """Format the KRaft log dir once (skipped when meta.properties exists)."""
    if (log_dir / "meta.properties").is_file():
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        java,
        "-cp",
        f"{lib}/*",
        "kafka.tools.StorageTool",
        "format",
        "-t",
        cluster_id,
        "-c",
        str(config),
    ]
    cmd += (
        ["--initial-controllers", initial_controllers] if initial_controllers else ["--standalone"]
    )
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        raise ComponentFailed("kafka", f"storage format failed: {res.stdout}{res.stderr}")


def new_cluster_id() -> str:
    """A random KRaft cluster id. Like Kafka's own `Uuid.randomUuid()`, never one starting
    with "-": StorageTool's argument parser would read `-t -abc…` as a missing value."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def start(lib: Path, config: Path, log: Path, java: str, heap_mb: int = 512) -> ProcessRecord:
    cfg_dir = config.parent
    (cfg_dir / "log4j2.properties").write_text(LOG4J2)
    argv = [
        java,
        f"-Xmx{heap_mb}m",
        f"-Xms{min(heap_mb, 256)}m",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={cfg_dir / 'log4j2.properties'}",
        f"-Dkafka.logs.dir={log.parent}",
        "-cp",
        f"{lib}/*",
        "kafka.Kafka",
        str(config),
    ]
    return spawn("kafka", argv, log)


def probe(bootstrap: str, timeout: float = 5.0) -> int:
    """A real metadata request; returns the number of brokers that answered."""

    async def _run() -> int:
        from aiokafka.admin import AIOKafkaAdminClient

        # connection refusals while the broker boots are expected; keep them out of the output
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000)
        )
        try:
            await asyncio.wait_for(admin.start(), timeout)
            meta = await asyncio.wait_for(admin.describe_cluster(), timeout)
            return len(meta["brokers"])
        finally:
            await admin.close()

    return asyncio.run(_run())


def wait_ready(bootstrap: str, rec: ProcessRecord, timeout: float, brokers: int = 1) -> float:
    """Block until a metadata request lists `brokers` brokers; raise if the process dies."""
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout:
        if not rec.alive():
            raise ComponentFailed("kafka", "broker process exited during start-up", rec.log)
        try:
            if probe(bootstrap, timeout=2.0) >= brokers:
                return time.monotonic() - t0
            last = "fewer brokers than expected"
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise ComponentFailed("kafka", f"not ready after {timeout:.0f}s ({last})", rec.log)


def wait_ready_bootstrap(bootstrap: str, timeout: float) -> float:
    """Like wait_ready for a broker we do not own as a process (containers, clusters)."""
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout:
        try:
            if probe(bootstrap, timeout=2.0) >= 1:
                return time.monotonic() - t0
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.3)
    raise ComponentFailed("kafka", f"{bootstrap} not ready after {timeout:.0f}s ({last})")


def create_topics(bootstrap: str, topics: dict[str, int], replication: int = 1) -> None:
    """Create topics that do not exist yet (name -> partitions)."""

    async def _run() -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [
                NewTopic(name, n, replication) for name, n in topics.items() if name not in existing
            ]
            if new:
                await admin.create_topics(new)
        finally:
            await admin.close()

    asyncio.run(_run())
