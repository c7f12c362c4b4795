"""Every exception the query API raises on purpose; each maps to one HTTP status and error code.

Hierarchy::

    QueryApiError                       base; carries `error_code` and `http_status`
    ├── BadRequest (ValueError)         400 INVALID_PARAMETER_VALUE: the request cannot be served
    │   ├── FilterSyntaxError           a filter / order_by string does not parse or type-check;
    │   │                               carries the 0-based character `position`
    │   ├── InvalidPageToken            a page token that this API did not issue
    │   └── AlreadyExists               400 RESOURCE_ALREADY_EXISTS (MLflow's status for it)
    ├── NotFound (KeyError)             404 RESOURCE_DOES_NOT_EXIST: no such run / experiment
    │   ├── RunNotFound
    │   └── ExperimentNotFound
    ├── Unauthenticated                 401 UNAUTHENTICATED: no / unknown / revoked token
    ├── PermissionDenied                403 PERMISSION_DENIED: the token's project differs
    ├── NotAcceptable                   406 a media type the endpoint cannot produce
    ├── PayloadTooLarge                 413 REQUEST_TOO_LARGE
    ├── UnsupportedMediaType            415 UNSUPPORTED_MEDIA_TYPE
    ├── ReadModelUnavailable            503 TEMPORARILY_UNAVAILABLE: the read-model store failed;
    │                                   the foreign exception is chained as `__cause__`
    ├── WriteUnavailable                503 TEMPORARILY_UNAVAILABLE: Kafka / S3 failed or absent
    └── ConsistencyTimeout              504 CONSISTENCY_TIMEOUT: projections did not pass the
                                        token in time (retry the read; the write is durable)

Rule: a mistake in the request is always a 4xx subclass, raised before any query runs;
foreign exceptions (clickhouse-connect, pyarrow) are translated at the repository boundary.
"""

from __future__ import annotations


class QueryApiError(Exception):
    """Base class of every exception the query API raises on purpose."""

    error_code = "INTERNAL_ERROR"
    http_status = 500

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class BadRequest(QueryApiError, ValueError):
    """The request is malformed or names something impossible."""

    error_code = "INVALID_PARAMETER_VALUE"
    http_status = 400


class FilterSyntaxError(BadRequest):
    """A search filter or order-by clause is invalid at `position` (0-based characters)."""

    def __init__(self, message: str, position: int) -> None:
        self.position = position
        super().__init__(f"{message} (at position {position})")
        self.reason = message


class InvalidPageToken(BadRequest):
    """A page token was not issued by this API (or was issued for another query)."""


class NotFound(QueryApiError, KeyError):
    """The named resource does not exist."""

    error_code = "RESOURCE_DOES_NOT_EXIST"
    http_status = 404

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class RunNotFound(NotFound):
    """No run with that id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"Run with id={run_id} not found")


class ExperimentNotFound(NotFound):
    """No experiment with that id."""

    def __init__(self, experiment_id: str) -> None:
        self.experiment_id = experiment_id
        super().__init__(f"Experiment with id={experiment_id} not found")


class AlreadyExists(BadRequest):
    """A resource with that identity exists (MLflow answers 400 for it)."""

    error_code = "RESOURCE_ALREADY_EXISTS"


class Unauthenticated(QueryApiError):
    """No token, or a token that is unknown or revoked."""

    error_code = "UNAUTHENTICATED"
    http_status = 401


class PermissionDenied(QueryApiError):
    """The token is valid but for another project."""

    error_code = "PERMISSION_DENIED"
    http_status = 403


class PayloadTooLarge(QueryApiError):
    """The request body exceeds a configured limit."""

    error_code = "REQUEST_TOO_LARGE"
    http_status = 413


class UnsupportedMediaType(QueryApiError):
    """The request body is not in a format the endpoint accepts."""

    error_code = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415


class WriteUnavailable(QueryApiError):
    """The event log (Kafka) or the blob store (S3) failed or is not configured."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    http_status = 503


class ConsistencyTimeout(QueryApiError):
    """The projections did not reach the requested position within the bound."""

    error_code = "CONSISTENCY_TIMEOUT"
    http_status = 504


class NotAcceptable(QueryApiError):
    """The client asked for a representation this endpoint cannot produce."""

    error_code = "NOT_ACCEPTABLE"
    http_status = 406


class ReadModelUnavailable(QueryApiError):
    """The read-model store failed; `__cause__` holds the driver's exception."""

    error_code = "TEMPORARILY_UNAVAILABLE"
    http_status = 503
