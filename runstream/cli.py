"""`runstream` command line: the local stack (up/down/status/env/install) and, as the
other packages land, serve / replay / sync.

The stack lives under RUNSTREAM_HOME (default ~/.runstream; `make` uses ./.runstream).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

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
        conn = stack.up(_progress)
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
