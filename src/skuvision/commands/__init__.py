"""The command line's handlers, one module per area; ``skuvision.cli`` parses, these do the work."""

from __future__ import annotations

import argparse

from skuvision.commands import data, deploy, report

HANDLERS = {
    "synth": data.synth,
    "shards build": data.shards_build,
    "shards merge": data.shards_merge,
    "shards verify": data.shards_verify,
    "summary": report.summary,
    "compare": report.compare_runs,
    "export": deploy.export,
    "predict": deploy.predict,
    "evaluate": deploy.evaluate,
}


def run_command(args: argparse.Namespace) -> int:
    """Run the subcommand the parser chose (``args.command_name``); returns the exit status."""
    return HANDLERS[args.command_name](args)
