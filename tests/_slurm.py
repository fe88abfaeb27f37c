"""A throw-away single-node Slurm (munged + slurmctld + slurmd) in a temporary folder, for tests and benches.

Debian's ``slurm-wlm`` and ``munge`` (``make slurm-deps``) run the controller and the daemon as root with
``ProctrackType=proctrack/linuxproc`` and ``TaskPlugin=task/none`` (no cgroups needed), the state in the
temporary folder, the node's CPUs and memory read from this machine. There is no accounting daemon, so
``sacct`` is unavailable; :mod:`cfct.cluster` watches ``squeue`` and the result files instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


class SlurmUnavailable(RuntimeError):
    """Slurm cannot start here; the message says why (tests skip with it)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise SlurmUnavailable("cannot read MemTotal from /proc/meminfo")


def slurm_conf(folder: Path, *, munge_socket: Path, node: str, cpus: int, memory_mb: int) -> str:
    """The slurm.conf of a one-node cluster whose state lives in ``folder``."""
    ctld_port, d_port = _free_port(), _free_port()
    return "\n".join([
        "ClusterName=cfcttest",
        f"SlurmctldHost={node}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={d_port}",
        f"StateSaveLocation={folder / 'ctld'}",
        f"SlurmdSpoolDir={folder / 'd'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        "ReturnToService=2",
        "KillWait=2",
        "InactiveLimit=0",
        "MinJobAge=30",
        "MaxArraySize=10000",
        "SlurmdParameters=config_overrides",
        f"NodeName={node} CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
        "",
    ])


def _tail(path: Path, n: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else "(no log)"


@contextlib.contextmanager
def local_slurm(folder: Path, *, timeout_s: float = 40.0) -> Iterator[dict[str, str]]:
    """Start munged, slurmctld and slurmd in ``folder``; yield the environment the Slurm clients need.

    Raises
    ------
    SlurmUnavailable
        Missing binaries (run ``make slurm-deps``), not root, or the daemons did not come up (log tails).
    """
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        raise SlurmUnavailable(f"Slurm binaries missing: {', '.join(missing)} (install with `make slurm-deps`)")
    if os.geteuid() != 0:
        raise SlurmUnavailable("the local Slurm runs its controller and daemon as root; this user is not root")
    folder = Path(folder)
    for sub in ("ctld", "d", "munge"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(folder / "munge", 0o700)
    key = folder / "munge" / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    munge_socket = folder / "munge" / "munge.socket"
    node = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, munge_socket=munge_socket, node=node, cpus=os.cpu_count() or 1,
                               memory_mb=int(_memory_mb() * 0.9)))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    procs: list[subprocess.Popen] = []
    munge_pid = folder / "munge" / "munged.pid"
    try:
        subprocess.run(
            ["munged", "--force", f"--socket={munge_socket}", f"--key-file={key}",
             f"--pid-file={munge_pid}", f"--log-file={folder / 'munge' / 'munged.log'}",
             f"--seed-file={folder / 'munge' / 'munged.seed'}"],
            check=True, capture_output=True, text=True, timeout=20)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
        raise SlurmUnavailable(f"munged did not start: {getattr(error, 'stderr', '')}"
                               f"{_tail(folder / 'munge' / 'munged.log')}") from error
    try:
        for daemon in (["slurmctld", "-D", "-i", "-f", str(conf)], ["slurmd", "-D", "-f", str(conf), "-N", node]):
            log = open(folder / f"{daemon[0]}.out", "w")  # noqa: SIM115 - closed with the process below
            procs.append(subprocess.Popen(daemon, env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        deadline = time.monotonic() + timeout_s
        state = ""
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True)
            state = out.stdout.strip()
            if out.returncode == 0 and state.rstrip("*") in ("idle", "mixed", "allocated"):
                yield {"SLURM_CONF": str(conf)}
                return
            time.sleep(0.5)
        raise SlurmUnavailable(
            f"slurmctld/slurmd did not become ready within {timeout_s:.0f} s (node state {state!r}).\n"
            f"slurmctld: {_tail(folder / 'slurmctld.log')}\n{_tail(folder / 'slurmctld.out')}\n"
            f"slurmd: {_tail(folder / 'slurmd.log')}\n{_tail(folder / 'slurmd.out')}")
    finally:
        if procs and procs[0].poll() is None:  # cancel what is still queued or running on this controller
            subprocess.run(["scancel", "--partition=debug"], env=env, capture_output=True, timeout=20)
            time.sleep(1)
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if munge_pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(munge_pid.read_text().strip()), signal.SIGTERM)
