"""Slurm executor: submission through submitit, state from ``sacct``, nodes from ``scontrol``.

submitit writes the sbatch script (partition, account, QoS, time, nodes, tasks, GPUs) and runs
:func:`framework.dispatch.runner.slurm_entry` in every task, which knows its rank from the
allocation. An array submission becomes one Slurm job array (``map_array``). The broker watches the
run directories for each rank's exit file (fast) and asks ``sacct`` for what the files cannot tell
(cancelled, timed out, node failure).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from framework.config import ClusterSettings
from framework.dispatch.models import NodeInfo, Resources

TERMINAL_SLURM_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
    }
)


SCANCEL_BATCH = 500


class SlurmError(RuntimeError):
    pass


class SlurmBackend:
    def __init__(self, cluster: ClusterSettings, folder: Path) -> None:
        self.cluster = cluster
        self.folder = folder

    def check(self, resources: Resources, tasks: int) -> None:
        if resources.nodes > self.cluster.max_nodes:
            raise ValueError(
                f"asks for {resources.nodes} nodes; cluster.max_nodes is {self.cluster.max_nodes}"
            )
        if self.cluster.gpus_per_node and resources.gpus > self.cluster.gpus_per_node:
            raise ValueError(
                f"asks for {resources.gpus} GPUs per node; cluster.gpus_per_node is {self.cluster.gpus_per_node}"
            )
        if tasks > self.cluster.max_array:
            raise ValueError(
                f"an array of {tasks} tasks; cluster.max_array is {self.cluster.max_array}"
            )

    def submit(
        self, group_id: str, submission: Path, count: int, resources: Resources, name: str
    ) -> list[str]:
        """Submit the ``count`` runs of a submission file (see the broker) as one job or one job
        array; return the Slurm job ids in order. Each task makes its own run dir."""
        import submitit

        from framework.dispatch.runner import slurm_entry

        minutes = resources.time_minutes or self.cluster.time_minutes
        executor = submitit.SlurmExecutor(folder=self.folder / group_id / "%j", max_num_timeout=0)
        params: dict[str, object] = {
            "time": minutes,
            "nodes": resources.nodes,
            "ntasks_per_node": resources.tasks_per_node,
            "cpus_per_task": resources.cpus,
            "job_name": name,
            # submitit signals the job this long before the limit; keep it inside short limits.
            "signal_delay_s": min(90, max(5, minutes * 60 // 6)),
            "array_parallelism": count,
            "additional_parameters": {"no-requeue": True},
        }
        if resources.gpus:
            params["gpus_per_node"] = resources.gpus
        if resources.mem_gb:
            params["mem"] = f"{int(resources.mem_gb * 1024)}M"
        for key in ("partition", "account", "qos"):
            value = getattr(self.cluster, key)
            if value:
                params[key] = value
        executor.update_parameters(**params)
        try:
            if count == 1:
                return [str(executor.submit(slurm_entry, str(submission), 0).job_id)]
            jobs = executor.map_array(slurm_entry, [str(submission)] * count, list(range(count)))
        except subprocess.CalledProcessError as exc:
            raise SlurmError(f"sbatch refused the job: {exc.output!r}") from None
        except FileNotFoundError:
            raise SlurmError("sbatch is not on PATH; is this host a Slurm submit node?") from None
        return [str(job.job_id) for job in jobs]

    def states(self, job_ids: list[str]) -> dict[str, tuple[str, str]]:
        """{job id: (state, node list)} from sacct, for plain and array task ids."""
        if not job_ids:
            return {}
        queried = sorted({j.split("_")[0] for j in job_ids})
        proc = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", "JobID,State,NodeList", "-j", ",".join(queried)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        found: dict[str, tuple[str, str]] = {}
        for line in proc.stdout.splitlines():
            parts = line.split("|")
            if len(parts) == 3:
                state = (parts[1].split()[0] if parts[1] else "", parts[2])
                # Tasks that never started are one line: "123_[16-999%1000]" (cancelled pending).
                for job_id in expand_array_ids(parts[0]):
                    found.setdefault(job_id, state)
        # Once a pending remainder is cancelled, sacct may show it under the bare array id.
        for job_id in job_ids:
            base = job_id.split("_")[0]
            covered = base != job_id and base in found and job_id not in found
            if covered and found[base][0] in TERMINAL_SLURM_STATES:
                found[job_id] = found[base]
        return found

    def in_queue(self, job_ids: list[str]) -> set[str] | None:
        """Those of ``job_ids`` that squeue still lists (pending, running, completing); None when
        squeue cannot say. squeue answers from slurmctld at once, where sacct can lag far behind
        for the pending tasks of a cancelled array."""
        bases = sorted({j.split("_")[0] for j in job_ids})
        proc = subprocess.run(
            ["squeue", "-h", "-r", "-o", "%i", "-j", ",".join(bases)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if proc.returncode != 0:
            return set() if "Invalid job id" in proc.stderr else None
        return set(proc.stdout.split())

    def cancel(self, job_ids: list[str]) -> None:
        for start in range(0, len(job_ids), SCANCEL_BATCH):
            batch = job_ids[start : start + SCANCEL_BATCH]
            subprocess.run(["scancel", *batch], capture_output=True, check=False, timeout=60)

    def nodes(self) -> list[NodeInfo]:
        proc = subprocess.run(
            ["scontrol", "show", "node", "-o"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        if proc.returncode != 0:
            raise SlurmError(f"scontrol show node failed: {proc.stderr.strip()}")
        return [
            parse_scontrol_node(line)
            for line in proc.stdout.splitlines()
            if line.startswith("NodeName=")
        ]


def expand_array_ids(job_id: str) -> list[str]:
    """``123_[1-3,7%10]`` -> 123_1, 123_2, 123_3, 123_7; any other id is returned as it is."""
    match = re.fullmatch(r"(\d+)_\[([0-9,\-]+)(?:%\d+)?\]", job_id)
    if match is None:
        return [job_id]
    base, ranges = match.groups()
    ids = []
    for part in ranges.split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            ids += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return ids


def _tres(text: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(",") if "=" in item)


def parse_scontrol_node(line: str) -> NodeInfo:
    """One line of ``scontrol show node -o`` -> NodeInfo (GPUs from CfgTRES/AllocTRES, else Gres)."""
    fields = dict(token.split("=", 1) for token in line.split() if "=" in token)
    cfg = _tres(fields.get("CfgTRES", ""))
    alloc = _tres(fields.get("AllocTRES", ""))
    gpus_total = int(cfg.get("gres/gpu", 0))
    if not gpus_total:
        for gres in fields.get("Gres", "").split(","):
            if gres.startswith("gpu:"):
                gpus_total += int(gres.rsplit(":", 1)[1].split("(")[0])
    return NodeInfo(
        name=fields.get("NodeName", "?"),
        state=fields.get("State", "UNKNOWN").lower(),
        gpus_total=gpus_total,
        gpus_busy=int(alloc.get("gres/gpu", 0)),
        cpus_total=int(fields.get("CPUTot", 0)),
        cpus_busy=int(fields.get("CPUAlloc", 0)),
    )
