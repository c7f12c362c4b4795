"""A multi-node Apache Kafka 4 (KRaft) cluster on 127.0.0.1, for fault-tolerance tests.

Every node is a combined broker+controller (`process.roles=broker,controller`), so `n` nodes
form an `n`-voter controller quorum; topics default to replication factor `min(n, 3)` and
`min.insync.replicas = replication - 1`. Data, configs and logs live under `home`; each node's
process is recorded in `home/cluster.json` so that `stop()` (or a later `KafkaCluster(home)
.stop()` after a crash) ends exactly the processes started here, by pid.

    cluster = KafkaCluster(home, cache)
    bootstrap = cluster.start(3)      # "127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"
    cluster.kill(1)                   # SIGKILL node 1 (fault injection)
    cluster.restart(1)                # same data, same ports
    cluster.stop()                    # every node, SIGTERM then SIGKILL
"""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from runstream.stack import kafka
from runstream.stack.errors import ComponentFailed
from runstream.stack.ports import free_ports
from runstream.stack.procs import ProcessRecord, kill, processes_referencing, start_ticks, stop


@dataclass(frozen=True)
class Node:
    """One combined broker+controller node."""

    node_id: int
    broker_port: int
    controller_port: int
    directory_id: str

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.broker_port}"


class KafkaCluster:
    """`n` KRaft nodes on loopback under `home`; see the module docstring."""

    def __init__(
        self,
        home: Path,
        cache: Path,
        *,
        partitions: int = 4,
        heap_mb: int = 256,
        java: str | None = None,
    ) -> None:
        self.home = Path(home).resolve()
        self.cache = Path(cache).resolve()
        self.partitions = partitions
        self.heap_mb = heap_mb
        self.java = java or shutil.which("java") or "java"
        self.nodes: list[Node] = []
        self.records: dict[int, ProcessRecord] = {}
        self.cluster_id = ""

    # ---- paths and state ---------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.home / "cluster.json"

    def _node_dir(self, node_id: int) -> Path:
        return self.home / f"node-{node_id}"

    def _config(self, node_id: int) -> Path:
        return self._node_dir(node_id) / "config" / "server.properties"

    def _save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        state = {
            "cluster_id": self.cluster_id,
            "nodes": [n.__dict__ for n in self.nodes],
            "processes": {str(k): r.to_json() for k, r in self.records.items()},
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    @property
    def bootstrap(self) -> str:
        return ",".join(n.address for n in self.nodes)

    @property
    def replication(self) -> int:
        return min(len(self.nodes), 3)

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self, n: int = 3, timeout: float = 180.0) -> str:
        """Configure, format and start `n` nodes; return the bootstrap list once all serve."""
        if self.nodes:
            raise ComponentFailed("kafka", f"a cluster is already started under {self.home}")
        if n < 1:
            raise ValueError("n must be at least 1")
        lib = kafka.install(self.cache)
        ports = free_ports(2 * n)
        self.cluster_id = kafka.new_cluster_id()
        self.nodes = [
            Node(i, ports[2 * i], ports[2 * i + 1], kafka.new_cluster_id()) for i in range(n)
        ]
        voters = [(nd.node_id, nd.controller_port) for nd in self.nodes]
        initial = ",".join(
            f"{nd.node_id}@127.0.0.1:{nd.controller_port}:{nd.directory_id}" for nd in self.nodes
        )
        try:
            for nd in self.nodes:
                cfg = self._config(nd.node_id)
                cfg.parent.mkdir(parents=True, exist_ok=True)
                data = self._node_dir(nd.node_id) / "data"
                cfg.write_text(
                    kafka.server_properties(
                        nd.node_id,
                        nd.broker_port,
                        nd.controller_port,
                        data,
                        partitions=self.partitions,
                        voters=voters,
                        replication=self.replication,
                    )
                )
                kafka.format_storage(lib, cfg, data, self.cluster_id, self.java, initial)
            for nd in self.nodes:
                self._spawn(nd.node_id)
            self._save()
            for nd in self.nodes:
                kafka.wait_ready(nd.address, self.records[nd.node_id], timeout, brokers=n)
        except BaseException:
            self.stop()
            raise
        return self.bootstrap

    def _spawn(self, node_id: int) -> ProcessRecord:
        lib = kafka.lib_dir(self.cache)
        log = self._node_dir(node_id) / "logs" / "kafka.log"
        rec = kafka.start(lib, self._config(node_id), log, self.java, self.heap_mb)
        self.records[node_id] = rec
        return rec

    def kill(self, node_id: int) -> None:
        """SIGKILL one node (no clean shutdown): fault injection."""
        kill(self.records[node_id])

    def restart(self, node_id: int, timeout: float = 120.0) -> float:
        """Start a killed/stopped node again on its data and ports; seconds until it serves."""
        rec = self.records.get(node_id)
        if rec is not None and rec.alive():
            stop(rec)
        rec = self._spawn(node_id)
        self._save()
        node = self.nodes[node_id]
        return kafka.wait_ready(node.address, rec, timeout, brokers=len(self.nodes))

    def alive(self) -> list[int]:
        return [i for i, r in self.records.items() if r.alive()]

    def create_topic(self, name: str, partitions: int | None = None) -> None:
        """A topic replicated on `replication` nodes (min.insync.replicas = replication - 1)."""
        kafka.create_topics(
            self.bootstrap, {name: partitions or self.partitions}, replication=self.replication
        )

    def leaders(self, topic: str) -> dict[int, int]:
        """partition -> id of the node leading it (-1: no leader right now)."""

        async def _run() -> dict[int, int]:
            from aiokafka.admin import AIOKafkaAdminClient

            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
            await admin.start()
            try:
                (desc,) = await admin.describe_topics([topic])
                return {int(p["partition"]): int(p["leader"]) for p in desc["partitions"]}
            finally:
                await admin.close()

        return asyncio.run(_run())

    def stop(self, *, graceful: bool = True) -> list[int]:
        """Stop every node started here (and any left from a crashed earlier owner of home).

        graceful=False SIGKILLs at once (the data is about to be deleted anyway)."""

        def end(rec: ProcessRecord) -> bool:
            if graceful:
                return stop(rec, timeout=15)
            was = rec.alive()
            kill(rec)
            return was

        stopped = [i for i, rec in self.records.items() if end(rec)]
        recorded = {r.pid for r in self.records.values()}
        try:
            old = json.loads(self.state_file.read_text()).get("processes", {})
        except (OSError, ValueError):
            old = {}
        for raw in old.values():
            rec = ProcessRecord.from_json(raw)
            if rec.pid not in recorded and end(rec):
                stopped.append(-1)
        for pid, argv in processes_referencing(str(self.home)):
            ticks = start_ticks(pid)
            if "kafka.Kafka" in argv and ticks is not None:
                end(ProcessRecord("kafka", pid, ticks, ""))
                stopped.append(-1)
        self.records.clear()
        with_state = self.state_file.is_file()
        if with_state:
            self._save()
        return stopped

    def destroy(self) -> None:
        """Kill every node and delete the cluster's data."""
        self.stop(graceful=False)
        shutil.rmtree(self.home, ignore_errors=True)


def start(n: int, home: Path, cache: Path) -> KafkaCluster:
    """Start an `n`-node cluster under `home`; its `bootstrap` lists every node."""
    cluster = KafkaCluster(home, cache)
    cluster.start(n)
    return cluster
