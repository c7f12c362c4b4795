"""Image and table conversion without S3: matplotlib/PIL are duck-typed (not installed here)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest

from producers.errors import InvalidArgument, InvalidType
from producers.run_media import _image_bytes, _image_type, _table_json

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5Erk"
    "Jggg=="
)


class FakeFigure:
    def savefig(self, buf: io.BytesIO, format: str) -> None:  # noqa: A002 - matplotlib's name
        assert format == "png"
        buf.write(PNG)


class FakePIL:
    mode = "RGB"

    def save(self, buf: io.BytesIO, format: str) -> None:  # noqa: A002
        buf.write(PNG)


@pytest.mark.parametrize("image", [PNG, FakeFigure(), FakePIL()])
def test_image_sources(image: Any) -> None:
    data = _image_bytes(image)
    assert _image_type(data) == "image/png"


def test_image_errors() -> None:
    with pytest.raises(InvalidType, match="image"):
        _image_bytes(42)
    with pytest.raises(InvalidArgument, match="not a PNG"):
        _image_type(b"plain text")


def test_tables() -> None:
    as_rows = json.loads(_table_json([{"a": 1}, {"a": 2, "b": "x"}], None))
    assert as_rows == {"columns": ["a", "b"], "data": [[1, None], [2, "x"]]}
    as_cols = json.loads(_table_json({"a": [1, 2], "b": [3, 4]}, None))
    assert as_cols == {"columns": ["a", "b"], "data": [[1, 3], [2, 4]]}
    lists = json.loads(_table_json([[1, 2]], ["x", "y"]))
    assert lists["columns"] == ["x", "y"]
    with pytest.raises(InvalidArgument, match="different lengths"):
        _table_json({"a": [1], "b": [1, 2]}, None)
    with pytest.raises(InvalidArgument, match="JSON"):
        _table_json([[float("nan")]], None)
    with pytest.raises(InvalidType):
        _table_json(3, None)
