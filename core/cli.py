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
import time
from pathlib import Path

from core import jobs, owner, stages
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
        if ws.recovery_message:
            print(f"WARNING: {ws.recovery_message}", file=sys.stderr)
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
            if a.demo_pipeline:
                from core.demo import queue_pipeline

                queue_pipeline(ws)
                print("  the app will judge the seed with the built-in model and label tasks when it starts")
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


def _selection(a) -> dict:
    selection = {"datasets": a.dataset or [], "tasks": a.task or []}
    if getattr(a, "search", None):
        selection["search"] = a.search
    return selection


def _show_progress(info: dict, last: dict) -> None:
    """One line per change of progress (works in logs and terminals alike)."""
    key = (info["status"], info["done"])
    if last.get("key") == key:
        return
    last["key"] = key
    # A probability judge writes one token a verdict: items per second says more there.
    rate = f", {info['items_per_s']:.2f} items/s" if info.get("items_per_s") else ""
    if info.get("tokens_per_s") and info["tokens"] > 2 * info["done"]:
        rate += f", {info['tokens_per_s']:.0f} tok/s"
    eta = f", ETA {info['eta_s']:.0f} s" if info.get("eta_s") else ""
    print(f"  {info['id']}: {info['status']} {info['done']}/{info['total']}{rate}{eta}", file=sys.stderr,
          flush=True)


def _launch(job_dir: Path, a) -> None:
    """Start the job on this machine or on Ray (--engine); Ray's options travel in the environment."""
    if getattr(a, "engine", "local") == "ray":
        from core import ray_jobs

        jobs.launch(job_dir, extra_env=ray_jobs.launch_env(a.ray_address, a.ray_workers, num_gpus=a.ray_gpus),
                    engine="ray")
    else:
        jobs.launch(job_dir)


def _run_job(root: Path, job_id: str, job_dir: Path, a) -> int:
    """Run a job in its own process, show its progress, then ingest what it produced."""
    _launch(job_dir, a)
    last: dict = {}
    try:
        info = jobs.wait(job_dir, on_progress=lambda i: _show_progress(i, last))
    except KeyboardInterrupt:
        jobs.cancel(job_dir)
        print(f"cancelling {job_id}; resume with `winnow jobs resume {job_id}`", file=sys.stderr)
        info = jobs.wait(job_dir)
    result = run_op(root, "ingest_job", {"job": job_id})
    print(f"job {job_id}: {info['status']}, {result['rows']} rows from {result['shards']} shards, "
          f"{result['new_now']} new")
    if info["status"] == "failed":
        print(f"job {job_id} failed: {info['error']}\nresume with `winnow jobs resume {job_id}`", file=sys.stderr)
        return 1
    return 0


def _stage_params(stage, a) -> dict:
    """The stage's params from its CLI flags; flags left out keep the params' defaults."""
    return {f.name: getattr(a, f.name) for f in stage.fields() if getattr(a, f.name, None) is not None}


def cmd_stage(a) -> int:
    """Any registered stage (core.stages) as a job: create, run with progress, ingest."""
    stage = stages.get(a.command)
    root = resolve_workspace_path(a.workspace)
    selection = _selection(a)
    if stage.prompts is not None:  # generate and judge: prompts longer than the context, said before the job
        check = run_op(root, "context_check", {"stage": stage.name, "params": _stage_params(stage, a),
                                               "selection": selection, "limit": a.limit,
                                               "drop_too_long": a.drop_too_long})
        if check.get("too_long"):
            print("WARNING: " + check["sentence"] + (" Left out (--drop-too-long)." if "selection" in check
                                                     else " --drop-too-long leaves them out."), file=sys.stderr)
            selection = check.get("selection", selection)
        elif check.get("unavailable"):
            print("note: " + check["sentence"], file=sys.stderr)
    created = run_op(root, "create_job", {
        "stage": stage.name, "params": _stage_params(stage, a), "selection": selection, "limit": a.limit,
        "round": a.round, "shard_size": a.shard_size})
    print(f"job {created['job']} created", file=sys.stderr)
    if a.detach:
        _launch(Path(created["dir"]), a)
        print(created["job"])
        return 0
    code = _run_job(root, created["job"], Path(created["dir"]), a)
    after = AFTER_JOB.get(stage.name)
    if after:
        after(root, a)
    return code


