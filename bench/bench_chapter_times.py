"""Time every chapter section by section at one profile, from an empty data folder (a student's first run).

Usage: python bench/bench_chapter_times.py --profile smoke [--chapters 3 4] [--data DIR] [--out FILE.json]
       python bench/bench_chapter_times.py --profile quick --data $(mktemp -d)  # the book's cold build, chapter
                                                                                 # by chapter, one shared store
       python bench/bench_chapter_times.py --markdown A.json [B.json ...]  # tables of book/instructor.md

Each chapter is read by jupytext, parameterised by papermill (``profile``) and executed by nbclient with the
kernel ``python3``, as ``cfct run`` does, in its own fresh ``CFCT_DATA`` folder unless ``--data`` is given, so it
pays for decoding data and pre-training its sources. For every cell this records the wall time and the CPU time
of the kernel process and its children; both are summed per ``##`` section (cells before the first section
count as "Setup"). On a shared machine the wall time grows with the load while the CPU time hardly does: on an
idle machine with ``c`` cores a section takes between CPU/c (all cores busy) and CPU (one core) seconds of wall
time. The numbers feed the instructor's page (book/instructor.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import threading
import time
from pathlib import Path

import jupytext
import nbformat
import psutil
from nbclient import NotebookClient
from papermill.iorw import load_notebook_node
from papermill.parameterize import parameterize_notebook

from cfct.chapters import get_chapter

SECTION = re.compile(r"^##\s+(.+)$", re.MULTILINE)
#: What a student laptop (2 cores) should manage per chapter, in minutes (issue 13, part 5).
LAPTOP_TARGET_MIN = {"smoke": 5, "quick": 10}


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, its finished children and its running children."""
    proc = psutil.Process(pid)
    t = proc.cpu_times()
    total = t.user + t.system + t.children_user + t.children_system
    for child in proc.children(recursive=True):
        try:
            c = child.cpu_times()
            total += c.user + c.system
        except psutil.NoSuchProcess:
            pass
    return total


