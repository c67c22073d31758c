"""``skuvision summary`` and ``skuvision compare``."""

from __future__ import annotations

import argparse
import json

from skuvision.errors import UserError
from skuvision.report.compare import compare
from skuvision.summary import model_summary, render_summary


def summary(args: argparse.Namespace) -> int:
    table = model_summary(args.overrides)
    if args.json:
        print(json.dumps(table))
    else:
        render_summary(table)
    return 0


def compare_runs(args: argparse.Namespace) -> int:
    if bool(args.wandb) == bool(args.dirs):
        raise UserError("compare: pass run/multirun DIRs, or --wandb ENTITY/PROJECT --group G (not both)")
    if args.wandb and not args.group:
        raise UserError("compare --wandb needs --group G: the sweep's W&B group, logged by train.py as `group=...`")
    compare(args.dirs, out=args.out, wandb_path=args.wandb, group=args.group, plot=not args.no_plot)
    return 0
