"""A throw-away single-node SLURM cluster on this machine, for the SLURM integration test.

Uses Debian's ``slurm-wlm`` and ``munge`` (``apt-get install slurm-wlm munge``) and needs
root (``SlurmUser=root``). Every file (munge key and socket, slurm.conf, state, spool,
logs, pid files) lives under one folder, and the ports are free ones picked at start, so
the system's own SLURM/munge configuration is neither read nor touched. Clients (sbatch,
squeue, Snakemake's SLURM executor) find the cluster through ``SLURM_CONF`` in
:attr:`SlurmCluster.env`. There is no accounting database: job states come from
``squeue`` (``MinJobAge=600`` keeps finished jobs listed for 10 minutes). The node may
declare more memory than the machine has (``SlurmdParameters=config_overrides``; nothing
enforces memory without cgroups), so the workflow's attempt-scaled ``mem_mb`` requests fit.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

NODE = "localhost"
PARTITION = "debug"
CLIENTS = ("srun", "sbatch", "squeue", "sinfo", "scontrol", "scancel", "sacct")
REQUIRED = ("munged", "slurmctld", "slurmd", *CLIENTS)

SLURM_CONF = """\
ClusterName=medsegflow
SlurmctldHost={node}
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN
PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP
"""


class SlurmStartError(RuntimeError):
    """The cluster could not be started; the message says which step failed and why."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tail(path: Path, n: int = 15) -> str:
    if not path.is_file():
        return f"({path} not written)"
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-n:])


@dataclass
class SlurmCluster:
    """Daemons of a one-node cluster rooted at ``root``; start with :meth:`start`."""

    root: Path
    cpus: int = 2
    memory_mb: int = 8000
    env: dict[str, str] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def ctld_log(self) -> Path:
        return self.root / "log" / "slurmctld.log"

    def _write_files(self) -> None:
        for sub in ("munge", "state", "spool", "run", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.root / "munge", 0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o600)
        self.conf.write_text(
            SLURM_CONF.format(
                node=NODE,
                partition=PARTITION,
                root=self.root,
                ctld_port=_free_port(),
                slurmd_port=_free_port(),
                cpus=self.cpus,
                memory_mb=self.memory_mb,
            )
        )
        self.env = {
            **os.environ,
            "SLURM_CONF": str(self.conf),
            "PATH": f"{self._write_client_wrappers()}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def _write_client_wrappers(self) -> Path:
        """``bin/`` with srun, sbatch, ... wrappers that point the clients at this cluster.

        Snakemake's SLURM jobstep executor removes every ``SLURM_*`` variable, including
        ``SLURM_CONF``, before it calls ``srun`` inside a job; on a real cluster srun then
        reads ``/etc/slurm/slurm.conf``, which this throw-away cluster leaves alone.
        """
        bin_dir = self.root / "bin"
        bin_dir.mkdir(exist_ok=True)
        for tool in CLIENTS:
            wrapper = bin_dir / tool
            wrapper.write_text(
                f'#!/bin/sh\nSLURM_CONF={self.conf} exec {shutil.which(tool)} "$@"\n'
            )
            wrapper.chmod(0o755)
        return bin_dir

    def _run(self, step: str, cmd: list[str]) -> None:
        result = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, encoding="utf-8", timeout=300
        )
        if result.returncode != 0:
            raise SlurmStartError(
                f"{step} failed ({' '.join(cmd)}): {result.stderr.strip() or result.stdout}"
            )

    def start(self, timeout: float = 600.0) -> SlurmCluster:
        """Start munged, slurmctld and slurmd; return once the node accepts jobs.

        ``timeout`` only guards against a hang: a busy machine registers the node in
        seconds, and a rejected node (drain, invalid) stops the wait at once.
        """
        if os.geteuid() != 0:
            raise SlurmStartError("the test cluster runs its daemons as root; run as root")
        missing = [tool for tool in REQUIRED if shutil.which(tool) is None]
        if missing:
            raise SlurmStartError(
                f"not installed: {', '.join(missing)} (apt-get install -y slurm-wlm munge)"
            )
        self._write_files()
        munge = self.root / "munge"
        self._run(
            "munged",
            [
                "munged",
                "--force",
                f"--socket={munge}/munge.socket",
                f"--key-file={munge}/munge.key",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/munged.seed",
            ],
        )
        self._run("slurmctld", ["slurmctld", "-f", str(self.conf)])
        self._run("slurmd", ["slurmd", "-f", str(self.conf), "-N", NODE])
        self._wait_until_idle(timeout)
        return self

    def _wait_until_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            result = subprocess.run(
                ["sinfo", "--noheader", "--Node", "--format=%T"],
                env=self.env,
                capture_output=True,
                text=True,
                encoding="utf-8",
                timeout=300,
            )
            state = (result.stdout or result.stderr).strip()
            if result.returncode == 0 and state in ("idle", "mixed", "allocated"):
                return
            if result.returncode == 0 and any(bad in state for bad in ("drain", "inval")):
                break  # slurmctld rejected the node: waiting will not help
            time.sleep(0.5)
        raise SlurmStartError(
            f"node {NODE} not idle (last sinfo state: {state!r})\n"
            f"slurmctld log:\n{_tail(self.ctld_log)}\n"
            f"slurmd log:\n{_tail(self.root / 'log' / 'slurmd.log')}"
        )

    def squeue(self) -> list[dict[str, str]]:
        """Every job slurmctld still knows (finished ones for ``MinJobAge``): id, name, state."""
        result = subprocess.run(
            ["squeue", "--states=all", "--noheader", "--format=%i|%j|%T|%k"],
            env=self.env,
            capture_output=True,
            text=True,
            encoding="utf-8",
            timeout=300,
            check=True,
        )
        keys = ("job_id", "name", "state", "comment")
        return [
            dict(zip(keys, line.split("|", 3), strict=True))
            for line in result.stdout.split("\n")
            if line
        ]

    def stop(self) -> None:
        """Cancel leftover jobs, then stop the daemons (by their pid files), newest first."""
        if self.env and (self.root / "run" / "slurmctld.pid").is_file():
            subprocess.run(
                ["scancel", "--user", "root"], env=self.env, capture_output=True, timeout=300
            )
        for pid_file in ("run/slurmd.pid", "run/slurmctld.pid", "munge/munged.pid"):
            path = self.root / pid_file
            try:
                pid = int(path.read_text(encoding="utf-8").strip())
            except (OSError, ValueError):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(50):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
