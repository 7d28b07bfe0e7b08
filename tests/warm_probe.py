"""A job module for tests/test_warm.py: records what the forked child sees (pid, session, env, cwd,
threads, which modules it found already imported) in <job_dir>/probe.json."""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path


def main(argv: list[str]) -> int:
    job_dir = Path(argv[1])
    facts = {"pid": os.getpid(), "sid": os.getsid(0), "ppid": os.getppid(), "cwd": os.getcwd(),
             "probe": os.environ.get("WINNOW_PROBE"), "threads": threading.active_count(),
             "torch_preloaded": "torch" in sys.modules, "argv": sys.argv}
    (job_dir / "probe.json").write_text(json.dumps(facts), encoding="utf-8")
    print("probe wrote its facts")  # into the job's log: stdout is the log
    code = int(os.environ.get("WINNOW_PROBE_EXIT", "0"))
    if code == 0:  # as a job does: the caller's handle reads how it ended from the markers
        (job_dir / "done.json").write_text("{}", encoding="utf-8")
    return code
