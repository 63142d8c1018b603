"""Processes that open a fresh MLflow SQLite store at the same moment (mlops and the monitor,
both started by one snapshot event) all succeed: MLflow's table creation is serialised.

Without the lock in ``registry.connect`` this fails with alembic's "Online migration expected
to match one row" in some of the processes (it did, twice in a row, before the fix).
"""

from __future__ import annotations

import subprocess
import sys
import time

from tagifai.config import REPO_ROOT

OPEN_STORE = (
    "import sys; from tagifai import registry; from tagifai.config import get_settings;"
    "sys.stdin.read(1);"  # every process is up, then all open the store at once
    "print(registry.production_version(get_settings({'TAGIFAI_STORES_DIR': sys.argv[1]})))"
)


def test_a_fresh_store_opened_by_several_processes_at_once(tmp_path):
    command = [sys.executable, "-c", OPEN_STORE, str(tmp_path / "stores")]
    processes = [
        subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(3)
    for process in processes:
        process.stdin.write("x")
        process.stdin.flush()
    outcomes = [process.communicate(timeout=180) for process in processes]
    failures = [err.strip().splitlines()[-1] for _, err in outcomes if "Error" in err]
    assert failures == []
    assert [out.strip() for out, _ in outcomes] == ["None"] * 4
