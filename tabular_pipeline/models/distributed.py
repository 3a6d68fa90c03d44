"""torchrun / DDP glue for the ``train`` stage.

With ``train.distributed`` at its default (one process, one node) nothing here
does anything: no launcher, no process group. With more processes, the stage
re-launches itself under ``torchrun`` (``python -m torch.distributed.run``);
every worker fits, rank 0 alone writes outputs and logs to MLflow. Collectives
are no-ops when no process group exists, so the estimator's code is the same
either way.

Single node: ``torchrun --standalone`` picks a free port, so parallel queued
experiments do not collide. Several nodes: node 0 is the DVC workspace that
runs ``dvc repro``/``dvc exp run``; the cluster's scheduler starts the same
command (``python -m torch.distributed.run ... -m stages.train``, see
:func:`torchrun_command`) in an identical checkout on every other node, all
meeting at ``rdzv_endpoint``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tabular_pipeline.config import DistributedConfig
from tabular_pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def planned_world_size(cfg: DistributedConfig) -> int:
    return int(cfg.nproc_per_node) * int(cfg.nnodes)


def is_worker() -> bool:
    """True inside a process that torchrun started."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_supported(estimator: Any, name: str) -> None:
    """Only estimators that train under DDP may ask for more than one process."""
    if not getattr(estimator, "supports_ddp", False):
        raise PipelineError(
            f"params.yaml: train.distributed asks for several processes, but {name} does not "
            "train under torch DDP; use nproc_per_node: 1 and nnodes: 1"
        )


def needs_launch(cfg: DistributedConfig) -> bool:
    if cfg.nproc_per_node < 1 or cfg.nnodes < 1:
        raise PipelineError(
            "params.yaml: train.distributed: nproc_per_node and nnodes must be >= 1, got "
            f"{cfg.nproc_per_node} and {cfg.nnodes}"
        )
    if cfg.nnodes > 1 and not cfg.rdzv_endpoint:
        raise PipelineError(
            "params.yaml: train.distributed.rdzv_endpoint (host:port of node 0) is required "
            "when nnodes > 1"
        )
    return planned_world_size(cfg) > 1 and not is_worker()


def torchrun_command(cfg: DistributedConfig, module: str) -> list[str]:
    """The launcher command; the same one runs on every node of a multi-node job."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if cfg.nnodes == 1 and not cfg.rdzv_endpoint:
        cmd += ["--standalone"]
    else:
        cmd += [
            f"--nnodes={cfg.nnodes}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={cfg.rdzv_endpoint}",
            f"--rdzv_id={cfg.rdzv_id}",
        ]
    return [*cmd, f"--nproc_per_node={cfg.nproc_per_node}", "-m", module]


def launch(cfg: DistributedConfig, module: str) -> None:
    """Run ``module`` under torchrun and fail the stage if any worker failed."""
    cmd = torchrun_command(cfg, module)
    log.info("launching %d processes: %s", planned_world_size(cfg), " ".join(cmd[1:]))
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    code = subprocess.run(cmd, env=env, check=False).returncode
    if code != 0:
        raise PipelineError(f"train: torchrun exited with code {code} (see the worker logs above)")


@contextmanager
def process_group(cfg: DistributedConfig) -> Iterator[None]:
    """Join the process group under torchrun (gloo on CPU, NCCL with CUDA); else nothing."""
    if not is_worker():
        yield
        return
    import torch
    import torch.distributed as dist

    world = int(os.environ["WORLD_SIZE"])
    if world != planned_world_size(cfg):
        raise PipelineError(
            f"train: torchrun started {world} processes but params.yaml train.distributed "
            f"plans {planned_world_size(cfg)}; the process count is a parameter"
        )
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _initialised() -> bool:
    # Never imported means never initialised: asking must not cost a sklearn
    # run the ~4 s torch import.
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    return bool(dist.is_available() and dist.is_initialized())


def world_size() -> int:
    if not _initialised():
        return 1
    import torch.distributed as dist

    return int(dist.get_world_size())


def rank() -> int:
    if not _initialised():
        return 0
    import torch.distributed as dist

    return int(dist.get_rank())


def is_rank0() -> bool:
    return rank() == 0


def all_reduce_sum(tensor: Any) -> None:
    if _initialised():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)


def broadcast(tensor: Any, src: int = 0) -> None:
    if _initialised():
        import torch.distributed as dist

        dist.broadcast(tensor, src=src)
