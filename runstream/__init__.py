"""Runstream: the facade. `import runstream as rs` gives the client SDK.

    import runstream as rs

    with rs.start_run(experiment="mnist", params={"lr": 0.01}) as run:
        for step, loss in enumerate(losses):
            run.log_metric("loss", loss, step=step)

Everything here is re-exported from `producers` (the SDK); the CLI (`runstream …`), the
local stack and `serve` live in submodules. Nothing in the product imports this package.
"""

from __future__ import annotations

from producers import *  # noqa: F403 - the facade re-exports the SDK's public API
from producers import __all__ as _sdk_all

__version__ = "0.1.0"
__all__ = [*_sdk_all, "__version__"]
