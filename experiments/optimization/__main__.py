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
        args.iters, args.digits, args.shift, args.random_starts, args.seed, args.out
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
    from experiments.optimization.sweep import collect, expand_sweep, markdown_table

    argvs = expand_sweep(args.config, args.out)
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
        help="mpmath digits (default: enough to follow the run forward)",
    )
    lb.add_argument(
        "--shift", type=float, default=1.0, help="start the limit orbit this many steps before t=0"
    )
    lb.add_argument("--random-starts", type=int, default=8)
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

    sweep = commands.add_parser("sweep", help="expand a YAML sweep into train argv's (or run them)")
    sweep.add_argument("config", type=Path)
    mode = sweep.add_mutually_exclusive_group()
    mode.add_argument(
        "--print-argv", action="store_true", help="print one JSON argv per line (default)"
    )
    mode.add_argument(
        "--local", action="store_true", help="run every job here, one after another, then collect"
    )
    sweep.add_argument("--out", type=Path, default=Path("runs"), help="root of the run directories")
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
