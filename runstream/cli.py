"""`runstream` command line: the local stack (up/down/status/env/install) and, as the
other packages land, serve / replay / sync.

The stack lives under RUNSTREAM_HOME (default ~/.runstream; `make` uses ./.runstream).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from runstream.settings import ServerSettings

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
console = Console(stderr=True)


def home_dir(home: Optional[Path] = None) -> Path:
    if home is not None:
        return home
    return Path(os.environ.get("RUNSTREAM_HOME", Path.home() / ".runstream"))


HomeOpt = typer.Option(
    None, "--home", help="Stack directory (default $RUNSTREAM_HOME or ~/.runstream)."
)


def _progress(msg: str) -> None:
    console.print(f"[dim]·[/dim] {msg}")


@app.command()
def install(home: Optional[Path] = HomeOpt) -> None:
    """Download what the local stack needs (Kafka jars); offline and instant once done."""
    from runstream.stack import LocalStack

    LocalStack(home_dir(home)).install(_progress)
    console.print("[green]installed[/green]")


@app.command()
def up(
    home: Optional[Path] = HomeOpt,
    backend: str = typer.Option(
        "local", help="local (Maven Kafka + SeaweedFS + chDB) or containers (needs Docker)."
    ),
    with_serve: bool = typer.Option(
        True, "--serve/--no-serve", help="Also run the projection worker + API (serve)."
    ),
) -> None:
    """Start the local stack (idempotent) and print how to reach it."""
    from runstream.stack import LocalStack, StackError

    if backend == "containers":
        from runstream.stack.containers import docker_status

        ok, why = docker_status()
        if not ok:
            console.print(f"[red]containers backend unavailable:[/red] {why}")
            raise typer.Exit(2)
        console.print(
            "[yellow]the containers backend runs inside a test session only "
            "(testcontainers removes its containers when the process exits); "
            "use it through RUNSTREAM_TEST_STACK=containers make test[/yellow]"
        )
        raise typer.Exit(2)
    if backend != "local":
        console.print(f"[red]unknown backend {backend!r}[/red] (local or containers)")
        raise typer.Exit(2)
    stack = LocalStack(home_dir(home))
    try:
        conn = stack.up(_progress, serve=with_serve)
    except StackError as exc:
        console.print(f"[red]stack failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(f"[green]stack up[/green] under {stack.home}")
    _print_env(conn.env(), exports=False)
    console.print(f"logs: {stack.logs}   connection file: {stack.connection_file}")


@app.command()
def down(home: Optional[Path] = HomeOpt) -> None:
    """Stop every process of the local stack (data stays on disk)."""
    from runstream.stack import LocalStack

    stack = LocalStack(home_dir(home))
    stopped = stack.down(_progress)
    console.print(
        f"[green]stopped[/green] {', '.join(stopped)}" if stopped else "nothing was running"
    )


@app.command()
def status(home: Optional[Path] = HomeOpt, as_json: bool = typer.Option(False, "--json")) -> None:
    """What is running, on which ports, healthy or not; stale processes are listed."""
    from runstream.stack import LocalStack

    info = LocalStack(home_dir(home)).status()
    running = all(info[c]["running"] for c in ("kafka", "s3"))
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        if not running:
            raise typer.Exit(3)
        return
    table = Table("component", "running", "ready", "pid", "port / url", "log")
    for name, d in info.items():
        if name == "stale":
            continue
        table.add_row(
            name,
            str(d.get("running", "")),
            str(d.get("ready", "")),
            str(d.get("pid") or ""),
            str(d.get("port") or d.get("url") or ""),
            str(d.get("log") or d.get("note") or ""),
        )
    Console().print(table)
    stale = info["stale"]["pids"]
    if stale:
        console.print(
            f"[yellow]stale processes referencing this stack: {stale}[/yellow] "
            "(`runstream down` stops them)"
        )
    if not running:
        raise typer.Exit(3)


@app.command()
def env(home: Optional[Path] = HomeOpt) -> None:
    """Print `export RUNSTREAM_…=…` lines for the running stack (eval-able)."""
    from runstream.stack import LocalStack, StackNotRunning

    try:
        conn = LocalStack(home_dir(home)).connection()
    except StackNotRunning as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(3) from exc
    _print_env(conn.env(), exports=True)


@app.command("new-run-id")
def new_run_id() -> None:
    """Print a new run id (a time-ordered UUIDv7) for a launcher to give every rank of one
    run: `RUNSTREAM_RUN_ID=$(runstream new-run-id) torchrun ...`. Runs created together then
    sit together in the read models' run-keyed tables, as the SDK's own ids do."""
    from schemas import new_event_id

    print(new_event_id())


@app.command()
def worker(
    database: str = typer.Option("runstream", help="Read-model database."),
    instance_id: Optional[str] = typer.Option(
        None, help="Stable id per worker (static group membership: fast restarts)."
    ),
    engine: str = typer.Option("aiokafka", help="aiokafka (default) or faust."),
    metrics_port: Optional[int] = typer.Option(
        None, help="Serve Prometheus /metrics (lag, throughput, memory) on this port."
    ),
    metrics_host: str = typer.Option("127.0.0.1", help="Address for --metrics-port."),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Run one projection worker (cluster mode: many share the consumer group)."""
    from runstream.serve import run_worker

    _logging()
    if engine not in ("aiokafka", "faust"):
        console.print(f"[red]unknown engine {engine!r}[/red] (aiokafka or faust)")
        raise typer.Exit(2)
    addr = None if metrics_port is None else (metrics_host, metrics_port)
    run_worker(_server_settings(home), database, instance_id, engine, addr)