def _judge_report(root: Path, a) -> None:
    summary = run_op(root, "judge_summary", {"judge": a.model, "rubric": a.rubric})
    print(f"{a.model} on {a.rubric}: {summary['judgments']} judgments, {summary['failed']} unparsable "
          f"({summary['failure_rate']:.0%}), {summary['call_errors']} failed calls, mean score {summary['mean_score']}")
    if summary["flip_pairs"]:
        print(f"order flips: {summary['flip_rate']:.0%} of {summary['flip_pairs']} pairs judged in both orders")
    print(_trust_line(summary["trust"]))


def _trust_line(trust: dict) -> str:
    """A judge's trust sentence (calibration.Trust.sentence), marked when it is no better than chance."""
    return ("WARNING: " if trust["status"] in ("at_chance", "inverted") else "") + trust["sentence"]


def cmd_judges(a) -> int:
    r = run_op(resolve_workspace_path(a.workspace), "judges", {})
    lines = [f"{j['judge_model']} · {j['rubric']} ({j['kind']}, {j['judgments']} judgments)\n  {_trust_line(j['trust'])}"
             for j in r["judges"]]
    return _print_json_or(r, a, lines or ["no judgments yet: run `winnow judge --judge MODEL --rubric RUBRIC`"])


# What a stage's command prints after its job (optional; most stages need nothing).
AFTER_JOB = {"judge": _judge_report}


def _print_json_or(result: dict, a, lines: list[str]) -> int:
    print(json.dumps(result, default=str) if getattr(a, "json", False) else "\n".join(lines))
    return 0


def cmd_tasks(a) -> int:
    root = resolve_workspace_path(a.workspace)
    if a.action == "classify":
        r = run_op(root, "tasks_classify", {"method": a.method, "model": a.model, "all": a.all,
                                             "selection": {"datasets": a.dataset or []}})
        counts = ", ".join(f"{k} {v}" for k, v in r["counts"].items())
        return _print_json_or(r, a, [f"{r['classifier']}: {r['n_labelled']} instructions labelled, {r['n_failed']} "
                                     f"failed (of {r['n_targets']}); {counts}"])
    if a.action == "relabel":
        if not (a.instruction and a.task):
            raise CliError("`winnow tasks relabel` needs an instruction id and a task")
        r = run_op(root, "tasks_relabel", {"instruction": a.instruction, "task": a.task, "reviewer": a.reviewer})
        return _print_json_or(r, a, [f"{a.instruction}: task is now {r['current']['task']} (human label)"])
    r = run_op(root, "tasks_accuracy", {"method": a.method, "model": a.model, "test_share": a.test_share,
                                         "selection": {"datasets": a.dataset or []}, "limit": a.limit})
    acc, maj = r["accuracy"], r["majority"]
    return _print_json_or(r, a, [
        f"{r['classifier']}: held-out accuracy {acc['value']:.2f} [{acc['low']:.2f}, {acc['high']:.2f}] "
        f"({acc['k']}/{acc['n']}), trained on {r['n_train']}; majority class {r['majority_class']}: "
        f"{maj['value']:.2f} ({maj['k']}/{maj['n']})"])


def cmd_difficulty(a) -> int:
    root = resolve_workspace_path(a.workspace)
    r = run_op(root, "difficulty_chain", {"teacher": a.teacher, "student": a.student, "judge": a.judge,
                                           "datasets": a.dataset, "rubric": a.rubric, "limit": a.limit,
                                           "round": a.round, "mode": a.mode})
    lines = [f"  {s['name']}: {s['status']}" + (f" (job {s['job']})" if s.get("job") else "") for s in r["steps"]]
    m = r["mfd"]
    lines.append(f"MFD: {json.dumps(m, default=str)}")
    return _print_json_or(r, a, lines)


