"""Every exception the SDK raises on purpose; foreign exceptions are translated at the boundary.

Hierarchy::

    RunstreamError                      base of everything below
    ├── InvalidArgument (ValueError)    a bad value at the call site; names the argument
    │   ├── InvalidKey                  key empty, too long (> 250) or outside the charset
    │   ├── ValueTooLong                a param/tag/attribute/note value over its limit
    │   ├── ParamConflict               a param re-logged in this process with another value
    │   ├── ArtifactExists              an artifact key re-used without overwrite=True
    │   └── TooManyKeys                 more than 65,535 metric keys in one run
    ├── InvalidType (TypeError)         a value of the wrong type; names the argument
    ├── ConfigError (ValueError)        configuration missing or unusable (env / file / args)
    ├── RunStateError (RuntimeError)    the run is not in a state for this call
    │   │                               (already ended, no active run, used after fork)
    │   └── NoActiveRun                 a module-level helper with no active run
    ├── BackgroundError (RuntimeError)  the background engine failed; raised on the next call,
    │                                   flush or end, chaining the original as __cause__
    ├── TransportError                  the event transport failed
    │   ├── TransportUnavailable        retriable: broker/API unreachable (events stay spooled)
    │   └── TransportRejected           not retriable: the broker/API refused the events
    ├── SpoolError (OSError)            the local write-ahead spool cannot be written or read
    │   └── SpoolCorrupt                a frame failed its CRC check before the segment's tail
    └── ArtifactError                   an artifact upload/download failed
        └── ArtifactNotFound (KeyError) no artifact with that key under the run

Rule: a mistake in the caller's input is raised synchronously at the call site (never dropped,
never deferred to the background thread); failures of the background engine are kept and
raised as `BackgroundError` from the next API call, `flush()` or `end()`.
"""

from __future__ import annotations


class RunstreamError(Exception):
    """Base class of every exception raised by the Runstream SDK."""


class InvalidArgument(RunstreamError, ValueError):
    """A value failed validation; the message names the argument."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class InvalidKey(InvalidArgument):
    """A metric/param/tag/attribute/artifact key breaks the key rules."""


class ValueTooLong(InvalidArgument):
    """A value exceeds its documented size limit."""


class ParamConflict(InvalidArgument):
    """A param was already logged in this process with a different value."""


class ArtifactExists(InvalidArgument):
    """An artifact key was already stored for this run and overwrite was not requested."""


class TooManyKeys(InvalidArgument):
    """A run uses more distinct metric keys than the packed column format can index."""


class InvalidType(RunstreamError, TypeError):
    """A value has the wrong type; the message names the argument."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")


class ConfigError(RunstreamError, ValueError):
    """Configuration is missing or unusable."""


class RunStateError(RunstreamError, RuntimeError):
    """The run (or the SDK) is not in a state that allows this call."""


class NoActiveRun(RunStateError):
    """A module-level helper was called with no active run (call `start_run()` first)."""


class BackgroundError(RunstreamError, RuntimeError):
    """The background engine failed; `__cause__` holds the original exception."""


class TransportError(RunstreamError):
    """The event transport failed."""


class TransportUnavailable(TransportError):
    """The broker or API cannot be reached now; events stay in the spool and are resent."""


class TransportRejected(TransportError):
    """The broker or API refused the events; resending the same bytes will not help."""


class SpoolError(RunstreamError, OSError):
    """The local write-ahead spool cannot be written or read."""


class SpoolCorrupt(SpoolError):
    """A spool frame failed its CRC or length check somewhere other than the tail."""


class ArtifactError(RunstreamError):
    """An artifact upload or download failed."""


class ArtifactNotFound(ArtifactError, KeyError):
    """No artifact with that key exists under the run."""