@app.command()
def replay(
    source: str = typer.Option("kafka", help="kafka (from offset 0) or archive (S3 segments)."),
    cluster: bool = typer.Option(
        False,
        help="Run here against the ClickHouse server (cluster mode) instead of "
        "inside the serve process that owns chDB.",
    ),
    api_url: Optional[str] = typer.Option(None, help="The serve process (default: local stack)."),
    database: str = typer.Option("runstream", help="Read-model database."),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Rebuild every read model from the log into a new database and switch reads to it.

    Interrupt with Ctrl-C; running it again resumes where it stopped.
    """
    from runstream.replay import ReplayJob, run_replay

    if cluster:
        from runstream.serve import clickhouse_client, minio_client

        settings = _server_settings(home)
        from processors.archive import EventArchive

        archive = EventArchive(minio_client(settings), settings.s3_bucket)
        job = ReplayJob(source)
        import threading

        t = threading.Thread(
            target=run_replay,
            daemon=True,
            args=(clickhouse_client(settings), settings, database, job, archive),
        )
        t.start()
        _watch_replay(lambda: job.view(), lambda: job.stop.set(), t.is_alive)
        return
    import httpx

    from runstream.stack import LocalStack, StackNotRunning

    if api_url is None:
        try:
            api_url = LocalStack(home_dir(home)).connection().api_url
        except StackNotRunning as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(3) from exc
    if not api_url:
        console.print("[red]serve is not running: `runstream up` starts it[/red]")
        raise typer.Exit(3)
    token = os.environ.get("RUNSTREAM_TOKEN")
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.post(f"{api_url}/admin/replay", params={"source": source}, headers=auth, timeout=10)
    if r.status_code != 202:
        console.print(f"[red]replay refused ({r.status_code}):[/red] {r.text}")
        raise typer.Exit(1)

    def view() -> dict[str, Any]:
        out: dict[str, Any] = httpx.get(f"{api_url}/admin/replay", headers=auth, timeout=10).json()
        return out

    _watch_replay(
        view,
        lambda: httpx.delete(f"{api_url}/admin/replay", headers=auth, timeout=10),
        lambda: view()["state"] == "running",
    )


def _watch_replay(
    view: Callable[[], dict[str, Any]], interrupt: Callable[[], object], running: Callable[[], bool]
) -> None:
    import time

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("replay"),
        BarColumn(),
        TextColumn(
            "{task.completed:,.0f} / {task.total:,.0f} offsets · {task.fields[events]:,} events"
        ),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("replay", total=1, events=0)
        try:
            while running():
                v = view()
                parts = v["partitions"].values()
                done = sum(p["next_offset"] for p in parts)
                total = max(sum(p["end_offset"] or p["next_offset"] for p in parts), done, 1)
                bar.update(task, completed=done, total=total, events=v["events"])
                time.sleep(0.5)
        except KeyboardInterrupt:
            interrupt()
            console.print("[yellow]interrupted: run `runstream replay` again to resume[/yellow]")
            raise typer.Exit(130) from None
    v = view()
    if v["state"] != "completed":
        console.print(f"[red]replay {v['state']}[/red] {v.get('error') or ''}")
        raise typer.Exit(1)
    console.print(
        f"[green]replay completed[/green]: {v['events']:,} events into "
        f"{v['database']}; reads switched: {v['switched']}"
    )


token_app = typer.Typer(no_args_is_help=True, help="API tokens scoped to a project.")
app.add_typer(token_app, name="token")


def _token_client(home: Optional[Path]) -> Any:
    """ClickHouse for the token table; with chDB only while serve is not holding it."""
    from runstream.serve import clickhouse_client
    from runstream.stack import LocalStack

    settings = _server_settings(home)
    if settings.clickhouse_url.startswith("chdb://"):
        recs = LocalStack(home_dir(home)).records()
        if "serve" in recs and recs["serve"].alive():
            console.print(
                "[red]serve owns the embedded ClickHouse (chDB) right now:[/red] run "
                "`runstream down` first, then `runstream up` again after this"
            )
            raise typer.Exit(3)
    return clickhouse_client(settings)


@token_app.command("issue")
def token_issue(
    project: Optional[str] = typer.Argument(None, help="The project the token may read and write."),
    operator: bool = typer.Option(
        False, "--operator", help="An operator token: every project, and the admin routes."
    ),
    name: str = typer.Option("", help="A label for humans."),
    database: str = typer.Option("runstream"),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Issue a token (printed once; only its sha256 is stored)."""
    from query_api.auth import OPERATOR, issue_token

    if operator == bool(project) or project == OPERATOR:
        console.print(
            f"[red]give a PROJECT or --operator (not both; {OPERATOR!r} is reserved)[/red]"
        )
        raise typer.Exit(2)
    issued = issue_token(_token_client(home), database, project or OPERATOR, name)
    what = "an operator" if operator else f"project {project!r}"
    console.print(f"token {issued.info.token_id} for {what} (shown once):")
    typer.echo(issued.token)


@token_app.command("list")
def token_list(database: str = typer.Option("runstream"), home: Optional[Path] = HomeOpt) -> None:
    """Every token issued (ids, projects, revoked or not — never the secret)."""
    from query_api.auth import list_tokens

    table = Table("id", "project", "name", "created", "revoked")
    for t in list_tokens(_token_client(home), database):
        table.add_row(t.token_id, t.project, t.name, str(t.created_at), str(t.revoked))
    Console().print(table)


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The token id shown by `runstream token list`."),
    database: str = typer.Option("runstream"),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Revoke a token at once."""
    from query_api.auth import revoke_token

    if not revoke_token(_token_client(home), database, token_id):
        console.print(f"[red]no live token {token_id!r}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {token_id}")


SpoolDirArg = typer.Argument(..., help="A spool directory (offline mode).")


@app.command()
def sync(directory: Path = SpoolDirArg) -> None:
    """Upload events recorded offline (or left by a crash) to Kafka / the API, once."""
    from producers.errors import RunstreamError
    from producers.sync import sync_spool

    try:
        result = sync_spool(directory, progress=True)
    except RunstreamError as exc:
        console.print(f"[red]sync failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]synced[/green] {result.events:,} events ({result.bytes:,} bytes) "
        f"from {result.spools} spool(s)"
    )
    if result.skipped_locked:
        console.print(
            f"[yellow]in use by a running process, skipped:[/yellow] "
            f"{', '.join(result.skipped_locked)}"
        )
    if result.failed:
        console.print(f"[red]failed:[/red] {', '.join(result.failed)}")
        raise typer.Exit(1)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def bench(ctx: typer.Context) -> None:
    """Run the benchmarks: Runstream beside an MLflow server, one table (source checkout).

    Arguments go to `python -m benchmarks` (e.g. `--quick`, `--only 1,4`, `--write-md`).
    """
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / "benchmarks" / "suite.py").exists():
        console.print(
            "[red]benchmarks/ is not here:[/red] `runstream bench` runs from a source "
            "checkout of Runstream (the benchmarks are not part of the installed package)"
        )
        raise typer.Exit(2)
    done = subprocess.run([sys.executable, "-m", "benchmarks", *ctx.args], cwd=root)
    raise typer.Exit(done.returncode)


def _server_settings(home: Optional[Path]) -> ServerSettings:
    from runstream.settings import ServerSettings

    try:
        return ServerSettings.load(home=home_dir(home))
    except (LookupError, ValueError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def api(
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8765),
    database: str = typer.Option("runstream", help="Read-model database."),
    home: Optional[Path] = HomeOpt,
) -> None:
    """The query API alone (cluster mode, against a ClickHouse server)."""
    from runstream.serve import run_api

    _logging()
    run_api(_server_settings(home), database, host, port)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Bind address."),
    port: int = typer.Option(8765),
    database: str = typer.Option("runstream", help="Read-model database."),
    home: Optional[Path] = HomeOpt,
) -> None:
    """One machine: projection worker + query API in one process over one chDB."""
    from runstream.serve import WorkerDied
    from runstream.serve import serve as run_serve

    _logging()
    try:
        run_serve(_server_settings(home), database, host, port)
    except WorkerDied as exc:  # its traceback is logged: a short last word, exit status 1
        typer.echo(f"runstream serve stopped: {exc}", err=True)
        raise typer.Exit(1) from exc


def _logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _print_env(env: dict[str, str], *, exports: bool) -> None:
    for k, v in env.items():
        if exports:
            typer.echo(f"export {k}={v}")
        else:
            shown = "****" if "SECRET" in k else v
            console.print(f"  {k}={shown}")


def main() -> None:
    app(prog_name="runstream")


if __name__ == "__main__":
    main()
