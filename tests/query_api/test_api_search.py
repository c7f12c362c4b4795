"""POST /api/v1/runs/search against real chDB: filters, ordering, pages, errors."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import pytest

from query_api.app import create_app
from query_api.repository.runs import RunRepository
from query_api.settings import Settings
from tests.query_api.readmodels import T0, ReadModels
from tests.query_api.testclient import TestClient

pytestmark = pytest.mark.stack

SEARCH = "/api/v1/runs/search"


@pytest.fixture(params=["run_search", "run_page"])
def models(request: pytest.FixtureRequest, chdb_client: Any, ch_database: str) -> ReadModels:
    """Every search test twice: pages read from `run_search` (no search documents, as right
    after a write) and from `run_page` documents kept fresh (as after the processors'
    refresh; migration 0003)."""
    pages = request.param == "run_page"
    return ReadModels(chdb_client, ch_database, pages=pages).migrate()


def spy_run_ids(monkeypatch: pytest.MonkeyPatch, method: str) -> list[list[str]]:
    """The run ids of each call of `RunRepository.<method>(keys, db)`, sorted."""
    calls: list[list[str]] = []
    real = getattr(RunRepository, method)

    def spy(self: RunRepository, keys: Any, db: str) -> Any:
        calls.append(sorted(k[2] for k in keys))
        return real(self, keys, db)

    monkeypatch.setattr(RunRepository, method, spy)
    return calls


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The run ids each search read from `run_search` instead of a `run_page` document."""
    return spy_run_ids(monkeypatch, "_rows")


def seed(m: ReadModels) -> None:
    """Five runs in experiment 1, one in experiment 2, one deleted."""
    m.experiment("1", "exp-one")
    m.experiment("2", "exp-two")
    specs: list[tuple[str, str, int, str, dict[str, str], dict[str, str], float | None]] = [
        ("a", "1", 1, "FINISHED", {"lr": "0.01", "opt": "adam"}, {"team": "x"}, 0.95),
        ("b", "1", 2, "FINISHED", {"lr": "0.1", "opt": "AdamW"}, {"team": "y"}, 0.80),
        ("c", "1", 3, "FAILED", {"lr": "0.01"}, {"team": "x", "note": "it's"}, 0.99),
        ("d", "1", 4, "RUNNING", {"lr": "1.0"}, {}, None),
        ("e", "1", 5, "KILLED", {}, {"team": "z"}, 0.50),
        ("f", "2", 6, "FINISHED", {"lr": "0.01"}, {"team": "x"}, 0.97),
    ]
    for run_id, exp, k, status, params, tags, acc in specs:
        end = None if status == "RUNNING" else T0 + k * 1000 + 500
        m.run(run_id, exp, start=T0 + k * 1000, status=status, end=end, name=f"run-{run_id}")
        m.params(run_id, params, exp)
        m.tags(run_id, tags, exp)
        if acc is not None:
            m.points(run_id, "acc", [acc / 2, acc], experiment_id=exp)
    m.points("a", "loss", [0.3, 0.2], split="val")
    m.tags("b", {"team": "gone"}, deleted=1)  # TagsRemoved: the live value is gone
    m.run("g", "1", start=T0 + 7000, status="FINISHED", deleted=1)
    m.points("g", "acc", [1.0])


def ids(api: TestClient, **body: Any) -> list[str]:
    r = api.post(SEARCH, json={"experiment_ids": ["1"], **body})
    assert r.status_code == 200, r.text
    return [run["run_id"] for run in r.json()["runs"]]


