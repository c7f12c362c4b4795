"""Port choice and start-up errors of the local stack (no processes started)."""

from __future__ import annotations

from pathlib import Path

from runstream.stack.errors import ComponentFailed
from runstream.stack.ports import free_ports


def test_promised_ports_and_their_grpc_twins_are_never_chosen() -> None:
    # twin mode draws from 20000-22767: leave 200 ports, and take the twins of half of them
    allowed = set(range(21000, 21200))
    avoid = (set(range(20000, 22768)) - allowed) | {p + 10000 for p in range(21000, 21100)}
    for _ in range(20):
        ports = free_ports(5, with_grpc_twin=True, avoid=avoid)
        assert len(set(ports)) == 5
        assert set(ports) <= set(range(21100, 21200)), ports


def test_a_start_up_failure_carries_the_end_of_its_log(tmp_path: Path) -> None:
    log = tmp_path / "kafka.log"
    lines = [f"INFO line {i}" for i in range(100)]
    lines += ["", "ERROR [KafkaServer] Fatal error during startup", "java.net.BindException: x"]
    log.write_text("\n".join(lines) + "\n")
    err = ComponentFailed("kafka", "broker process exited during start-up", str(log))
    text = str(err)
    assert text.startswith(f"kafka: broker process exited during start-up (log: {log})")
    assert "| ERROR [KafkaServer] Fatal error during startup" in text
    assert "| java.net.BindException: x" in text
    assert "INFO line 94" in text
    assert "INFO line 93" not in text, "only the last 8 non-empty lines"
    log.unlink()  # the message keeps them: the stack directory may be deleted afterwards
    assert "BindException" in str(err)
    gone = ComponentFailed("kafka", "x", str(tmp_path / "missing.log"))
    assert str(gone) == f"kafka: x (log: {tmp_path / 'missing.log'})"
