"""Request bodies (pydantic). Validation failures become 400 INVALID_PARAMETER_VALUE."""

from __future__ import annotations

from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class SearchRunsRequest(BaseModel):
    """POST /api/v1/runs/search."""

    model_config = ConfigDict(extra="forbid")

    experiment_ids: list[str] = Field(default_factory=list, max_length=1_000)
    filter: str = Field(default="", max_length=20_000)
    order_by: Union[list[str], str] = Field(default_factory=list)
    max_results: int = Field(default=100, ge=1)
    page_token: Optional[str] = Field(default=None, max_length=4_096)
    run_view_type: Literal["ACTIVE_ONLY", "DELETED_ONLY", "ALL"] = "ACTIVE_ONLY"


class CompareRequest(BaseModel):
    """POST /api/v1/runs/compare: runs x metric keys in one call."""

    model_config = ConfigDict(extra="forbid")

    run_ids: list[str] = Field(min_length=1, max_length=100)
    keys: list[str] = Field(min_length=1, max_length=50)
    split: str = Field(default="", max_length=250)
    n: Optional[int] = Field(default=None, ge=1)
    x: Literal["step", "time"] = "step"


class ErrorBody(BaseModel):
    """Every error response: MLflow's error shape."""

    error_code: str = Field(examples=["INVALID_PARAMETER_VALUE"])
    message: str
