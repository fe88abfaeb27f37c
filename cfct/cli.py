"""Command line: ``cfct list`` and ``cfct run <chapter> [-p key=value ...] [--profile P] [--out DIR]``."""

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            return cmd_list(args.profile)
        return cmd_run(args.chapter, args.param, args.profile, args.out)
    except CfctError as error:
        print(f"cfct: error: {error}", file=sys.stderr)
        from cfct.runner import ChapterFailed

        return 1 if isinstance(error, ChapterFailed) else 2


if __name__ == "__main__":
    raise SystemExit(main())
