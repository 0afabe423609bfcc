"""``python -m engine_mlx download``, ``add-vision`` and ``add-mtp``: text lines, or one JSON event per
line."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine_mlx.errors import EngineError
from engine_mlx.sizes import human_bytes, human_rate


class _Out:
    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.tty = sys.stderr.isatty()
        self._last = 0.0

    def event(self, kind: str, text: str | None = None, **fields) -> None:
        if self.as_json:
            print(json.dumps({"type": kind, **fields}), flush=True)
        elif text is not None:
            print(text, flush=True)

    def progress(self, line: str, force: bool = False, **fields) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.25:
            return
        self._last = now
        if self.as_json:
            print(json.dumps({"type": "progress", **fields}), flush=True)
        elif self.tty:
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)


def download(repo_id: str, revision: str, as_json: bool) -> int:
    from engine_mlx.hub.download import Download, free_space

    out = _Out(as_json)
    job = Download(repo_id, revision)
    plan = job.plan()
    free = free_space(job.cache_dir)
    out.event(
        "plan",
        f"{repo_id}@{plan.repo.commit[:10]}: {human_bytes(plan.remaining_bytes)} to download of {human_bytes(plan.total_bytes)} "
        f"({human_bytes(free)} free in {job.cache_dir})",
        repo=repo_id,
        commit=plan.repo.commit,
        total_bytes=plan.total_bytes,
        have_bytes=plan.have_bytes,
        remaining_bytes=plan.remaining_bytes,
        free_bytes=free,
        cache_dir=str(job.cache_dir),
    )

    def show(p) -> None:
        eta = f", {p.eta_s:.0f} s left" if p.eta_s else ""
        out.progress(
            f"{human_bytes(p.done_bytes)} / {human_bytes(p.total_bytes)} at {human_rate(p.rate_bps)}{eta}  {p.file}",
            force=not p.file,
            **asdict(p),
        )

    path = job.run(plan, on_progress=show)
    if out.tty and not as_json:
        print(file=sys.stderr)
    out.event("done", str(path), path=str(path))
    return 0


def add_vision(
    model: Path,
    repo_id: str | None,
    revision: str,
    mtp: bool,
    output: Path | None,
    as_json: bool,
    in_place: bool = False,
) -> int:
    from engine_mlx.hub.graft import plan_graft, run_graft

    out = _Out(as_json)
    repo_id = _release(model, repo_id, out, "the vision tower")
    plan = plan_graft(model, repo_id, revision=revision, mtp=mtp, output=output, in_place=in_place)
    what = "the vision tower and MTP head" if mtp else "the vision tower"
    where = f"into {plan.model_dir} itself" if in_place else f"new model folder {plan.output_dir}"
    _plan_event(out, plan, f"Adding {what} from {repo_id}", where, in_place=in_place, mtp=mtp)

    _finish(out, run_graft(plan, on_progress=_graft_progress(out)), as_json)
    return 0


def add_mtp(
    model: Path, repo_id: str | None, revision: str, output: Path | None, as_json: bool
) -> int:
    from engine_mlx.hub.add_mtp import plan_add_mtp, run_add_mtp

    out = _Out(as_json)
    repo_id = _release(model, repo_id, out, "the MTP head")
    plan = plan_add_mtp(model, repo_id, revision=revision, output=output)
    _plan_event(out, plan, f"Adding the MTP head from {repo_id}", f"into {plan.output_dir}")
    _finish(out, run_add_mtp(plan, on_progress=_graft_progress(out)), as_json)
    return 0


def _release(model: Path, repo_id: str | None, out: _Out, what: str) -> str:
    """``repo_id``, or the release the model was converted from (said as a proposal)."""
    from engine_mlx.hub.graft import propose_release

    if repo_id:
        return repo_id
    proposed = propose_release(model)
    if not proposed:
        raise EngineError(
            f"{model}: cannot tell which Qwen3.5 release it was converted from; pass --from REPO"
        )
    out.event(
        "proposal", f"Taking {what} from {proposed} (pass --from to choose another)", repo=proposed
    )
    return proposed


def _plan_event(out: _Out, plan: Any, doing: str, where: str, **more: Any) -> None:
    """What a graft will fetch (a GraftPlan or an MtpPlan), before it starts."""
    out.event(
        "plan",
        f"{doing}: downloads {plan.summary()} (the rest is not fetched); {where}",
        repo=plan.repo.repo_id,
        commit=plan.repo.commit,
        fetch_bytes=plan.fetch_bytes,
        repo_bytes=plan.repo_bytes,
        header_bytes=plan.header_bytes,
        tensors=len(plan.tensors),
        summary=plan.summary(),
        output=str(plan.output_dir),
        **more,
    )


def _graft_progress(out: _Out):
    def show(p) -> None:
        out.progress(
            f"{p.stage}: {human_bytes(p.done_bytes)} / {human_bytes(p.total_bytes)}",
            force=p.stage != "fetch",
            **asdict(p),
        )

    return show


def _finish(out: _Out, path: Path, as_json: bool) -> None:
    if out.tty and not as_json:
        print(file=sys.stderr)
    out.event("done", str(path), path=str(path))
