"""The numbers of the reliability campaign, printed at the end of the run
(``make stress``, or any run with DQ_REPORT=1) by tests/reliability/conftest.py.

Each test adds its line with :func:`record`; the totals add up the counts.
"""

from __future__ import annotations

from typing import Any

LINES: list[tuple[str, dict[str, Any]]] = []
TOTAL_KEYS = (
    "rounds", "kills", "acknowledged", "handled", "lost", "phantom", "corrupt",
    "duplicates", "bound", "torn_cases", "torn_recovered", "flips", "flips_detected",
)


def record(test: str, **numbers: Any) -> None:
    """Add one test's numbers to the report."""
    LINES.append((test, numbers))


def render() -> list[str]:
    if not LINES:
        return []
    out = []
    totals: dict[str, float] = {}
    recovery: list[float] = []
    for test, numbers in LINES:
        cells = []
        for k, v in numbers.items():
            cells.append(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}")
            if k in TOTAL_KEYS:
                totals[k] = totals.get(k, 0) + v
            if k.startswith("recovery_s"):
                recovery.append(float(v))
        out.append(f"{test}: " + " ".join(cells))
    out.append("TOTAL: " + " ".join(f"{k}={int(totals[k])}" for k in TOTAL_KEYS if k in totals))
    if recovery:
        out.append(f"recovery time (open of a damaged or crashed directory): "
                   f"max {max(recovery) * 1000:.1f} ms over {len(recovery)} measurements")
    return out