def cmd_eval(a) -> int:
    """Model A against model B on a prompt dataset (core.evaluate): answers, a pairwise judge in
    both orders, win / tie / loss with an interval, order flips and exact match; stored."""
    from core.evaluate import ChainFailed

    root = resolve_workspace_path(a.workspace)
    try:
        r = run_op(root, "evaluate", {"model_a": a.model, "model_b": a.against, "prompts": a.prompts,
                                      "judge": a.judge, "rubric": a.rubric, "round": a.round, "limit": a.limit,
                                      "max_tokens": a.max_tokens, "pointwise": a.pointwise, "mode": a.mode})
    except ChainFailed as exc:  # a job stopped: its finished shards are kept, a re-run resumes it
        raise CliError(str(exc), 1) from None
    return _print_json_or(r, a, [r["line"]])


def _round_lines(status: dict) -> list[str]:
    """A run as text: one line per round, its steps indented."""
    lines = [f"run {status['name']} ({status['method']}): {status['status']}, "
             f"{sum(r['status'] == 'done' for r in status['rounds'])} of {status['rounds_wanted']} rounds done"
             + (f" — {status['error']}" if status.get("error") else "")]
    for r in status["rounds"]:
        ev = ((r.get("metrics") or {}).get("evaluation") or {})
        lines.append(f"  round {r['number']}: {r['status']}, {r['student']} → {r['model'] or '…'}"
                     + (f"; {ev['line']}" if ev.get("line") else "") + (f" ({r['error']})" if r.get("error") else ""))
        for step in r["steps"]:
            job = step.get("job") or {}
            progress = f" {job.get('done', 0)}/{job.get('total', 0)}" if job else ""
            lines.append(f"    {step['position']:>2}. {step['name']:<34} {step['status']}{progress}"
                         + (f"  [{step['job_id']}]" if step.get("job_id") else ""))
    return lines


def cmd_round(a) -> int:
    """Rounds of a recipe (core.rounds): run (foreground, or handed to the app), status, compare."""
    from core import rounds

    root = resolve_workspace_path(a.workspace)
    if a.action == "run":
        if len(a.args) != 1:
            raise CliError("`winnow round run RECIPE.yaml [--rounds N]`")
        recipe = str(Path(a.args[0]).expanduser().resolve())
        try:
            ws = Workspace(root)
        except WorkspaceBusy:
            return _round_via_owner(root, recipe, a)
        with ws:
            try:
                status = rounds.start_run(ws, recipe, a.rounds)
                for note in status["prepared"]:
                    print(note, file=sys.stderr)
                launch = jobs.launch
                if a.engine == "ray":  # generation and judge steps on Ray; training stays local (torchrun)
                    from core import ray_jobs

                    launch = ray_jobs.launcher(a.ray_address, a.ray_workers, num_gpus=a.ray_gpus)
                status = rounds.drive(ws, status["name"], launch=launch,
                                      on_progress=lambda s: print(s, file=sys.stderr))
            except rounds.RoundFailed as exc:
                raise CliError(f"the run stopped: {exc}; fix it and run the same command again to retry", 1) from None
            except owner.USER_ERRORS as exc:
                raise CliError(str(exc)) from None
        return _print_json_or(status, a, _round_lines(status))
    if a.action == "status":
        r = run_op(root, "round_status", {"name": a.args[0] if a.args else None})
        if getattr(a, "json", False):
            return _print_json_or(r, a, [])
        return _print_json_or(r, a, [line for run in r["runs"] for line in _round_lines(run)]
                              or ["no rounds yet: `winnow round run recipes/tapir-tiny.yaml`"])
    if len(a.args) != 2:
        raise CliError("`winnow round compare RUN/1 RUN/2 [--json]`")
    r = run_op(root, "round_compare", {"a": a.args[0], "b": a.args[1]})
    lines = []
    for side in ("a", "b"):
        f = r[side]
        ev = f.get("evaluation") or {}
        mfd = f.get("mfd") or {}
        lines.append(f"{f['round']}: {f['student']} → {f['model']}, α {f['alpha']}, {f['seeds']} seeds, "
                     f"{f['expanded']} expanded, {f['train_members']} training samples, mean MFD "
                     + (f"{mfd['mean']:.2f}" if mfd.get("mean") is not None else "n/a")
                     + (f"; {ev['line']}" if ev.get("line") else ""))
    if r.get("mfd_shift") is not None:
        lines.append(f"mean MFD shift: {r['mfd_shift']:+.2f}")
    if r.get("head_to_head"):
        lines.append("head to head: " + r["head_to_head"]["line"])
    return _print_json_or(r, a, lines)


