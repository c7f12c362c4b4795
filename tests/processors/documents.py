"""Search documents (`run_page`) against the rows they cache (`run_search`), as the API reads
both (query_api.repository.runs)."""

from __future__ import annotations

from typing import Any

from query_api.repository.runs import (
    _PAGE_FORMATS,
    _PAGE_SQL,
    _document_columns,
    _in,
    _search_run,
)


def canon(value: Any) -> Any:
    """Comparable structure: floats by repr (NaN equals NaN, -0.0 differs from 0.0)."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    return value


def documents(client: Any, db: str) -> dict[tuple[str, str, str], list[tuple[int, str]]]:
    """Every `run_page` row: run key -> [(touches, doc)], touches ascending."""
    out: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for p, e, r, touches, doc in client.query(
        f"SELECT project, experiment_id, run_id, touches, doc FROM {db}.run_page ORDER BY touches"
    ).result_rows:
        out.setdefault((p, e, r), []).append((int(touches), doc))
    return out


def from_rows(client: Any, db: str, keys: list[tuple[str, str, str]]) -> dict[Any, Any]:
    """What a search shows of `keys` read from `run_search` (the page read of stale runs)."""
    rows = client.query(
        _PAGE_SQL.format(db=db), parameters=_in(keys), query_formats=_PAGE_FORMATS
    ).result_rows
    return {(r[0], r[1], r[2]): canon(_search_run(r)) for r in rows}


def from_document(key: tuple[str, str, str], doc: str) -> Any:
    return canon(_search_run((*key, *_document_columns(doc))))


def current_documents_agree(client: Any, db: str) -> int:
    """Assert that every document a search would use (its touches are the run's) shows what
    the run's rows show; returns how many there are."""
    touches = dict(
        ((p, e, r), int(t))
        for p, e, r, t in client.query(
            f"SELECT project, experiment_id, run_id, touches FROM {db}.run_search FINAL"
        ).result_rows
    )
    current = {
        k: doc for k, docs in documents(client, db).items() for t, doc in docs if t == touches[k]
    }
    rows = from_rows(client, db, sorted(current))
    for k, doc in current.items():
        assert from_document(k, doc) == rows[k], k
    return len(current)
