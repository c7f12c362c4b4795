"""Best-effort capture of code (git), Python environment and platform for a run.

Rule: capture never fails a run. Every probe has a timeout, and anything that cannot be
determined (no git, no repository, a package without metadata) is reported as None/absent.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

GIT_TIMEOUT = 5.0


@dataclass(frozen=True)
class CodeInfo:
    """Git state of the code that is running."""

    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    remote: str | None = None
    repo_root: str | None = None
    script: str | None = None  # path of the entry script, relative to repo_root when inside


@dataclass(frozen=True)
class EnvironmentInfo:
    """The Python environment and the machine."""

    python_version: str
    python_implementation: str
    executable: str
    platform: str
    hostname: str
    cpu_count: int
    packages: dict[str, str] = field(default_factory=dict)


def _git(args: list[str], cwd: Path) -> str | None:
    git = shutil.which("git")
    if git is None:
        return None
    try:
        res = subprocess.run(
            [git, *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def entry_script() -> str | None:
    """Absolute path of the script `python` was started with (None in a REPL/notebook)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return os.path.abspath(path) if isinstance(path, str) else None


def capture_code(script: str | None = None) -> CodeInfo:
    """Git commit/branch/dirty/remote of the repository holding `script` (or the cwd)."""
    script = script or entry_script()
    where = Path(script).parent if script else Path.cwd()
    root = _git(["rev-parse", "--show-toplevel"], where)
    if root is None:
        return CodeInfo(script=script)
    commit = _git(["rev-parse", "HEAD"], where)
    branch = _git(["rev-parse", "--abbrev-ref", "HEAD"], where)
    status = _git(["status", "--porcelain", "--untracked-files=no"], where)
    remote = _git(["config", "--get", "remote.origin.url"], where)
    rel = script
    if script:
        try:
            rel = str(Path(script).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            rel = script
    return CodeInfo(
        commit=commit or None,
        branch=branch if branch and branch != "HEAD" else None,
        dirty=None if status is None else bool(status),
        remote=remote or None,
        repo_root=root,
        script=rel,
    )


def installed_packages() -> dict[str, str]:
    """name -> version of every distribution importlib.metadata can see."""
    out: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        try:
            name = dist.metadata["Name"]
        except (KeyError, TypeError):
            continue
        if name:
            out[str(name)] = str(dist.version)
    return dict(sorted(out.items(), key=lambda kv: kv[0].lower()))


def capture_environment(with_packages: bool = True) -> EnvironmentInfo:
    """Python version, interpreter, platform, host and (optionally) installed packages."""
    return EnvironmentInfo(
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        executable=sys.executable,
        platform=platform.platform(),
        hostname=socket.gethostname(),
        cpu_count=os.cpu_count() or 0,
        packages=installed_packages() if with_packages else {},
    )


def requirements_text(packages: dict[str, str]) -> str:
    """A pip requirements file pinning `packages` (to recreate the environment)."""
    return "".join(f"{name}=={version}\n" for name, version in packages.items())
