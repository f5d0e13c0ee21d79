"""python -m experiments.optimization {fw-lower-bound, fw-rates, train, sweep} ...

Each entry point writes metrics.json and its figures into --out (default ./runs/<name>).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _lower_bound(args: argparse.Namespace) -> None:
    from experiments.optimization.lower_bound import run_lower_bound

    metrics = run_lower_bound(
        args.iters,
        args.digits,
        args.shift,
        args.random_starts,
        args.seed,
        args.out,
        args.random_starts_digits,
    )
    print(
        json.dumps(
            {
                k: metrics[k]
                for k in ("config", "constructed", "forward_tracks_construction_until", "timings")
            },
            indent=2,
        )
    )


def _rates(args: argparse.Namespace) -> None:
    from experiments.optimization.rates import run_rates

    metrics = run_rates(
        args.set,
        args.step,
        args.optimum,
        args.dim,
        args.iters,
        args.digits,
        args.p,
        args.seed,
        args.out,
    )
    print(
        json.dumps(
            {k: metrics[k] for k in ("config", "f_star", "iterations_run", "fits", "seconds")},
            indent=2,
        )
    )


def _train(args: argparse.Namespace) -> None:
    from experiments.optimization.train import TRAIN_OPTIONS, run_train

    options = {key: getattr(args, key) for key in TRAIN_OPTIONS}
    metrics = run_train(options, args.out, args.threads)
    print(json.dumps({k: metrics[k] for k in ("final_val_loss", "diverged", "seconds")}))


def _sweep(args: argparse.Namespace) -> None:
    from experiments.optimization.sweep import collect, expand_sweep, load_sweep, markdown_table

    if args.task is not None:
        from experiments.optimization.dispatch import run_task, task_out_dir

        metrics = run_task(args.config, args.task, task_out_dir(args.out), args.threads)
        print(json.dumps({k: metrics[k] for k in ("sweep", "final_val_loss", "diverged")}))
        return
    if args.submit:
        from experiments.optimization.dispatch import submit_sweep

        answer = submit_sweep(
            args.config,
            socket=args.socket,
            client=args.client,
            python=args.python,
            wait=args.wait,
            tags=args.tag,
            time_minutes=args.time,
        )
        print(json.dumps(answer, indent=2))
        print(
            f"collect with: python -m experiments.optimization sweep {args.config} --collect "
            f"--ledger URL --group {answer['group']}",
            file=sys.stderr,
        )
        failed = [run for run, state in answer.get("states", {}).items() if state != "finished"]
        if failed:
            raise ValueError(
                f"{len(failed)} of {len(answer['runs'])} runs did not finish: {failed}"
            )
        return
    if args.collect:
        from experiments.optimization.dispatch import ledger_metrics
        from experiments.optimization.sweep import sweep_points

        if not args.ledger:
            raise ValueError(
                "--collect needs --ledger URL (e.g. sqlite:////path/to/state/ledger.sqlite)"
            )
        sweep = load_sweep(args.config)
        experiment = args.experiment or sweep.name
        runs, problems = ledger_metrics(
            args.ledger, experiment, tag=args.tag[0] if args.tag else None, group=args.group
        )
        for problem in problems:
            print(f"warning: {problem}", file=sys.stderr)
        expected = len(sweep_points(sweep))
        if len(runs) < expected:
            print(
                f"warning: {len(runs)} of the sweep's {expected} runs have results",
                file=sys.stderr,
            )
        if not runs:
            raise ValueError(f"no finished run of {experiment!r} has training metrics")
        out = args.out or Path("runs") / sweep.name
        rows, plot = collect(runs, out)
        print(markdown_table(rows))
        print(f"wrote {out / 'sweep_table.md'}, {plot}", file=sys.stderr)
        return
    argvs = expand_sweep(args.config, args.out or Path("runs"))
    if not args.local:
        for argv in argvs:
            print(json.dumps(argv))
        return
    run_dirs = []
    for index, argv in enumerate(argvs):
        print(f"[{index + 1}/{len(argvs)}] {' '.join(argv[3:])}", file=sys.stderr, flush=True)
        if main(argv[3:]) != 0:
            raise ValueError(f"run {index} failed: {' '.join(argv)}")
        run_dirs.append(Path(argv[argv.index("--out") + 1]))
    rows, _ = collect(run_dirs, run_dirs[0].parent if run_dirs else args.out)
    print(markdown_table(rows))


def build_parser() -> argparse.ArgumentParser:
    from experiments.optimization.rates import OPTIMA, SETS, STEPS

    parser = argparse.ArgumentParser(prog="python -m experiments.optimization", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    lb = commands.add_parser(
        "fw-lower-bound", help="worst-case Frank-Wolfe trajectory on the unit ball (mpmath)"
    )
    lb.add_argument("--iters", type=int, default=2000)
    lb.add_argument(
        "--digits",
        type=int,
        default=None,
        help="mpmath digits of the worst case (default and minimum: enough to follow it forward for --iters steps; lower values are raised with a note)",
    )
    lb.add_argument(
        "--shift", type=float, default=1.0, help="start the limit orbit this many steps before t=0"
    )
    lb.add_argument("--random-starts", type=int, default=8)
    lb.add_argument(
        "--random-starts-digits",
        type=int,
        default=0,
        help="mpmath digits of the random starts; 0 (default) runs them in float64",
    )
    lb.add_argument("--seed", type=int, default=0)
    lb.add_argument("--out", type=Path, default=Path("runs/fw-lower-bound"))
    lb.set_defaults(run=_lower_bound)

    rates = commands.add_parser("fw-rates", help="Frank-Wolfe rate on one set with one step rule")
    rates.add_argument("--set", choices=SETS, default="ball")
    rates.add_argument("--step", choices=STEPS, default="line-search")
    rates.add_argument("--optimum", choices=list(OPTIMA), default="exterior")
    rates.add_argument("--dim", type=int, default=10)
    rates.add_argument("--iters", type=int, default=1000)
    rates.add_argument("--digits", type=int, default=0, help="mpmath digits; 0 runs in float64")
    rates.add_argument("--p", type=float, default=3.0, help="p of the lp ball")
    rates.add_argument("--seed", type=int, default=0)
    rates.add_argument("--out", type=Path, default=Path("runs/fw-rates"))
    rates.set_defaults(run=_rates)

    train = commands.add_parser("train", help="train the small LM with one optimizer setting")
    train.add_argument("--optimizer", default="adamw", help="adamw | adam | sgd")
    train.add_argument("--lr", type=float, default=3e-3)
    train.add_argument("--schedule", default="cosine", help="constant | cosine | wsd")
    train.add_argument("--weight-decay", type=float, default=0.1)
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--warmup", type=int, default=None, help="linear warmup steps")
    train.add_argument(
        "--decay-fraction", type=float, default=None, help="wsd: fraction of steps that decays"
    )
    train.add_argument("--steps", type=int, default=100)
    train.add_argument("--seq-len", type=int, default=64)
    train.add_argument("--size", default="tiny")
    train.add_argument("--arch", default=None, help="llama | gpt2 | opt")
    train.add_argument("--eval-every", type=int, default=25)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    train.add_argument("--out", type=Path, default=Path("runs/lm-train"))
    train.set_defaults(run=_train)

    sweep = commands.add_parser(
        "sweep",
        help="expand a YAML sweep; print, run locally, submit as one job array, run one task, "
        "or collect from the ledger",
    )
    sweep.add_argument("config", type=Path)
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument(
        "--print-argv", action="store_true", help="print one JSON argv per line (default)"
    )
    mode.add_argument(
        "--local", action="store_true", help="run every job here, one after another, then collect"
    )
    mode.add_argument(
        "--submit", action="store_true", help="submit the whole sweep as ONE job array (remote-run)"
    )
    mode.add_argument(
        "--task",
        type=int,
        metavar="I",
        help="run entry I of the sweep into --out or $RUN_DIR (what each array task runs)",
    )
    mode.add_argument(
        "--collect", action="store_true", help="read finished runs from --ledger into table + plot"
    )
    sweep.add_argument(
        "--out",
        type=Path,
        default=None,
        help="root of the run directories (default runs); --task: the run directory (default "
        "$RUN_DIR); --collect: where the table and plot go (default runs/<name>)",
    )
    sweep.add_argument("--socket", help="--submit: broker socket (default $REMOTE_RUN_SOCKET)")
    sweep.add_argument("--client", help="--submit: the remote-run script (default: on the PATH)")
    sweep.add_argument(
        "--python", help="--submit: interpreter the tasks run with (default: this one)"
    )
    sweep.add_argument("--wait", action="store_true", help="--submit: block until every task ends")
    sweep.add_argument("--time", type=int, help="--submit: time limit per task in minutes")
    sweep.add_argument(
        "--tag", action="append", default=[], help="--submit: tag the runs; --collect: filter"
    )
    sweep.add_argument("--ledger", help="--collect: ledger URL (sqlite:///... or postgresql://...)")
    sweep.add_argument("--experiment", help="--collect: ledger experiment (default: sweep name)")
    sweep.add_argument("--group", help="--collect: only this submission (its group id)")
    sweep.add_argument("--threads", type=int, default=1, help="--task: torch CPU threads")
    sweep.set_defaults(run=_sweep)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