def _rss(pid: int) -> int:
    """Resident bytes of a process and its running children."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


class _PeakRSS(threading.Thread):
    """Samples the kernel's resident memory (with its children) every ``interval`` s; ``peak`` in bytes."""

    def __init__(self, client: NotebookClient, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.client, self.interval, self.peak = client, interval, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.peak = max(self.peak, _rss(self.client.km.provisioner.process.pid))
            except (AttributeError, psutil.Error):  # kernel not started yet, or gone
                pass


def time_chapter(chapter: str, profile: str) -> dict[str, object]:
    """Execute one chapter at ``profile``; wall and CPU seconds per ``##`` section and in total, and the
    kernel's peak resident memory (sampled every 0.5 s)."""
    spec = get_chapter(chapter)
    with tempfile.TemporaryDirectory() as tmp:  # papermill's reader adds the metadata its parameteriser needs
        nbformat.write(jupytext.read(spec.notebook), Path(tmp) / "source.ipynb")
        nb = parameterize_notebook(load_notebook_node(str(Path(tmp) / "source.ipynb")), {"profile": profile},
                                   language="python")
    cells: list[tuple[int, float, float]] = []
    start: dict[str, float] = {}
    client = NotebookClient(nb, kernel_name="python3", timeout=None,
                            resources={"metadata": {"path": str(spec.notebook.parent)}})

    def on_execute(cell, cell_index):  # nbclient hook: just before the execute request goes to the kernel
        start.update(wall=time.perf_counter(), cpu=_cpu_seconds(client.km.provisioner.process.pid))

    def on_executed(cell, cell_index, execute_reply):  # after the kernel's reply (on_cell_complete fires earlier)
        cpu = _cpu_seconds(client.km.provisioner.process.pid) - start["cpu"]
        cells.append((cell_index, time.perf_counter() - start["wall"], cpu))

    client.on_cell_execute = on_execute
    client.on_cell_executed = on_executed
    sampler = _PeakRSS(client)
    sampler.start()
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        sampler.done.set()
    total = time.perf_counter() - t0
    names, current = {}, "Setup"
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown" and SECTION.findall(cell.source):
            current = SECTION.findall(cell.source)[-1].strip()
        names[index] = current
    sections: dict[str, dict[str, float]] = {}
    for index, wall, cpu in cells:
        entry = sections.setdefault(names[index], {"wall_s": 0.0, "cpu_s": 0.0})
        entry["wall_s"] += wall
        entry["cpu_s"] += cpu
    return {"total_wall_s": total, "total_cpu_s": sum(c for _, _, c in cells), "sections": sections,
            "peak_rss_mib": sampler.peak / 2**20}


def _quiet(result: dict, cores: int) -> bool:
    """Whether a chapter ran on an otherwise idle machine (its own work keeps the load at about ``cores``)."""
    return max(result["load_5min"]) <= cores + 0.75


def markdown_tables(report: dict) -> str:
    """The per-section tables the instructor's page includes (``book/timings/<profile>.md``).

    On a quiet machine (5-minute load at most about the core count) the wall time is the measurement and the
    target is checked on it; on a shared one the CPU time bounds what an idle laptop needs (CPU/cores to CPU).
    """
    cores = report["cores"]
    target = LAPTOP_TARGET_MIN.get(report["profile"])
    quiet = all(_quiet(r, cores) for r in report["chapters"].values())
    if quiet:
        lines = [f"Profile `{report['profile']}`, measured on an otherwise idle {cores}-core CPU machine without a GPU "
                 "(the 5-minute load average before and after each chapter is in its line); "
                 + ("the chapters ran one after another in one data folder, as `make book` runs them, starting empty: "
                    "a source several chapters share is pre-trained by the first that needs it. "
                    if any(r.get("shared_data", True) for r in report["chapters"].values()) else
                    "each chapter from an empty data folder, so its time includes decoding the data and pre-training "
                    "its sources. ")
                 + "*Wall* is the time to plan with; *CPU* is the kernel's CPU time (about twice the wall time when "
                 "both cores work).", ""]
    else:
        lines = [f"Profile `{report['profile']}`, measured on a {cores}-core CPU machine shared with other jobs "
                 "(5-minute load average before and after each chapter in its heading). *Wall* is what this run "
                 "took under that load; *CPU* is the kernel's CPU time, much less affected by the load (threads "
                 "that wait for a busy core still spin a little, so it is rather an upper bound); an idle "
                 f"{cores}-core laptop needs between CPU/{cores} and CPU seconds of wall time.", ""]
    for chapter, result in report["chapters"].items():
        before, after = result["load_5min"]
        total_cpu, wall = result["total_cpu_s"], result["total_wall_s"]
        if quiet:
            verdict = "" if target is None else f" (target: under {target} min: " + (
                "met" if wall / 60 < target else "not met") + ")"
            lines += [f"**{chapter}**: wall {wall / 60:.1f} min (load {before:.1f}-{after:.1f}); CPU "
                      f"{total_cpu / 60:.1f} min; peak memory {result.get('peak_rss_mib', float('nan')):.0f} MiB"
                      f"{verdict}", ""]
        else:
            low, high = total_cpu / cores / 60, total_cpu / 60
            verdict = ("" if target is None else
                       f" (target: under {target} min: " + ("met" if high < target else "not met" if low >= target
                                                            else "met only if both cores stay busy") + ")")
            lines += [f"**{chapter}**: wall {wall / 60:.1f} min under load {before:.0f}-{after:.0f}; "
                      f"CPU {total_cpu / 60:.1f} min; idle {cores} cores: {low:.1f}-{high:.1f} min{verdict}", ""]
        if result.get("note"):
            lines += [result["note"], ""]
        if not result["sections"]:
            continue
        if quiet:
            lines += ["| section | wall (s) | CPU (s) |", "| --- | ---: | ---: |"]
            lines += [f"| {name} | {s['wall_s']:.0f} | {s['cpu_s']:.0f} |" for name, s in result["sections"].items()]
        else:
            lines += ["| section | wall under load (s) | CPU (s) | idle laptop (s) |", "| --- | ---: | ---: | ---: |"]
            lines += [f"| {name} | {s['wall_s']:.0f} | {s['cpu_s']:.0f} | {s['cpu_s'] / cores:.0f}-{s['cpu_s']:.0f} |"
                      for name, s in result["sections"].items()]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="smoke", choices=["smoke", "quick", "paper"])
    parser.add_argument("--chapters", nargs="*", default=["3", "4", "5", "6"])
    parser.add_argument("--data", default=None, help="CFCT_DATA shared by all chapters (default: fresh per chapter)")
    parser.add_argument("--out", default=None, help="write the timings as JSON here")
    parser.add_argument("--markdown", nargs="+", default=None,
                        help="only print the Markdown tables of JSON reports (one profile; chapters merged)")
    args = parser.parse_args()
    if args.markdown:
        reports = [json.loads(Path(f).read_text()) for f in args.markdown]
        if len({r["profile"] for r in reports}) != 1:
            raise SystemExit("--markdown: the reports are of different profiles")
        merged = dict(reports[0], chapters={k: v for r in reports for k, v in sorted(r["chapters"].items())})
        print(markdown_tables(merged))
        return
    report = {"profile": args.profile, "cores": os.cpu_count(), "chapters": {}}
    for chapter in args.chapters:
        spec = get_chapter(chapter)
        os.environ["CFCT_DATA"] = args.data or tempfile.mkdtemp(prefix=f"cfct-times-{spec.id}-")
        load_before = os.getloadavg()[1]
        result = time_chapter(spec.id, args.profile)
        result["load_5min"] = (load_before, os.getloadavg()[1])
        result["shared_data"] = bool(args.data)  # one CFCT_DATA for all chapters (as the book) or fresh each
        report["chapters"][spec.id] = result
        print(f"{spec.id} @ {args.profile}: wall {result['total_wall_s']:.0f} s, kernel CPU "
              f"{result['total_cpu_s']:.0f} s, peak RSS {result['peak_rss_mib']:.0f} MiB, "
              f"5-min load {load_before:.1f} -> {os.getloadavg()[1]:.1f}", flush=True)
        for name, t in result["sections"].items():
            print(f"    wall {t['wall_s']:7.1f} s  cpu {t['cpu_s']:7.1f} s  {name}", flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
    if len(report["chapters"]) > 1:
        chapters = report["chapters"].values()
        print(f"all {len(chapters)} chapters @ {args.profile} "
              f"({'one shared CFCT_DATA, as the book' if args.data else 'each from an empty CFCT_DATA'}): "
              f"wall {sum(c['total_wall_s'] for c in chapters) / 60:.1f} min, kernel CPU "
              f"{sum(c['total_cpu_s'] for c in chapters) / 60:.1f} min, peak RSS "
              f"{max(c['peak_rss_mib'] for c in chapters):.0f} MiB", flush=True)


if __name__ == "__main__":
    main()
