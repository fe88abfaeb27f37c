"""Command line: ``cfct list``, ``cfct run <chapter> [-p key=value ...] [--profile P] [--out DIR]`` and
``cfct sweep <chapter> [-p key=value ...] --executor local|slurm ...`` (:mod:`cfct.cluster`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cfct.chapters import CHAPTERS
from cfct.config import PROFILES, Param, Profile
from cfct.errors import CfctError


def _format_default(param: Param, profile: Profile) -> str:
    if param.default is None and param.from_profile is not None:
        return f"{param.from_profile(profile)!r} (from profile)"
    return repr(param.default)


def cmd_list(profile_name: str) -> int:
    from cfct import data, sources, zoo  # torch-heavy: imported only for `cfct list`, so `cfct --help` is fast

    profile = PROFILES[profile_name]
    print(f"Chapters (defaults shown for profile {profile_name!r}):")
    for chapter in CHAPTERS.values():
        state = "" if chapter.notebook.exists() else "  [notebook not in this checkout]"
        print(f"\n  {chapter.number}  {chapter.id}: {chapter.title}{state}")
        for param in chapter.params:
            choices = f" choices: {', '.join(map(str, param.choices))}" if param.choices else ""
            print(f"      {param.name:<18} {param.describe_type():<28} default {_format_default(param, profile)}")
            if param.help or choices:
                print(f"      {'':<18} {param.help}{choices}")
    print("\nTargets (medmnist:<flag> or a plain flag; csv:<folder>):")
    print(data.available_targets().to_string(index=False))
    print("\nSource specs: " + ", ".join(sources.KINDS))
    print("  architectures: " + ", ".join(zoo.architectures()))
    print("\nProfiles: " + ", ".join(PROFILES))
    return 0


def cmd_run(chapter: str, assignments: list[str], profile: str | None, out: str | None) -> int:
    from cfct.runner import parse_assignments, run_chapter

    params = parse_assignments(assignments, chapter)
    result = run_chapter(chapter, params, profile=profile, out_dir=out)
    print(f"executed notebook: {result.notebook}")
    for table in result.tables:
        print(f"table: {table}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfct", description="From Cats to CTs, as an executable book.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_list = sub.add_parser("list", help="chapters and their parameters, targets, source specs")
    p_list.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    p_run = sub.add_parser("run", help="execute one chapter with other parameters (papermill)")
    p_run.add_argument("chapter", help="chapter number or id, e.g. 3 or 03_hidden_representations")
    p_run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                       help="set a chapter parameter (repeatable)")
    p_run.add_argument("--profile", default=None, help="smoke, quick or paper")
    p_run.add_argument("--out", default=None, help="output folder (default runs/<chapter>-<time>)")
    p_sweep = sub.add_parser("sweep", help="compute a chapter's missing runs through submitit (local or Slurm)")
    p_sweep.add_argument("chapter", help="chapter number or id")
    p_sweep.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    p_sweep.add_argument("--profile", default=None, help="smoke, quick or paper")
    p_sweep.add_argument("--executor", default="local", choices=("local", "slurm"))
    p_sweep.add_argument("--slurm-partition", default=None)
    p_sweep.add_argument("--gpus-per-job", type=int, default=0)
    p_sweep.add_argument("--cpus-per-job", type=int, default=1)
    p_sweep.add_argument("--mem-gb", type=float, default=None)
    p_sweep.add_argument("--timeout-min", type=int, default=24 * 60, help="per job; requeued with resume after it")
    p_sweep.add_argument("--array-parallelism", type=int, default=None, help="jobs at once (local: 1, slurm: 256)")
    p_sweep.add_argument("--folder", default=None, help="job files and logs (default $CFCT_DATA/sweeps/...)")
    p_sweep.add_argument("--dry-run", action="store_true", help="list the jobs and which are missing; submit none")
    p_sweep.add_argument("--search", default="grid", choices=("grid", "optuna"),
                         help="grid: every run (the thesis's protocol); optuna: a pruned TPE study (Chapter 6)")
    p_sweep.add_argument("--trials", type=int, default=20, help="optuna: trials per (target, source) study")
    p_sweep.add_argument("--workers", type=int, default=1, help="optuna: worker jobs sharing each study")
    p_sweep.add_argument("--storage", default=None,
                         help="optuna: journal file or SQLAlchemy URL (default $CFCT_DATA/optuna/journal.log)")
    p_sweep.add_argument("--study", default="cfct-6.4.2", help="optuna: study name prefix")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args.profile)
        if args.command == "sweep":
            from cfct.cluster import cmd_sweep

            return cmd_sweep(args)
        return cmd_run(args.chapter, args.param, args.profile, args.out)
    except CfctError as error:
        print(f"cfct: error: {error}", file=sys.stderr)
        from cfct.runner import ChapterFailed

        return 1 if isinstance(error, ChapterFailed) else 2


if __name__ == "__main__":
    raise SystemExit(main())
