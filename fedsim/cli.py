"""The ``fedsim`` command: ``run`` (a Hydra app), ``report`` and ``list``.

Config errors are found before any job starts, for every job of a sweep, and reported as
one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from fedsim.errors import ConfigError, RunError

USAGE = """usage: fedsim run [-m] [key=value ...]   run a simulation (Hydra overrides; -m sweeps)
       fedsim resume RUN_DIR [rounds=N]  continue a run from its last checkpoint (or extend it)
       fedsim report PATH [PATH ...] [--out DIR] [--target ACCURACY] [--metric NAME]
                     [--x round|local_steps|bytes|sim_time_s] [--logx | --no-logx]
                                         summarise runs and sweeps: tables, CSV, figures
       fedsim list [--markdown]          config groups, their options and settings"""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedsim`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(USAGE, file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    commands = {"run": run, "resume": resume, "report": report, "list": list_options}
    if command not in commands:
        print(f"fedsim: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    try:
        return commands[command](rest)
    except ConfigError as error:
        print(f"fedsim: config error: {error}", file=sys.stderr)
        return 2
    except RunError as error:
        print(f"fedsim: error: {error}", file=sys.stderr)
        return 1


def run(args: list[str]) -> int:
    """``fedsim run [overrides]``: check every job, take the output directory, then hand
    over to Hydra.  Ctrl-C and SIGTERM stop between two rounds after a checkpoint."""
    from fedsim.runner import (
        claim,
        hydra_main,
        launch,
        precheck,
        print_sweep,
        settings_of_swept_groups_per_job,
        sweep_settings,
    )

    multirun = any(arg in ("-m", "--multirun") for arg in args)
    held = directory = None
    hydras_flags = any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in args)
    if not hydras_flags:
        directory, resuming = precheck(args)
        held = claim(directory, multirun, resuming)
        args = [*args, f"hydra.{'sweep' if multirun else 'run'}.dir={directory}"]
    if multirun:
        args = [*settings_of_swept_groups_per_job(args), *sweep_settings(args)]
    sys.argv = ["fedsim run", *args]
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        if hydras_flags:
            hydra_main()
        else:
            launch([arg for arg in args if arg not in ("-m", "--multirun")], multirun)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    except KeyboardInterrupt as stop:
        print("fedsim: interrupted; the metrics recorded so far are kept", file=sys.stderr)
        return 128 + getattr(stop, "signal_number", signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, previous)
        if held is not None:
            held.close()
        if multirun and directory is not None:
            print_sweep(directory)  # also after a failed job: those that ran
    return 0


def _interrupt(number: int, _frame: object) -> None:
    """SIGTERM (what schedulers send) outside the round loop: stop as Ctrl-C would."""
    from fedsim.engine import Interrupted

    raise Interrupted(number)


RESUME_USAGE = """usage: fedsim resume RUN_DIR [key=value ...]
continue the run in RUN_DIR from its last checkpoint, with the overrides it was started with;
rounds=N extends a run (also a completed one) to N rounds; progress=false and
checkpoint_every=K may change too, any other setting must stay as it was"""


def resume(args: list[str]) -> int:
    """``fedsim resume RUN_DIR [key=value ...]``: continue a run from its last checkpoint with
    its own overrides; later ones (``rounds=N``) replace them."""
    from omegaconf import OmegaConf

    if args[:1] in (["-h"], ["--help"]):
        print(RESUME_USAGE)
        return 0
    if not args or args[0].startswith("-") or "=" in args[0]:
        print(RESUME_USAGE, file=sys.stderr)
        return 2
    run_dir, changes = Path(args[0]), args[1:]
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        raise ConfigError(f"{run_dir} is not a fedsim run directory (no .hydra/overrides.yaml)")
    changed = {_key(change) for change in changes}
    overrides = [
        str(override)
        for override in OmegaConf.load(saved)
        if _key(str(override)) not in {*changed, "hydra.run.dir", "resume"}
    ]
    return run([*overrides, *changes, "resume=true", f"hydra.run.dir={run_dir}"])


def _key(override: str) -> str:
    return override.split("=")[0].lstrip("+~")


def report(args: list[str]) -> int:
    """``fedsim report PATH [PATH ...] [--out DIR] [--target ACCURACY] [--metric NAME]
    [--x AXIS] [--logx | --no-logx]``: print the per-run summary (and the per-configuration
    one when seeds repeat) of every run below the paths; write report*.csv and figures.
    Unreadable runs are left out, one line each on stderr; exit 2 if no run is readable."""
    import os
    import shutil

    from rich.console import Console

    from fedsim.metrics.figures import X_AXES
    from fedsim.metrics.report import NoReadableRunError
    from fedsim.metrics.report import report as write_report
    from fedsim.metrics.tables import format_by_config, format_summary

    parser = argparse.ArgumentParser(prog="fedsim report")
    parser.add_argument(
        "paths",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="run or sweep directories; several make one table and one set of figures",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="where to write (default: PATH; needed with several)"
    )
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        metavar="ACCURACY",
        help="also report the round, bytes and seconds at which accuracy first reaches this",
    )
    parser.add_argument(
        "--metric", default="accuracy", help="the metric to draw (default: accuracy)"
    )
    parser.add_argument(
        "--x",
        choices=list(X_AXES),
        default=None,
        help="the x axis of the figures (default: each one the runs record)",
    )
    parser.add_argument(
        "--logx",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log-scale x axes (default: for bytes only)",
    )
    options = parser.parse_args(args)
    if options.target is not None and not 0 < options.target <= 1:
        parser.error(f"--target must be an accuracy in (0, 1], got {options.target}")
    if options.out is None and len(options.paths) > 1:
        parser.error("--out DIR is needed with several PATHs")
    try:
        written = write_report(
            options.paths,
            options.out,
            target=options.target,
            metric=options.metric,
            x=options.x,
            logx=options.logx,
        )
    except (FileNotFoundError, NoReadableRunError) as error:
        print(f"fedsim: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # a --metric or --x these runs do not record
        print(f"fedsim report: error: {error}", file=sys.stderr)
        return 2
    for run in written.unreadable:
        print(f"fedsim: skipped unreadable run {run}", file=sys.stderr)
    # The terminal's width: stdout's, or stderr's under `| tee` or `| less` (COLUMNS wins);
    # a file has none, and its tables are not squeezed into rich's default 80 columns.
    columns = shutil.get_terminal_size((0, 0)).columns
    if not columns and sys.stderr.isatty():
        columns = os.get_terminal_size(sys.stderr.fileno()).columns
    console = Console(width=columns or 160)
    console.print(format_summary(written.summary))
    if written.by_config is not None:
        console.print(format_by_config(written.by_config))
    names = ", ".join(file.name for file in written.files)
    print(f"wrote {names} to {options.out or options.paths[0]}")
    return 0


def list_options(args: list[str]) -> int:
    """``fedsim list [--markdown]``: every config group with its options, one line each."""
    from fedsim import catalogue

    print(catalogue.markdown() if "--markdown" in args else catalogue.text() + "\n", end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
