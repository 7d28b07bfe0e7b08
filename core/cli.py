"""The `winnow` command. Thin: parses arguments and calls the workspace API.

When the app owns the workspace catalog, commands that need it are handed to the app through
the request queue (core.owner) instead of failing on DuckDB's file lock.

Exit codes: 0 ok, 2 invalid input (nothing written), 3 workspace busy with no owner to hand to.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from core import owner
from core.export import EXPORT_FORMATS, FILE_TYPES
from core.ingest import FORMATS
from core.store import WorkspaceBusy
from core.workspace import Workspace, resolve_workspace_path

APP_FILE = Path(__file__).resolve().parent.parent / "app.py"
EXIT_INVALID = 2
EXIT_BUSY = 3


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_INVALID):
        super().__init__(message)
        self.code = code


def run_op(root: Path, op: str, args: dict) -> dict:
    """Run an operation on the workspace here, or hand it to the process that owns it."""
    try:
        ws = Workspace(root)
    except WorkspaceBusy as busy:
        pid = owner.owner_pid(root)
        if pid is None:
            raise CliError(str(busy), EXIT_BUSY) from None
        print(f"The Winnow app (PID {pid}) has this workspace open; handing '{op}' to it …", file=sys.stderr)
        try:
            return owner.submit(root, op, args)
        except owner.RequestFailed as exc:
            raise CliError(str(exc)) from None
        except (owner.OwnerGone, TimeoutError) as exc:
            raise CliError(str(exc), EXIT_BUSY) from None
    with ws:
        try:
            return owner.execute(ws, op, args)
        except owner.USER_ERRORS as exc:
            raise CliError(str(exc)) from None


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def cmd_init(a) -> int:
    root = resolve_workspace_path(a.workspace)
    try:
        ws = Workspace(root)
    except WorkspaceBusy as busy:
        raise CliError(str(busy), EXIT_BUSY) from None
    with ws:
        print(f"Workspace ready at {ws.root}")
        if a.demo:
            from core.demo import build_demo

            for name, result in build_demo(ws).items():
                print(f"  {name}: {result['new']} new")
    return 0


def cmd_import(a) -> int:
    args = {"paths": [str(Path(p).resolve()) for p in a.paths], "dataset": a.dataset, "fmt": a.format,
            "skip_invalid": a.skip_invalid, "role": a.role}
    result = run_op(resolve_workspace_path(a.workspace), "import", args)
    for f in result["files"]:
        print(f"{f['file']}: {f['format']}, {f['read']} read, {f['new']} new, "
              f"{f['duplicates']} duplicates, {f['rejected']} rejected")
    print(f"dataset '{a.dataset}': {result['new']} new, {result['rejected']} rejected"
          + (" (see `winnow stats` and the Import page for the rejected rows)" if result["rejected"] else ""))
    return 0


def cmd_export(a) -> int:
    selection = {"datasets": a.dataset or [], "tasks": a.task or [], "search": a.search or ""}
    if a.review:
        selection["review"] = a.review
    args = {"fmt": a.format, "out": str(Path(a.out).resolve()) if a.out else None, "selection": selection,
            "roles": a.role or None, "exclude_rejected": a.exclude_rejected, "file_type": a.type}
    result = run_op(resolve_workspace_path(a.workspace), "export", args)
    print(f"wrote {result['records']} {result['format']} records to {result['path']}")
    return 0


def cmd_stats(a) -> int:
    stats = run_op(resolve_workspace_path(a.workspace), "stats", {})
    if a.json:
        print(json.dumps(stats, default=str))
        return 0
    print(f"workspace {stats['workspace']}")
    for key in ("datasets", "instructions", "responses", "preference_pairs", "documents", "judgments",
                "reviews", "import_rejects"):
        print(f"  {key:<17}{stats[key]:>10}")
    if stats["per_dataset"]:
        print("\n  dataset                  kind        instructions  responses  documents  rejected")
        for d in stats["per_dataset"]:
            print(f"  {d['name']:<24} {d['kind']:<11} {d['instructions']:>12} {d['responses']:>10} "
                  f"{d['documents']:>10} {d['rejected_rows']:>9}")
    return 0


def cmd_app(a) -> int:
    env = os.environ | {"WINNOW_WORKSPACE": str(resolve_workspace_path(a.workspace).resolve())}
    command = [sys.executable, "-m", "streamlit", "run", str(APP_FILE), "--server.address", a.host,
               "--server.port", str(a.port), "--server.headless", "true"]
    print(f"Winnow on http://{a.host}:{a.port} (workspace {env['WINNOW_WORKSPACE']})")
    # Streamlit reads .streamlit/config.toml from the working directory.
    return subprocess.call(command, env=env, cwd=APP_FILE.parent)


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--workspace", "-w", default=argparse.SUPPRESS,
                        help="workspace folder (default: $WINNOW_WORKSPACE or ./workspace)")
    parser = argparse.ArgumentParser(prog="winnow", parents=[common],
                                     description="Winnow: curate instruction-tuning and preference data.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", parents=[common], help="create a workspace")
    p.add_argument("--demo", action="store_true", help="also import the demo datasets")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("import", parents=[common], help="import files or folders into a dataset")
    p.add_argument("paths", nargs="+", help="files (.jsonl .json .csv .parquet) or corpus files/folders")
    p.add_argument("--dataset", "-d", required=True, help="dataset name")
    p.add_argument("--format", "-f", choices=FORMATS, default=None, help="record format (default: detect)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="import the valid rows and record the invalid ones instead of rejecting the file")
    p.add_argument("--role", default="seed", help="role of imported responses (default: seed)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", parents=[common], help="export a selection as a training file")
    p.add_argument("--format", "-f", choices=EXPORT_FORMATS, required=True)
    p.add_argument("--out", "-o", help="output file (default: WORKSPACE/exports/FORMAT.TYPE)")
    p.add_argument("--type", choices=FILE_TYPES, default="jsonl", help="file type (default: jsonl)")
    p.add_argument("--dataset", "-d", action="append", help="only these datasets (repeatable)")
    p.add_argument("--task", action="append", help="only these task labels (repeatable)")
    p.add_argument("--role", action="append", help="response roles for alpaca/messages (default: seed)")
    p.add_argument("--search", help="only instructions containing this text")
    p.add_argument("--review", choices=("any", "accepted", "rejected", "unreviewed"))
    p.add_argument("--exclude-rejected", action="store_true", help="drop samples a reviewer rejected")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("stats", parents=[common], help="counts per table and dataset")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("app", parents=[common], help="start the web app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if not hasattr(a, "workspace"):
        a.workspace = None
    try:
        return a.func(a)
    except CliError as exc:
        print(f"winnow {a.command}: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
