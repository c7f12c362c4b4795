"""`python -m processors.worker`'s tuning flags: a value the worker cannot run with is
refused at the command line, naming the flag and the bound (exit status 2), not taken and
acted on (a zero batch size, a negative timeout, a port past 65535)."""

from __future__ import annotations

import pytest

from processors.cli import parser


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--batch-size", "0", "must be >= 1, got 0"),
        ("--batch-size", "x", "not a number: 'x'"),
        ("--batch-timeout", "0", "must be > 0, got 0"),
        ("--batch-timeout", "-1", "must be > 0, got -1"),
        ("--batch-linger", "-0.5", "must be >= 0, got -0.5"),
        ("--batch-linger", "nan", "must be >= 0, got nan"),
        ("--position-prune-interval", "0", "must be > 0, got 0"),
        ("--positions-kept", "-3", "must be >= 0, got -3"),
        ("--batch-max-mb", "0", "must be >= 1, got 0"),
        ("--max-partition-fetch-mb", "0", "must be > 0, got 0"),
        ("--metrics-port", "70000", "must be >= 0 and <= 65535, got 70000"),
    ],
)
def test_a_value_out_of_bounds_is_refused_naming_the_flag(
    flag: str, value: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parser().parse_args([flag, value])
    assert exit_.value.code == 2
    assert f"argument {flag}: {says}" in capsys.readouterr().err


def test_values_at_the_bounds_are_taken() -> None:
    args = parser().parse_args(
        [
            "--batch-size=1",
            "--batch-linger=0",
            "--positions-kept=0",
            "--metrics-port=65535",
            "--max-partition-fetch-mb=0.5",
            "--batch-timeout=0.05",
        ]
    )
    assert (args.batch_size, args.batch_linger, args.positions_kept) == (1, 0.0, 0)
    assert (args.metrics_port, args.max_partition_fetch_mb, args.batch_timeout) == (
        65535,
        0.5,
        0.05,
    )
    defaults = parser().parse_args([])
    assert (defaults.batch_size, defaults.batch_timeout, defaults.positions_kept) == (
        20_000,
        0.2,
        1_000,
    )