FILTERS = [
    ("", ["e", "d", "c", "b", "a"]),  # default order: start_time DESC
    ("metrics.acc > 0.9", ["c", "a"]),
    ("metrics.acc >= 0.95 and params.lr = '0.01'", ["c", "a"]),
    ("metric.acc < 0.9", ["e", "b"]),
    ("metrics.acc != 0.5", ["c", "b", "a"]),
    ("metrics.acc IS NULL", ["d"]),
    ("metrics.acc IS NOT NULL", ["e", "c", "b", "a"]),
    ("metrics.loss@val < 0.25", ["a"]),
    ("metrics.loss < 0.25", []),
    ("params.lr = '0.01'", ["c", "a"]),
    ("params.lr != '0.01'", ["d", "b"]),
    ("params.opt LIKE 'Adam%'", ["b"]),
    ("params.opt ILIKE 'adam%'", ["b", "a"]),
    ("params.opt IS NULL", ["e", "d", "c"]),
    ("params.lr IN ('0.1', '1.0')", ["d", "b"]),
    ("params.lr NOT IN ('0.1', '1.0')", ["c", "a"]),
    ("tags.team = 'x'", ["c", "a"]),
    ("tags.team IS NULL", ["d", "b"]),
    ("tags.note = 'it''s'", ["c"]),
    ("attributes.status = 'FINISHED'", ["b", "a"]),
    ("status IN ('FAILED', 'KILLED')", ["e", "c"]),
    ("status NOT IN ('FAILED', 'KILLED')", ["d", "b", "a"]),
    ("run_name LIKE 'run-%' and run_name != 'run-a'", ["e", "d", "c", "b"]),
    ("attributes.run_id = 'b'", ["b"]),
    (f"start_time >= {T0 + 3000}", ["e", "d", "c"]),
    (f"attributes.end_time < {T0 + 3000}", ["b", "a"]),
    ("end_time IS NULL", ["d"]),
    ("metrics.acc > 0.9 or status = 'KILLED'", ["e", "c", "a"]),
    ("(metrics.acc > 0.9 or status = 'KILLED') and tags.team = 'x'", ["c", "a"]),
    ("metrics.acc > 0.9 or status = 'KILLED' and tags.team = 'x'", ["c", "a"]),
]


def test_filters_select_the_expected_runs(api: TestClient, models: ReadModels) -> None:
    seed(models)
    for text, expected in FILTERS:
        assert ids(api, filter=text) == expected, text


def test_order_by_metrics_params_attributes(api: TestClient, models: ReadModels) -> None:
    seed(models)
    assert ids(api, order_by=["metrics.acc DESC"]) == ["c", "a", "b", "e", "d"]  # nulls last
    assert ids(api, order_by=["metrics.acc ASC"]) == ["e", "b", "a", "c", "d"]
    assert ids(api, order_by="params.lr ASC, attributes.start_time DESC") == [
        "c",
        "a",
        "b",
        "d",
        "e",
    ]
    assert ids(api, order_by=["run_name DESC"]) == ["e", "d", "c", "b", "a"]
    assert ids(api, order_by=["tags.team"], filter="tags.team IS NOT NULL") == ["a", "c", "e"]


def test_experiments_and_view_types(api: TestClient, models: ReadModels) -> None:
    seed(models)
    assert ids(api, experiment_ids=["2"]) == ["f"]
    assert ids(api, experiment_ids=[], filter="params.lr = '0.01'") == ["f", "c", "a"]
    assert ids(api, run_view_type="DELETED_ONLY") == ["g"]
    assert ids(api, run_view_type="ALL", filter="metrics.acc >= 0.99") == ["g", "c"]


def test_results_carry_params_tags_and_latest_metrics(api: TestClient, models: ReadModels) -> None:
    seed(models)
    run = api.post(SEARCH, json={"filter": "attributes.run_id = 'a'"}).json()["runs"][0]
    assert run["params"] == {"lr": "0.01", "opt": "adam"}
    assert run["tags"] == {"team": "x"}
    assert {(m["key"], m["split"], m["last"]) for m in run["metrics"]} == {
        ("acc", "", 0.95),
        ("loss", "val", 0.2),
    }
    assert run["status"] == "FINISHED"
    assert run["start_time"] == T0 + 1000
    assert run["lifecycle_stage"] == "active"


