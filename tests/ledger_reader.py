"""Reading the proxy's SQLite ledger from tests, waiting for the batched write to land."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def inference_row(data_dir: Path, inference_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with sqlite3.connect(data_dir / "ledger.sqlite3") as conn:
                conn.row_factory = sqlite3.Row
                row = conn.execute("SELECT * FROM inferences WHERE id = ?", (inference_id,)).fetchone()
            if row is not None:
                return dict(row)
        except sqlite3.OperationalError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"inference {inference_id} never reached the ledger")
        time.sleep(0.05)


def feedback_rows(data_dir: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(data_dir / "ledger.sqlite3") as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY created_at")]
