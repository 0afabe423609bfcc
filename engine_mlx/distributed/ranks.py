"""Joining the group ``mlx.launch`` started, and what each rank does in ``chat``/``serve --parallel``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine_mlx.errors import EngineError

# A model call rank 0 may wait on the others before its watchdog ends the group.
DEFAULT_RANK_TIMEOUT_S = 120.0
FIRST_RANK = 0  # serves HTTP or prints, decides, and holds a vision checkpoint's tower

if TYPE_CHECKING:
    import mlx.core as mx

    from engine_mlx.distributed.sharded import ClusterLoader, Parallel


@dataclass
class Rank:
    """This process's place in the group, and its part of the work."""

    group: mx.distributed.Group
    parallel: Parallel
    timeout_s: float  # how long rank 0 waits on the others in one model call

    @property
    def index(self) -> int:
        return self.group.rank()

    @property
    def leads(self) -> bool:
        """Rank 0 serves HTTP (or prints the chat); the others follow it."""
        return self.index == 0

    def loader(self) -> ClusterLoader:
        from engine_mlx.distributed.sharded import ClusterLoader

        return ClusterLoader(self.parallel, self.group, rank_hosts(), self.timeout_s)

    def follow(self, model_dir: Path) -> int:
        """A follower's whole run: load this rank's shard, then replay rank 0's calls until it stops."""
        from engine_mlx.checkpoint import inspect_checkpoint
        from engine_mlx.distributed.sharded import follow, load_shard
        from engine_mlx.distributed.vision import MRopeShard

        info = inspect_checkpoint(Path(model_dir))
        model, _ = load_shard(info, self.parallel, self.group)
        try:
            follow(model, self.group, MRopeShard(model) if info.is_vision else None)
        except RuntimeError as exc:  # the ring lost a peer: rank 0 is gone, or another follower
            hosts = rank_hosts()
            raise EngineError(
                f"lost the cluster ({exc}); rank 0 was at {hosts[0] if hosts else 'an unknown host'}: "
                "start the group again"
            ) from None
        return 0


def rank_hosts() -> list[str]:
    """Each rank's address, from the hostfile ``mlx.launch`` gave the ring backend ("rank N" where
    it names none)."""
    import json

    path = os.environ.get("MLX_HOSTFILE", "")
    try:
        ranks = json.loads(Path(path).read_text()) if path else []
        return [str(r[0]).rsplit(":", 1)[0] if isinstance(r, list) and r else "?" for r in ranks]
    except (OSError, ValueError):
        return []


def join(parallel: str, timeout_s: float) -> Rank:
    """The group ``mlx.launch`` (or ``cluster launch``) started this process in; EngineError when it
    was started on its own."""
    import mlx.core as mx

    from engine_mlx.distributed.sharded import Parallel

    if not os.environ.get("MLX_HOSTFILE") and not os.environ.get("MLX_JACCL_COORDINATOR"):
        raise EngineError(
            f"--parallel {parallel} runs one process per rank: start it with "
            "'python -m engine_mlx cluster launch' or mlx.launch"
        )
    try:
        group = mx.distributed.init(strict=True)
    except RuntimeError as exc:
        raise EngineError(
            f"could not join the other ranks ({exc}); check the hostfile and that every "
            "rank was started"
        ) from None
    if group.size() < 2:
        raise EngineError(f"--parallel {parallel} needs at least 2 ranks; the hostfile lists one")
    return Rank(group, Parallel(parallel), timeout_s)