def test_pages_walk_every_run_once(api: TestClient, models: ReadModels) -> None:
    seed(models)
    body: dict[str, Any] = {"experiment_ids": ["1"], "max_results": 2, "order_by": ["run_id"]}
    seen: list[str] = []
    for _ in range(10):
        r = api.post(SEARCH, json=body).json()
        seen += [run["run_id"] for run in r["runs"]]
        if "next_page_token" not in r:
            break
        body["page_token"] = r["next_page_token"]
    assert seen == ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"filter": "metrics.acc >"}, "position 13"),
        ({"filter": "params.lr > '1'"}, "position 10"),
        ({"filter": "metrics.acc > 1; DROP TABLE runs"}, "position 15"),
        ({"order_by": ["metrics.acc DESC", "metrics.acc SIDEWAYS"]}, "order_by[1]"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"max_results": 0}, "max_results"),
        ({"max_results": 10**9}, "max_results"),
        ({"max_results": "many"}, "max_results"),
        ({"experiment_ids": "1"}, "experiment_ids"),
        ({"run_view_type": "SOME"}, "run_view_type"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_requests_are_400_with_a_json_error(
    api: TestClient, models: ReadModels, body: dict[str, Any], fragment: str
) -> None:
    r = api.post(SEARCH, json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert fragment in r.json()["message"]


def test_a_token_from_another_query_is_rejected(api: TestClient, models: ReadModels) -> None:
    seed(models)
    first = api.post(SEARCH, json={"experiment_ids": ["1"], "max_results": 1}).json()
    r = api.post(
        SEARCH,
        json={
            "experiment_ids": ["1"],
            "max_results": 1,
            "filter": "status = 'FINISHED'",
            "page_token": first["next_page_token"],
        },
    )
    assert r.status_code == 400
    assert "different query" in r.json()["message"]


INJECTIONS = [
    "params.lr = ''' OR 1=1 --'",
    "params.lr = '0.01''; DROP TABLE runs; --'",
    "params.`lr' OR '1'='1` = 'x'",
    "run_name IN ('x'') OR (1=1', '{p0:String}')",
    "tags.team = '\\' OR tags.team = 'x\\'",
]


def test_injection_attempts_are_plain_values(api: TestClient, models: ReadModels) -> None:
    seed(models)
    for text in INJECTIONS:
        assert ids(api, filter=text) == [], text
    # a comment opener inside a quoted key and value changes nothing around it
    assert ids(api, filter="params.lr LIKE '%' or tags.`a/*` = '*/ 1'") == ["d", "c", "b", "a"]
    # a backslash is an ordinary character, so this does not close the string: a 400, not SQL
    r = api.post(SEARCH, json={"filter": "tags.team = '\\' OR 1=1 --'"})
    assert r.status_code == 400
    assert ids(api) == ["e", "d", "c", "b", "a"]  # nothing was dropped


def test_latest_version_wins_before_filtering(api: TestClient, models: ReadModels) -> None:
    models.run("x", status="RUNNING")
    models.run("x", status="FINISHED")  # a later version of the same run
    models.run("y", status="RUNNING")
    models.run("y", status="RUNNING", deleted=1)  # RunDeleted
    assert ids(api) == ["x"]
    assert ids(api, filter="status = 'RUNNING'") == []
    assert ids(api, filter="status = 'FINISHED'") == ["x"]
    assert ids(api, run_view_type="DELETED_ONLY") == ["y"]
    assert api.get("/api/v1/runs/y").json()["run"]["lifecycle_stage"] == "deleted"


def test_a_run_with_metric_rows_under_another_experiment_appears_once(
    api: TestClient, models: ReadModels
) -> None:
    """A rank that logged under another experiment before the run existed leaves summary
    rows there (processors/README.md): the search of the run's experiment shows the run once,
    filtered, ordered and decorated by its own experiment's rows only."""
    models.experiment("1", "exp-one")
    models.run("r", "1", name="run-r")
    models.points("r", "acc", [0.2, 0.4], experiment_id="1")
    models.points("r", "acc", [0.9], steps=[7], experiment_id="stray", producer="p9")
    models.run("s", "1", start=T0 + 1000, name="run-s")
    models.points("s", "acc", [0.3], experiment_id="1")
    r = api.post(SEARCH, json={"experiment_ids": ["1"], "order_by": ["metrics.acc DESC"]}).json()
    assert [run["run_id"] for run in r["runs"]] == ["r", "s"]
    assert [m["last"] for m in r["runs"][0]["metrics"]] == [0.4]
    assert ids(api, filter="metrics.acc > 0.35") == ["r"]
    assert ids(api, filter="metrics.acc > 0.5") == []
    both = api.post(SEARCH, json={"experiment_ids": ["1", "stray"]}).json()["runs"]
    assert [m["last"] for m in both[1]["metrics"]] == [0.4]
    ordered = api.post(
        SEARCH, json={"experiment_ids": ["1", "stray"], "order_by": ["metrics.acc DESC"]}
    ).json()["runs"]
    assert [run["run_id"] for run in ordered] == ["r", "s"]


def edge_values(m: ReadModels) -> None:
    """Runs whose values a JSON document could get wrong: non-finite and signed-zero floats,
    floats JSON writes as integers, extreme magnitudes, escapes, NULLs, deleted tags."""
    m.experiment("1", "exp-one")
    # partial rows of one run in a merged part and a newer one, and in both version orders:
    # the document must hold the merged run (the latest version), as FINAL gives it
    m.run("p", "1", status="RUNNING")
    m.run("q", "1", start=T0 + 1, status="KILLED", version=999)
    m.client.command(f"OPTIMIZE TABLE {m.db}.run_search FINAL")
    m.run("p", "1", status="FINISHED", end=T0 + 10)
    m.run("q", "1", start=T0 + 1, parent="p", fork_step=-3, name='q "\\/ \u00e9\u4e2d\n')
    m.params("q", {"path": "a/b\\c", "quote": '"', "uni": "\u00e9\U0001f600", "": "empty"})
    m.tags("q", {"t": "1", "gone": "x"})
    m.tags("q", {"gone": "x"}, deleted=1)
    m.points("p", "nan", [math.nan])
    m.points("p", "inf", [1.0, math.inf], split="val")
    m.points("p", "ninf", [-math.inf, 2.0])
    m.points("p", "zero", [-0.0])
    m.points("p", "ints", [3.0, 1e16, 2.0**63], steps=[-5, 0, 3_000_000])
    # 2e19: ClickHouse writes it as an integer beyond 64 bits
    m.points("q", "tiny", [5e-324, 1.7976931348623157e308, 0.1 + 0.2, 2e19])
    m.points("q", "ints", [-7.0])


@pytest.fixture
def doc_api(chdb_client: Any, ch_database: str) -> Iterator[tuple[ReadModels, TestClient]]:
    """A test database whose writes refresh the search documents (until told otherwise),
    and an API that holds no results (every search reads documents or rows)."""
    m = ReadModels(chdb_client, ch_database, pages=True).migrate()
    settings = Settings(database=m.db, search_cache_bytes=0)
    with TestClient(create_app(settings, lambda: chdb_client)) as api:
        yield m, api


def test_a_document_reads_back_exactly_what_run_search_holds(
    doc_api: tuple[ReadModels, TestClient], fallbacks: list[list[str]]
) -> None:
    """The same runs searched from `run_search` (no documents) and from their `run_page`
    documents: byte-identical responses."""
    m, api = doc_api
    m.pages = False
    edge_values(m)
    bodies = [{"experiment_ids": ["1"]}, {"experiment_ids": ["1"], "order_by": ["metrics.ints"]}]
    before = [api.post(SEARCH, json=b) for b in bodies]
    assert fallbacks == [["p", "q"], ["p", "q"]]
    m.refresh_page("p")
    m.refresh_page("q")
    after = [api.post(SEARCH, json=b) for b in bodies]
    assert fallbacks == [["p", "q"], ["p", "q"]]  # no read of run_search rows since
    assert [r.status_code for r in before + after] == [200] * 4
    assert [r.content for r in after] == [r.content for r in before]
    metrics = {x["key"]: x for x in after[0].json()["runs"][1]["metrics"]}
    assert math.copysign(1, metrics["zero"]["last"]) == -1


def test_a_stale_document_is_never_shown(
    doc_api: tuple[ReadModels, TestClient], fallbacks: list[list[str]]
) -> None:
    """A run written after its document was made is read from `run_search`; the page's
    other runs still come from their documents."""
    models, api = doc_api
    seed(models)
    models.pages = False  # writes from here on: the processors have not refreshed yet
    models.tags("a", {"team": "new"})
    models.points("c", "acc", [0.1], steps=[9])
    runs = {r["run_id"]: r for r in api.post(SEARCH, json={}).json()["runs"]}
    assert fallbacks == [["a", "c"]]
    assert runs["a"]["tags"] == {"team": "new"}
    assert [m["last"] for m in runs["c"]["metrics"]] == [0.1]
    assert ids(api, filter="metrics.acc > 0.9") == ["a"]  # c's latest acc is 0.1 now
    models.refresh_page("a")
    models.refresh_page("c")
    fallbacks.clear()
    again = {r["run_id"]: r for r in api.post(SEARCH, json={}).json()["runs"]}
    assert fallbacks == []
    assert again == runs


def test_a_document_holds_the_merged_run_not_one_partial_row(
    doc_api: tuple[ReadModels, TestClient], fallbacks: list[list[str]]
) -> None:
    """Under FINAL a tuple's subcolumns (`run.status`) are read from one partial row, not
    the merged one: the document must be built from the whole merged column."""
    m, api = doc_api
    m.run("p", status="RUNNING")
    m.run("p", status="FINISHED", end=T0 + 10)
    run = api.post(SEARCH, json={}).json()["runs"][0]
    assert fallbacks == []  # the document was used
    assert (run["status"], run["end_time"]) == ("FINISHED", T0 + 10)


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The run ids of each read of a page's results (documents or rows): the runs the
    result cache did not hold."""
    return spy_run_ids(monkeypatch, "_page")


def test_held_results_answer_until_a_run_changes(
    api: TestClient, models: ReadModels, chdb_client: Any, built: list[list[str]]
) -> None:
    """A repeated search reads no results again; after a change of each kind (a metric
    point, a param, a tag removed, the status, a deletion) exactly the changed runs are
    read, and the page equals the one an API holding nothing returns."""
    seed(models)
    ONE = {"experiment_ids": ["1"]}
    first = api.post(SEARCH, json=ONE).json()
    assert api.post(SEARCH, json=ONE).json() == first
    assert built == [["a", "b", "c", "d", "e"]]
    first["runs"][0]["name"] = "changed by a caller"  # a caller's copy, not the held one
    assert api.post(SEARCH, json=ONE).json()["runs"][0]["name"] == "run-e"

    models.points("a", "acc", [0.1], steps=[9])
    models.params("b", {"lr": "0.5"})
    models.tags("c", {"team": "x"}, deleted=1)
    models.run("d", start=T0 + 4000, status="FINISHED", end=T0 + 4500, name="run-d")
    models.run("e", start=T0 + 5000, status="KILLED", end=T0 + 5500, name="run-e", deleted=1)
    built.clear()
    after = api.post(SEARCH, json=ONE).json()
    assert built == [["a", "b", "c", "d"]]  # e is deleted: not on the page
    cold = Settings(database=models.db, search_cache_bytes=0)
    with TestClient(create_app(cold, lambda: chdb_client)) as fresh:
        assert after == fresh.post(SEARCH, json=ONE).json()
    runs = {r["run_id"]: r for r in after["runs"]}
    assert [m["last"] for m in runs["a"]["metrics"] if m["key"] == "acc"] == [0.1]
    assert runs["b"]["params"]["lr"] == "0.5"
    assert "team" not in runs["c"]["tags"]
    assert runs["d"]["status"] == "FINISHED"
    assert "e" not in runs


def test_a_database_made_again_under_its_name_is_not_answered_from_held_results(
    chdb_client: Any, ch_database: str
) -> None:
    """The same run with the same number of writes in a database dropped and created again
    under the same name: the search shows the new database's run (the held results are
    keyed by the database's UUID, read with the read-model pointer)."""
    m = ReadModels(chdb_client, ch_database).migrate()
    settings = Settings(database=m.db, pointer_check_interval_s=0)
    with TestClient(create_app(settings, lambda: chdb_client)) as api:
        m.run("a", name="before")
        assert [r["name"] for r in api.post(SEARCH, json={}).json()["runs"]] == ["before"]
        chdb_client.command(f"DROP DATABASE {m.db} SYNC")
        chdb_client.command(f"CREATE DATABASE {m.db}")
        m = ReadModels(chdb_client, ch_database).migrate()
        m.run("a", name="after")
        assert [r["name"] for r in api.post(SEARCH, json={}).json()["runs"]] == ["after"]
