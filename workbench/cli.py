"""`workbench` command line. Imports are lazy: `workbench --help` never imports torch.

Exit codes: 0 ok, 1 a gate rule failed, 2 usage/config error, 3 internal error
(`gate` also uses 3 for "could not evaluate"), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own usage errors -> exit 2, no traceback
        self.print_usage(sys.stderr)
        print(f"workbench: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="workbench", description="Evaluation, robustness and interpretability workbench for PyTorch models.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--store", help="run store path (default $WORKBENCH_STORE or .workbench/store.sqlite)")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    r = sub.add_parser("run", help="run a plan: train models, run suites, write reports")
    r.add_argument("plan", nargs="?", help="plan TOML file (optional with --resume)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a plan key (repeatable)")
    r.add_argument("--suite", action="append", default=[], metavar="NAME", help="only these suites (repeatable)")
    r.add_argument("--model", action="append", default=[], metavar="NAME", help="only these models (repeatable)")
    r.add_argument("--device", choices=["auto", "cpu", "cuda"], help="device (default: the plan's, else auto)")
    r.add_argument("--out", help="reports directory (default: the plan's run.out, 'reports')")
    r.add_argument("--resume", metavar="RUN_ID", help="continue an interrupted run, keeping its finished jobs")
    r.add_argument("--executor", choices=["local", "ray"], default="local", help="where jobs run")
    r.add_argument("--address", help="Ray cluster address (auto or HOST:PORT) with --executor ray")
    r.add_argument("--shards", type=int, default=1, help="with --executor ray: data shards per shardable job")
    r.add_argument("--quiet", action="store_true", help="less output")

    ls = sub.add_parser("list", help="list registered models, datasets, suites, or stored runs")
    ls.add_argument("what", choices=["models", "datasets", "suites", "runs", "recipes"])

    v = sub.add_parser("validate", help="check a plan without running it")
    v.add_argument("plan")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    v.add_argument("--no-estimate", action="store_true",
                   help="skip the cost estimate (it builds and times each model on the device)")
    v.add_argument("--limit-minutes", type=float, default=30.0,
                   help="warn when the plan is expected to take longer than this (default 30)")

    rep = sub.add_parser("report", help="(re)write reports for a run")
    rep.add_argument("run", help="run id (or unique prefix, or 'latest') or a results.json path")
    rep.add_argument("--format", default="html,md,json,junit", help="comma-separated: html,md,json,junit")
    rep.add_argument("--out", help="output directory (default: the run's directory)")

    g = sub.add_parser("gate", help="check a run against gate rules (exit 0 pass, 1 fail, 2 usage, 3 could not evaluate)")
    g.add_argument("run", help="run id (or prefix, or 'latest') or a results.json path")
    g.add_argument("--rules", help="TOML file with [gates] rules (default: the run's plan)")
    g.add_argument("--baseline", help="baseline run id or results.json for change rules")
    g.add_argument("--out", help="where to write junit.xml and gate.md (default: the run's directory)")

    ui = sub.add_parser("ui", help="start the Streamlit dashboard")
    ui.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=8501)

    t = sub.add_parser("train", help="train a plan's models (optionally with torchrun DDP)")
    t.add_argument("plan")
    t.add_argument("--model", action="append", default=[], metavar="NAME")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--nproc", type=int, default=1, help="processes for torchrun DDP (1: no DDP)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"])
    return p


def _store(args: argparse.Namespace) -> Any:
    from workbench.store import Store

    return Store(args.store) if args.store else Store()


def _load_record(ref: str, args: argparse.Namespace) -> tuple[Any, Path]:
    """A RunRecord and its directory from a results.json path or a run id in the store."""
    from workbench.errors import ConfigError
    from workbench.records import RunRecord

    p = Path(ref)
    if p.suffix == ".json" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"Results file not found: {p}" + (" (a directory)" if p.is_dir() else ""))
        try:
            data = json.loads(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{p}: not a valid results.json (not UTF-8: {exc.reason} at byte {exc.start}).") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: not a valid results.json ({exc}).") from None
        except RecursionError:
            raise ConfigError(f"{p}: not a valid results.json (nested too deeply to read).") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot read ({exc.strerror}).") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: not a valid results.json (expected a JSON object with run_id, provenance and "
                              f"results, got a JSON {type(data).__name__}).")
        try:
            return RunRecord.from_dict(data), p.parent
        except Exception as exc:  # any malformed field: say which file, never a traceback
            raise ConfigError(f"{p}: not a valid results.json ({type(exc).__name__}: {exc}).") from None
    store = _store(args)
    run_id = store.resolve_run_id(ref)
    info = store.run_info(run_id)
    _require_complete(info)
    return store.load_run(run_id), Path(info["run_dir"])


def _require_complete(info: dict[str, Any]) -> None:
    """A ConfigError for a run that did not complete, with its reason."""
    from workbench.errors import ConfigError

    if info["status"] == "complete":
        return
    run_id = info["run_id"]
    reason = f" ({info.get('reason')})" if info.get("reason") else ""
    if info["status"] == "failed":
        raise ConfigError(f"Run {run_id} failed{reason}; it has no report. Fix the problem and start a new run.")
    raise ConfigError(f"Run {run_id} is {info['status']}, not complete{reason}; resume it with "
                      f"`workbench run PLAN --resume {run_id}`.")


def cmd_run(args: argparse.Namespace) -> int:
    from workbench.config import build_plan, load_plan, user_code_references
    from workbench.errors import ConfigError
    from workbench.runner import run_plan
    from workbench.store import Store

    log = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    if args.resume and not args.plan:
        store = _store(args)
        info = store.run_info(store.resolve_run_id(args.resume))
        raw = info["provenance"].get("plan") or {}
        refs = user_code_references(raw)
        if refs:  # code is imported only from a plan the user hands over, never from the store
            raise ConfigError(
                f"Run {info['run_id']} runs user code ({'; '.join(refs)}); the workbench does not import code "
                f"named in the store. Resume it with your plan file: workbench run PLAN --resume {info['run_id']}"
            )
        plan = build_plan(raw, source=f"run {info['run_id']}")
    elif not args.plan:
        raise ConfigError("`workbench run` needs a PLAN file (or --resume RUN_ID).")
    else:
        plan = load_plan(args.plan, args.set)
        # --store > the plan's [run] store > $WORKBENCH_STORE > .workbench/store.sqlite
        store = Store(args.store or plan.run.store)
    if args.executor == "ray":
        from workbench.executors.ray_executor import run_plan_ray
        from workbench.usercode import import_dirs

        if args.resume:
            raise ConfigError("--resume works with the local executor only; drop --executor ray to resume.")
        if args.shards < 1:
            raise ConfigError(f"Expected --shards >= 1, got {args.shards}.")
        dirs = [str(Path(d).resolve()) for d in (plan.base_dir, Path.cwd()) if d]
        # a local cluster's workers inherit the environment: they import user modules from the same folders
        os.environ["PYTHONPATH"] = os.pathsep.join([*dirs, *filter(None, [os.environ.get("PYTHONPATH")])])
        with import_dirs(dirs):
            outcome = run_plan_ray(plan, suites=args.suite or None, models=args.model or None, device=args.device,
                                   out=args.out, store=store, address=args.address, log=log, shards=args.shards)
    else:
        outcome = run_plan(plan, suites=args.suite or None, models=args.model or None, device=args.device,
                           out=args.out, store=store, resume=args.resume, log=log)
    n_ok = sum(r.status == "ok" for r in outcome.run.results)
    n_err = sum(r.status == "error" for r in outcome.run.results)
    print(f"\nrun {outcome.run.run_id}: {n_ok} ok, {n_err} errors, "
          f"{len(outcome.run.results) - n_ok - n_err} skipped in {outcome.run.provenance['timings_s'].get('total', 0):.1f} s")
    for kind, path in sorted(outcome.reports.items()):
        print(f"  {kind:<6} {path}")
    if outcome.gate is not None:
        from workbench.gates import gate_exit_code

        code = gate_exit_code(outcome.gate)
        print(f"  gates: {'pass' if code == 0 else 'FAIL' if code == 1 else 'could not evaluate'}")
        return code
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from workbench.registry import DATASETS, MODELS, SUITES

    if args.what == "suites":
        for name in SUITES.names():
            cls = SUITES.get(name)
            tasks = ",".join(sorted(getattr(cls, "tasks", ())))
            print(f"{name:<14} [{tasks}] {getattr(cls, 'description', '')}")
    elif args.what == "models":
        for name in MODELS.names():
            print(f"{name:<14} sizes: tiny, base  ({MODELS._lazy.get(name, 'plug-in')})")
    elif args.what == "datasets":
        for name in DATASETS.names():
            print(f"{name:<30} {DATASETS._lazy.get(name, 'plug-in')}")
    elif args.what == "recipes":
        from workbench.train import RECIPES

        for name in RECIPES.names():
            print(name)
    else:
        runs = _store(args).runs(limit=50)
        if not runs:
            print("no runs in the store")
        for r in runs:
            reason = f"  reason: {r['reason']}" if r.get("reason") else ""
            print(f"{r['run_id']:<48} {r['status']:<11} {r['created_at']}  gate={r['gate_status'] or '-'}{reason}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    """Everything that needs no training: the plan, every dataset, every factory (imported
    and built), every checkpoint (weights only) and every model's output on a few rows.
    Every problem of every model is reported at once."""
    from workbench.build import check_plan
    from workbench.config import load_plan
    from workbench.errors import ProblemsError
    from workbench.runner import selected_suites
    from workbench.usercode import import_dirs, signals_as_interrupt

    plan = load_plan(args.plan, args.set)
    with import_dirs([plan.base_dir, Path.cwd()]), signals_as_interrupt():
        problems = check_plan(plan)
    if problems:
        raise ProblemsError([f"{args.plan}: {p}" for p in problems] if len(problems) == 1 else problems)
    print(f"{args.plan}: ok — {len(plan.models)} model{'' if len(plan.models) == 1 else 's'} "
          f"({', '.join(m.name for m in plan.models)}), suites: {', '.join(selected_suites(plan))}, "
          f"profile {plan.run.profile}")
    if not args.no_estimate:
        from workbench.estimate import estimate_plan

        try:
            with import_dirs([plan.base_dir, Path.cwd()]):
                estimate = estimate_plan(plan)
        except Exception as exc:  # the plan is valid; only the estimate could not be made
            print(f"estimate unavailable: {type(exc).__name__}: {exc}")
        else:
            print("\n".join(estimate.lines(limit_s=60.0 * args.limit_minutes)))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from workbench.reporting import write_reports

    from workbench.reporting import parse_formats

    formats = parse_formats(args.format)
    record, run_dir = _load_record(args.run, args)
    out = Path(args.out) if args.out else run_dir
    paths = write_reports(record, run_dir, formats=formats, out_dir=out)
    for kind, path in sorted(paths.items()):
        print(f"{kind:<6} {path}")
    return EXIT_OK


def _results_path(ref: str, args: argparse.Namespace) -> Path:
    """A results.json path (or run directory) from a path or a run id in the store."""
    from workbench.errors import ConfigError

    p = Path(ref)
    if p.suffix == ".json" or p.exists():
        return p
    store = _store(args)
    run_id = store.resolve_run_id(ref)
    info = store.run_info(run_id)
    _require_complete(info)
    return Path(info["run_dir"]) / "results.json"


def cmd_gate(args: argparse.Namespace) -> int:
    from workbench.gates import gate_main

    candidate = _results_path(args.run, args)
    baseline = _results_path(args.baseline, args) if args.baseline else None
    if not args.rules:  # the run's own rules: those on suites/models it did not select are not run
        from workbench.reporting import load_results

        run, _ = load_results(candidate)
        prov = run.get("provenance") or {}
        not_run = [r for r in prov.get("gates_not_run") or [] if isinstance(r, dict)]
        for r in not_run:
            print(f"not run ({r.get('reason')}): {r.get('rule')}")
        plan_rules = ((prov.get("plan") or {}).get("gates") or {}).get("rules") or []
        if not_run and len(not_run) >= len(plan_rules):
            print("gate: every rule is on a suite or model this run did not select; nothing to check")
            return EXIT_OK
    out = Path(args.out) if args.out else (candidate.parent if candidate.suffix == ".json" else candidate)
    code = gate_main(candidate, rules_file=args.rules, baseline=baseline, out_dir=out, formats=("html", "md", "json", "junit"))
    try:  # record the verdict beside the run in the store
        from workbench.gates import EXIT_FAIL, EXIT_PASS
        from workbench.reporting import load_results

        run, _ = load_results(candidate)
        status = {EXIT_PASS: "pass", EXIT_FAIL: "fail"}.get(code, "error")
        store = _store(args)
        if store.run_info(run["run_id"]) is not None:
            store.set_gate_status(run["run_id"], status)
    except Exception as exc:  # the verdict is already printed and written; the store row is a convenience
        print(f"workbench: note: gate status not recorded in the store ({exc})", file=sys.stderr)
    return code


def cmd_ui(args: argparse.Namespace) -> int:
    import subprocess

    import importlib.util

    spec = importlib.util.find_spec("workbench.apps.dashboard")  # the import system, not a path walk
    if spec is None or not spec.origin:
        print("workbench: error: the dashboard module workbench.apps.dashboard is not installed; "
              'reinstall with `pip install -e ".[ui]"`.', file=sys.stderr)
        return 2
    app = spec.origin
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: the dashboard will listen on {args.host}, reachable from other machines. "
              "It has no authentication; use 127.0.0.1 unless you mean it.", file=sys.stderr)
    cmd = [sys.executable, "-m", "streamlit", "run", str(app), "--server.address", args.host,
           "--server.port", str(args.port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer"]
    # The shipped apps/.streamlit/config.toml (beside the script) turns usage statistics off;
    # the flag and the variable say it again for a Streamlit that predates script-level config.
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    if args.store:
        env["WORKBENCH_STORE"] = str(Path(args.store).resolve())
    print(f"dashboard on http://{args.host}:{args.port}", flush=True)
    from workbench.usercode import signals_as_interrupt

    # SIGTERM/SIGINT become KeyboardInterrupt, on which subprocess.call kills the server:
    # stopping `workbench ui` never leaves an orphaned dashboard listening
    with signals_as_interrupt():
        return subprocess.call(cmd, env=env)


def cmd_train(args: argparse.Namespace) -> int:
    from workbench.distributed import train_command
    from workbench.usercode import import_dirs

    plan_dir = Path(args.plan).resolve().parent if args.plan else None
    with import_dirs([plan_dir, Path.cwd()]):  # user factories import from the plan's folder, as for run
        return train_command(args)


COMMANDS = {"run": cmd_run, "list": cmd_list, "validate": cmd_validate, "report": cmd_report,
            "gate": cmd_gate, "ui": cmd_ui, "train": cmd_train}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from workbench import __version__

        print(__version__)
        return EXIT_OK
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    from workbench.errors import WorkbenchError

    try:
        return COMMANDS[args.command](args)
    except WorkbenchError as exc:
        print(f"workbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RecursionError:  # a structure nested past Python's limit, wherever it came from
        print("workbench: error: input nested too deeply to process (Python's recursion limit).", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("workbench: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # internal error: say so, keep the traceback for a bug report
        import traceback

        traceback.print_exc()
        print(f"workbench: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