def _round_via_owner(root: Path, recipe: str, a) -> int:
    """The app owns the catalog: it advances the run; this command starts it and follows it."""
    pid = owner.owner_pid(root)
    if pid is None:
        raise CliError("the workspace is busy and no Winnow app owns it", EXIT_BUSY)
    print(f"The Winnow app (PID {pid}) has this workspace open; it runs the rounds, this command follows them …",
          file=sys.stderr)
    if a.engine == "ray":
        print("note: --engine ray is not passed to the app: its owner runs the round's jobs on this machine",
              file=sys.stderr)
    try:
        status = owner.submit(root, "round_start", {"recipe": recipe, "rounds": a.rounds})
        last = None
        while status["status"] == "active":
            state = _round_lines(status)[-1]
            if state != last:
                print(state.strip(), file=sys.stderr)
            last = state
            time.sleep(2)
            status = owner.submit(root, "round_status", {"name": status["name"]})["runs"][0]
    except owner.RequestFailed as exc:
        raise CliError(str(exc)) from None
    except (owner.OwnerGone, TimeoutError) as exc:
        raise CliError(f"{exc}; run the command again to continue the rounds", EXIT_BUSY) from None
    if status["status"] == "failed":
        raise CliError(f"the run stopped: {status['error']}; run the same command again to retry", 1)
    return _print_json_or(status, a, _round_lines(status))


def cmd_feedback(a) -> int:
    """Zephyr AI feedback (core.feedback): pairs from a judge's aspect ratings of a pool's answers."""
    r = run_op(resolve_workspace_path(a.workspace), "binarise",
               {"judge": a.judge, "roles": a.role, "rubric": a.rubric, "seed": a.seed, "round": a.round,
                "min_margin": a.min_margin, "datasets": a.dataset or []})
    return _print_json_or(r, a, [r["line"]])


def cmd_rank(a) -> int:
    """Tuna rankings (core.ranking): probabilistic (stored mean log-probs) or contextual (listwise verdicts)."""
    r = run_op(resolve_workspace_path(a.workspace), "rank",
               {"method": a.method, "role": a.role, "model": a.model, "judge": a.judge, "round": a.round,
                "datasets": a.dataset or []})
    return _print_json_or(r, a, [r["line"]])


def cmd_categories(a) -> int:
    """CITING categories (core.categories): assign instructions to a scheme's categories."""
    r = run_op(resolve_workspace_path(a.workspace), "categories_assign",
               {"scheme": a.scheme, "datasets": a.dataset or []})
    return _print_json_or(r, a, [json.dumps(r, default=str)])


