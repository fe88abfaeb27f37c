"""Time every chapter section by section at one profile, from an empty data folder (a student's first run).

Usage: python bench/bench_chapter_times.py --profile smoke [--chapters 3 4] [--data DIR] [--out FILE.json]

Each chapter runs through ``cfct run`` (papermill), in its own fresh ``CFCT_DATA`` folder unless ``--data`` is
given, so it pays for decoding data and pre-training its sources. papermill records every cell's wall time in
the executed notebook (``metadata.papermill.duration``); cells are summed per ``##`` section (the cells before the
first section count as "Setup"). The numbers feed the instructor's page (book/instructor.md); on a shared machine
they are upper bounds for an idle laptop with the same number of cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path

import nbformat

from cfct.chapters import get_chapter
from cfct.runner import run_chapter

REPO = Path(__file__).resolve().parent.parent
SECTION = re.compile(r"^##\s+(.+)$", re.MULTILINE)


def section_times(notebook: nbformat.NotebookNode) -> dict[str, float]:
    """Wall seconds per ``##`` section of an executed papermill notebook, in page order."""
    times: dict[str, float] = {}
    current = "Setup"
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            headings = SECTION.findall(cell.source)
            if headings:
                current = headings[-1].strip()
            continue
        duration = cell.metadata.get("papermill", {}).get("duration") or 0.0
        times[current] = times.get(current, 0.0) + float(duration)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="smoke", choices=["smoke", "quick", "paper"])
    parser.add_argument("--chapters", nargs="*", default=["3", "4", "5", "6"])
    parser.add_argument("--data", default=None, help="CFCT_DATA shared by all chapters (default: fresh per chapter)")
    parser.add_argument("--out", default=None, help="write the timings as JSON here")
    args = parser.parse_args()
    report = {"profile": args.profile, "cores": os.cpu_count(), "load_before": os.getloadavg(), "chapters": {}}
    for chapter in args.chapters:
        spec = get_chapter(chapter)
        data = args.data or tempfile.mkdtemp(prefix=f"cfct-times-{spec.id}-")
        os.environ["CFCT_DATA"] = str(data)
        out = Path(tempfile.mkdtemp(prefix=f"cfct-times-run-{spec.id}-"))
        start = time.perf_counter()
        run = run_chapter(spec.id, profile=args.profile, out_dir=out, progress=False)
        total = time.perf_counter() - start
        sections = section_times(nbformat.read(run.notebook, as_version=4))
        report["chapters"][spec.id] = {"total_s": total, "sections_s": sections, "load_after": os.getloadavg()}
        print(f"{spec.id} @ {args.profile}: {total:.0f} s (kernel start and papermill included)", flush=True)
        for name, seconds in sections.items():
            print(f"    {seconds:7.1f} s  {name}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