def cmd_curate(a) -> int:
    root = resolve_workspace_path(a.workspace)
    if a.action == "create":
        if not (a.spec and a.name):
            raise CliError("`winnow curate create` needs --spec FILE and --name NAME")
        spec = Path(a.spec).read_text(encoding="utf-8") if Path(a.spec).is_file() else a.spec
        r = run_op(root, "curate_create", {"spec": spec, "name": a.name})
        state = "created" if r["created"] else "exists already, identical"
        return _print_json_or(r, a, [f"snapshot {r['name']} {state}: {r['n_members']} samples of "
                                     f"{r['n_instructions']} instructions, hash {r['content_hash'][:12]}"])
    if a.action == "list":
        r = run_op(root, "curate_list", {})
        return _print_json_or(r, a, [f"{s['name']:<24} {s['n_members']:>8} samples  {s['created_at']}"
                                     for s in r["snapshots"]] or ["no snapshots yet"])
    if a.action == "explain":
        if len(a.args) != 2:
            raise CliError("`winnow curate explain SNAPSHOT SAMPLE`")
        r = run_op(root, "curate_explain", {"snapshot": a.args[0], "sample": a.args[1]})
        return _print_json_or(r, a, [json.dumps(r, default=str, indent=2)])
    if a.action == "diff":
        if len(a.args) != 2:
            raise CliError("`winnow curate diff A B`")
        r = run_op(root, "curate_diff", {"a": a.args[0], "b": a.args[1]})
        return _print_json_or(r, a, [json.dumps(r, default=str, indent=2)])
    if len(a.args) != 1:
        raise CliError("`winnow curate export NAME --format F`")
    r = run_op(root, "curate_export", {"name": a.args[0], "fmt": a.format, "file_type": a.type,
                                        "out": str(Path(a.out).resolve()) if a.out else None})
    print(f"wrote {r['records']} {r['format']} records to {r['path']}")
    return 0


def cmd_jobs(a) -> int:
    root = resolve_workspace_path(a.workspace)
    if a.action == "list":
        for j in run_op(root, "jobs", {})["jobs"]:
            err = f"  {j['error']}" if j.get("error") else ""
            print(f"{j['id']:<40} {j['kind']:<9} {j['status']:<10} {j['done']:>6}/{j['total']:<6} "
                  f"{j['model'] or '':<24}{err}")
        return 0
    if not a.job:
        raise CliError(f"`winnow jobs {a.action}` needs a job id (see `winnow jobs list`)")
    job_dir = Path(run_op(root, "job_dir", {"job": a.job})["dir"])
    if a.action == "cancel":
        jobs.cancel(job_dir)
        print(f"asked {a.job} to stop after its current shard")
        return 0
    if jobs.status(job_dir) == "running":
        raise CliError(f"job {a.job} is already running")
    return _run_job(root, a.job, job_dir, a)


def cmd_index(a) -> int:
    info = run_op(resolve_workspace_path(a.workspace), "text_index", {"action": a.action})
    if a.json:
        print(json.dumps(info))
        return 0
    if not info["available"]:
        print("no text index: tantivy is not installed (searches scan)")
        return 0
    if a.action == "rebuild":
        print(f"indexed {info['indexed']} rows in {info['seconds']} s")
    if not info["exists"]:
        print(f"no text index yet: one is built from {info['min_rows']:,} instructions "
              f"(this workspace has {info['instructions']:,}); `winnow index rebuild` builds one now")
    elif info["behind"] is None:
        print("the text index is not usable (another schema or a broken mark): searches scan; "
              "`winnow index rebuild` rebuilds it")
    else:
        state = "current" if info["behind"] == 0 else f"{info['behind']:,} rows behind (it catches up on its own)"
        print(f"text index {info['folder']}: {info['instructions']:,} instructions, {info['responses']:,} "
              f"responses, {state}" + (", building now" if info["building"] else ""))
    return 0


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE of `models add --option`; the value is read as JSON when it parses (0.7, true), else text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise CliError(f"--option must be KEY=VALUE, not {text!r}")
    try:
        return key.strip(), json.loads(value)
    except json.JSONDecodeError:
        return key.strip(), value


def cmd_models(a) -> int:
    root = resolve_workspace_path(a.workspace)
    if a.action == "list":
        for m in run_op(root, "models", {})["models"]:
            where = m["path"] or ", ".join(m["base_urls"])
            print(f"{m['name']:<28} {m['backend']:<7} {'built-in' if m['builtin'] else 'workspace':<10} {where}")
        return 0
    if not a.name:
        raise CliError(f"`winnow models {a.action}` needs a model name")
    if a.action == "add":
        spec = {"name": a.name, "backend": a.backend}
        if a.backend == "openai":
            spec |= {"base_urls": a.url or [], "model": a.served_model, "api_key_env": a.api_key_env}
        elif a.backend == "python":  # module:function, not a file: passed through as written
            spec["path"] = a.path
            if a.option:
                spec["extra"] = {"options": dict(_option(o) for o in a.option)}
        else:
            spec["path"] = str(Path(a.path).resolve()) if a.path else None
        for key in ("context_length", "dtype", "chat_template"):
            if getattr(a, key, None) is not None:
                spec[key] = getattr(a, key)
        if getattr(a, "trust_remote_code", False):
            spec["trust_remote_code"] = True
        added = run_op(root, "add_model", {"spec": spec, "replace": a.replace})
        print(f"added {added['name']} ({added['backend']})")
        if added.get("trust_remote_code"):
            print(f"WARNING: {added['name']} has trust_remote_code on: loading it runs Python code from its folder "
                  "with your permissions", file=sys.stderr)
        return 0
    # test: load the model here and answer one prompt (no catalog access needed after the lookup)
    from core.llm.base import GenerationParams
    from core.llm.openai_backend import ServerError
    from core.llm.registry import load_backend

    spec = run_op(root, "model", {"name": a.name})
    started = time.time()
    try:
        with load_backend(spec) as backend:
            loaded = time.time()
            out = backend.generate([[{"role": "user", "content": a.prompt}]],
                                   GenerationParams(temperature=0.0, max_tokens=a.max_tokens))[0][0]
    except ServerError as exc:  # no server answered: one clear line, not a traceback
        print(f"winnow models test: {exc}", file=sys.stderr)
        return 1
    elapsed = time.time() - loaded
    print(out.text)
    print(f"[{a.name}: loaded in {loaded - started:.1f} s; {out.n_tokens} tokens in {elapsed:.1f} s "
          f"({out.n_tokens / max(elapsed, 1e-9):.1f} tok/s); finish: {out.finish_reason}]", file=sys.stderr)
    return 0 if out.ok else 1


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
    p.add_argument("--demo-pipeline", action="store_true",
                   help="with --demo: the app, once started, judges the seed with the built-in model and "
                        "labels tasks in the background (what `make run` does)")
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

    p = sub.add_parser("models", parents=[common], help="list, add or try models")
    p.add_argument("action", choices=("list", "add", "test"))
    p.add_argument("name", nargs="?", help="model name")
    p.add_argument("--backend", choices=("hf", "vllm", "openai", "python"), default="hf")
    p.add_argument("--path", help="hf/vllm: a local Hugging Face model folder (safetensors); "
                                  "python: module:function, e.g. core.synthetic:addition_teacher")
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="python: a keyword argument of the function, e.g. error_rate=0.7 (repeatable)")
    p.add_argument("--url", action="append", help="openai: base URL, e.g. http://127.0.0.1:8000/v1 (repeatable)")
    p.add_argument("--served-model", help="openai: the model id the server knows")
    p.add_argument("--api-key-env", help="openai: NAME of the environment variable holding the API key")
    p.add_argument("--context-length", type=int)
    p.add_argument("--dtype")
    p.add_argument("--chat-template", help="a Jinja chat template overriding the tokenizer's")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the folder's own Python code (an auto_map); read it first")
    p.add_argument("--replace", action="store_true", help="replace a model of the same name")
    p.add_argument("--prompt", default="What is the capital of France? Answer in one sentence.")
    p.add_argument("--max-tokens", type=int, default=48)
    p.set_defaults(func=cmd_models)

    for stage in stages.all_stages():
        add_stage_parser(sub, common, stage)

    p = sub.add_parser("tasks", parents=[common], help="task labels: classify, relabel, held-out accuracy")
    p.add_argument("action", choices=("classify", "relabel", "accuracy"))
    p.add_argument("instruction", nargs="?", help="relabel: the instruction id")
    p.add_argument("task", nargs="?", help="relabel: the new task")
    p.add_argument("--method", choices=("embed", "llm"), default="embed",
                   help="embed: MiniLM + a classifier trained on your labels; llm: zero-shot over the class names")
    p.add_argument("--model", "-m", help="llm: the model (default: the workspace's default model)")
    p.add_argument("--all", action="store_true", help="classify: also instructions that have a label")
    p.add_argument("--reviewer")
    p.add_argument("--test-share", type=float, default=0.25)
    p.add_argument("--dataset", "-d", action="append")
    p.add_argument("--limit", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("difficulty", parents=[common],
                       help="TAPIR's MFD: teacher and student answer, a judge scores both, MFD = difference")
    p.add_argument("--teacher", required=True)
    p.add_argument("--student", required=True)
    p.add_argument("--judge", "-j", required=True)
    p.add_argument("--dataset", "-d", action="append", required=True)
    p.add_argument("--rubric", default="pointwise_10")
    p.add_argument("--mode", choices=("auto", "probability", "generate"), default="auto")
    p.add_argument("--limit", type=int)
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_difficulty)

    p = sub.add_parser("eval", parents=[common],
                       help="evaluate a model against another: both answer the prompts, a judge compares each pair "
                            "in both orders")
    p.add_argument("--model", "-m", required=True, help="model A (the one the win rate is for)")
    p.add_argument("--against", "-b", required=True, help="model B")
    p.add_argument("--prompts", "-d", required=True, help="the prompt dataset (held-out prompts)")
    p.add_argument("--judge", "-j", required=True, help="the judge model")
    p.add_argument("--rubric", default="pairwise", help="a pairwise rubric (default: pairwise)")
    p.add_argument("--pointwise", help="also a pointwise rubric's mean score per model, e.g. pointwise_5")
    p.add_argument("--mode", choices=stages.JUDGE_MODES, default="auto", help="the judge's scoring mode")
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--limit", type=int, help="only the dataset's first N prompts")
    p.add_argument("--max-tokens", type=int, default=256, help="tokens per answer at most")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("binarise", parents=[common],
                       help="Zephyr AI feedback: preference pairs from a judge's aspect ratings of a pool's answers "
                            "(chosen = best mean, rejected = a random lower one, ties dropped)")
    p.add_argument("--judge", "-j", required=True, help="the judge model whose aspect ratings are read")
    p.add_argument("--role", "-r", action="append", required=True,
                   help="a pool role; repeat: --role pool_1 --role pool_2")
    p.add_argument("--rubric", default="zephyr_aspects", help="a per-aspect rubric (default: zephyr_aspects)")
    p.add_argument("--seed", type=int, default=0, help="the draw of the rejected answer (default 0)")
    p.add_argument("--round", type=int, default=0, help="the round of the answers and pairs (default 0)")
    p.add_argument("--min-margin", type=float, default=0.0, dest="min_margin",
                   help="rejected only among answers at least this much lower (default 0: any lower one)")
    p.add_argument("--dataset", "-d", action="append", help="only the prompts of this dataset (repeat)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_feedback)

    p = sub.add_parser("rank", parents=[common], help="Tuna: rank each prompt's answers (probabilistic or contextual)")
    p.add_argument("method", choices=["probabilistic", "contextual"])
    p.add_argument("--role", "-r", required=True, help="the role of the answers ranked")
    p.add_argument("--model", "-m", required=True, help="the model whose answers are ranked")
    p.add_argument("--judge", "-j", help="contextual: the listwise judge whose verdicts are read")
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--dataset", "-d", action="append", help="only the prompts of this dataset (repeat)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("categories", parents=[common],
                       help="CITING: assign instructions to a category scheme (mean inner product of embeddings)")
    p.add_argument("action", choices=["assign"])
    p.add_argument("--scheme", required=True, help="the category scheme (a CITING run uses its name)")
    p.add_argument("--dataset", "-d", action="append", help="only the instructions of this dataset (repeat)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_categories)

    p = sub.add_parser("round", parents=[common], help="rounds of a recipe: run, status, compare")
    p.add_argument("action", choices=("run", "status", "compare"),
                   help="run RECIPE [--rounds N]; status [RUN]; compare RUN/1 RUN/2")
    p.add_argument("args", nargs="*", help="run: the recipe file; status: a run name; compare: two round ids")
    p.add_argument("--rounds", type=int, help="run: rounds in all (default: the recipe's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _engine_args(p)
    p.set_defaults(func=cmd_round)

    p = sub.add_parser("curate", parents=[common], help="curation snapshots: create, list, explain, diff, export")
    p.add_argument("action", nargs="?", default="create", choices=("create", "list", "explain", "diff", "export"),
                   help="create (default): `winnow curate --spec FILE --name N`")
    p.add_argument("args", nargs="*", help="explain: SNAPSHOT SAMPLE; diff: A B; export: NAME")
    p.add_argument("--spec", help="create: a YAML or JSON spec file")
    p.add_argument("--name", help="create: the snapshot's name")
    p.add_argument("--format", "-f", choices=EXPORT_FORMATS, default="messages")
    p.add_argument("--type", choices=FILE_TYPES, default="jsonl")
    p.add_argument("--out", "-o")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_curate)

    p = sub.add_parser("judges", parents=[common],
                       help="every judge and rubric, and whether it beats chance on your accept/reject labels")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_judges)

    p = sub.add_parser("jobs", parents=[common], help="list, resume or cancel jobs")
    p.add_argument("action", choices=("list", "resume", "cancel"))
    p.add_argument("job", nargs="?", help="job id")
    _engine_args(p)
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("index", parents=[common], help="the text search index: status, or rebuild it")
    p.add_argument("action", choices=("status", "rebuild"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("app", parents=[common], help="start the web app")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=cmd_app)
    return parser


def _engine_args(p) -> None:
    """Where a job's shards run (not a stage param: it does not change the job's output)."""
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where the shards run: this machine, or a Ray cluster (Ray Data; `pip install winnow[ray]`)")
    p.add_argument("--ray-address", help="auto, HOST:PORT or ray://HOST:10001 (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--ray-workers", type=int, help="model workers (Ray actors); default: what the cluster's CPUs/GPUs hold")
    p.add_argument("--ray-gpus", type=float, help="GPUs per worker, e.g. 1 for a vLLM worker (default 0)")


_ARG_TYPES = {"int": int, "float": float}


def add_stage_parser(sub, common, stage) -> None:
    """A subcommand for a stage, built from its params (core.stages) plus the selection flags."""
    p = sub.add_parser(stage.name, parents=[common], help=f"{stage.help} (a job)")
    for f in stage.fields():
        flags = [f.flag] + ([f.short] if f.short else [])
        kwargs = {"dest": f.name, "help": f.help + ("" if f.required else f" (default: {f.default})")}
        if f.repeated:
            kwargs["action"] = "append"
        if f.choices and f.kind == "choice":
            kwargs["choices"] = f.choices
        if f.kind in _ARG_TYPES:
            kwargs["type"] = _ARG_TYPES[f.kind]
        if f.kind == "bool":  # a switch: present = true
            kwargs |= {"action": "store_true", "default": None}
        p.add_argument(*flags, required=f.required, **kwargs)
    p.add_argument("--dataset", "-d", action="append", help="only these datasets (repeatable)")
    p.add_argument("--task", action="append", help="only these task labels (repeatable)")
    p.add_argument("--search", help="only instructions containing this text")
    p.add_argument("--limit", type=int, default=1_000_000, help="at most this many input items")
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--shard-size", type=int, default=16, help="items per shard (the unit of resume)")
    p.add_argument("--detach", action="store_true", help="start the job and return; see `winnow jobs`")
    p.add_argument("--drop-too-long", action="store_true",
                   help="leave out prompts longer than the model's context (generate); else they are counted "
                        "and run as too long")
    _engine_args(p)
    p.set_defaults(func=cmd_stage)


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
