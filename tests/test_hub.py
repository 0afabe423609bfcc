"""Downloads and the vision/MTP graft against a local Hub (tests/hub_server.py), with the real
huggingface_hub, real HTTP, the real converters and the tiny HF-layout release."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from hub_server import HubServer
from media_files import write_image

from engine_mlx.sizes import human_bytes

RELEASE = "Qwen/Qwen3.5-Tiny-A1B"
TEXT_REPO = "mlx-community/Qwen3.5-Tiny-A1B-4bit-text"
GREEDY_TOKENS = 12


@pytest.fixture(scope="session")
def conversions(tiny_release_dir, tmp_path_factory):
    """The release converted as users get it: mlx_lm (text-only, 4-bit) and mlx_vlm (vision, 4-bit, --mtp)."""
    from mlx_lm import convert as lm_convert
    from mlx_vlm.convert import convert as vlm_convert

    root = tmp_path_factory.mktemp("conversions")
    text, vision = root / "text-4bit", root / "vision-4bit"
    with contextlib.redirect_stdout(io.StringIO()):
        lm_convert(
            str(tiny_release_dir), mlx_path=str(text), quantize=True, q_bits=4, q_group_size=64
        )
        vlm_convert(
            str(tiny_release_dir),
            mlx_path=str(vision),
            quantize=True,
            q_bits=4,
            q_group_size=64,
            mtp=True,
        )
    return text, vision, Path(f"{vision}-mtp")


@pytest.fixture(scope="session")
def hub(tiny_release_dir, conversions):
    server = HubServer({RELEASE: tiny_release_dir, TEXT_REPO: conversions[0]})
    yield server
    server.close()


@pytest.fixture
def hub_env(hub, monkeypatch, tmp_path):
    """HF_ENDPOINT at the local Hub, a fresh cache, a clean request log."""
    hub.reset()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return hub


def _tensors(folder: Path) -> dict:
    import mlx.core as mx

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(mx.load(str(f)))
    return out


def _snapshot(folder: Path) -> dict:
    """Every file's name, size, mtime and inode: a folder is unchanged if this is."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_ino)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture(scope="session")
def grafted(hub, conversions, tmp_path_factory, tiny_release_dir):
    """One graft (vision + MTP) onto the text-only conversion, with the bytes the server sent for it."""
    from engine_mlx.hub.graft import plan_graft, run_graft

    text = conversions[0]
    before = _snapshot(text)
    hub.reset()
    out = tmp_path_factory.mktemp("grafted") / "text-4bit-vision"
    env = {"HF_ENDPOINT": hub.url}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        plan = plan_graft(text, RELEASE, mtp=True, output=out)
        stages = []
        path = run_graft(plan, on_progress=stages.append)
    served = list(hub.log)
    assert _snapshot(text) == before, "the user's text-only folder was modified"
    return plan, path, served, stages


def test_graft_equals_mlx_vlm_conversion_tensor_for_tensor(grafted, conversions):
    import mlx.core as mx

    plan, path, _, stages = grafted
    text, vision, vision_mtp = conversions
    ours, theirs = _tensors(path), _tensors(vision)
    assert set(ours) == set(theirs)
    assert sum(k.startswith("vision_tower.") for k in ours) > 0
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype and ours[key].shape == value.shape, key
        assert mx.array_equal(ours[key], value).item(), key
    # the MTP head as mlx-vlm's drafter loads it, equal to mlx_vlm.convert --mtp's
    ours_mtp, theirs_mtp = _tensors(path / "mtp"), _tensors(vision_mtp)
    assert set(ours_mtp) == set(theirs_mtp) and ours_mtp
    assert all(mx.array_equal(ours_mtp[k], v).item() for k, v in theirs_mtp.items())
    assert json.loads((path / "mtp" / "config.json").read_text()) == json.loads(
        (vision_mtp / "config.json").read_text()
    )
    # config: what the vision conversion has that matters for loading
    cfg, ref = (json.loads((d / "config.json").read_text()) for d in (path, vision))
    assert cfg["vision_config"] == ref["vision_config"]
    sampling = {
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "generation_config",
    }  # mlx-vlm's copy of generation_config.json
    assert {k: v for k, v in cfg.items()} == {k: v for k, v in ref.items() if k not in sampling}
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        assert json.loads((path / name).read_text()) == json.loads((vision / name).read_text())
    # the big shard is the user's own file, hard-linked, not a copy
    assert (path / "model.safetensors").stat().st_ino == (text / "model.safetensors").stat().st_ino
    assert stages[-1].stage == "done" and stages[-1].done_bytes == plan.fetch_bytes


def test_graft_fetches_only_the_vision_and_mtp_ranges(grafted, hub, tiny_release_dir):
    plan, _, served, _ = grafted
    from safetensors import safe_open

    wanted = {}  # file -> [(start, end)] of model.visual.* and mtp.* tensors, plus the header
    headers = 0
    for shard in tiny_release_dir.glob("*.safetensors"):
        raw = shard.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        headers += 8 + n
        table = json.loads(raw[8 : 8 + n])
        with safe_open(str(shard), framework="numpy") as f:
            keys = [k for k in f.keys() if k.startswith(("model.visual.", "mtp."))]  # noqa: SIM118
        spans = [(0, 8 + n)] + [
            (8 + n + table[k]["data_offsets"][0], 8 + n + table[k]["data_offsets"][1]) for k in keys
        ]
        wanted[f"{RELEASE}/{shard.name}"] = spans
    weights = [s for s in served if s.path.endswith(".safetensors")]
    for s in (
        weights
    ):  # every byte served lies in a header or a vision/MTP tensor (adjacent ones in one request)
        covered = s.start
        for lo, hi in sorted(wanted[s.path]):
            if lo <= covered < hi:
                covered = hi
        assert covered >= s.end, (
            f"{s.path} {s.start}-{s.end} holds bytes that are neither header nor vision/MTP"
        )
    tensor_bytes = sum(hi - lo for spans in wanted.values() for lo, hi in spans[1:])
    fetched = sum(s.end - s.start for s in weights)
    assert plan.fetch_bytes == tensor_bytes
    assert tensor_bytes < fetched <= tensor_bytes + headers
    total = hub.bytes_served()
    repo_total = hub.repo_bytes(RELEASE)
    small = total - fetched  # config, index, preprocessor configs
    assert small < 64_000
    print(
        f"\ngraft fetched {total:,} bytes ({fetched:,} of safetensors: {tensor_bytes:,} tensor data) "
        f"of the release's {repo_total:,} bytes ({100 * total / repo_total:.2f}%)"
    )


def test_grafted_model_gives_the_vision_conversions_greedy_tokens(grafted, conversions, tmp_path):
    """Token for token, through mlx-vlm directly and through the engine, with an image in the prompt."""
    from mlx_vlm import load, stream_generate

    from engine_mlx.conversation import Conversation, ImageAttachment, Message, Role
    from engine_mlx.engine import Engine
    from engine_mlx.events import AnswerDelta, Stats, ThinkingDelta
    from engine_mlx.settings import GenerationSettings

    _, path, _, _ = grafted
    image = write_image(tmp_path / "x.png", size=(128, 96))
    prompt = "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is this?<|im_end|>\n<|im_start|>assistant\n"
    convo = Conversation((Message(Role.USER, "What is this?", (ImageAttachment(image),)),))
    settings = GenerationSettings(temperature=0.0, presence_penalty=0.0, max_tokens=GREEDY_TOKENS)
    runs, engine_runs = [], []
    for folder in (path, conversions[1]):
        model, processor = load(str(folder))
        runs.append(
            [
                r.token
                for r in stream_generate(
                    model,
                    processor,
                    prompt,
                    image=[str(image)],
                    max_tokens=GREEDY_TOKENS,
                    temperature=0.0,
                )
            ]
        )
        del model
        engine = Engine(state_dir=tmp_path / folder.name)
        engine.load(folder)
        events = list(engine.generate(convo, settings))
        text = "".join(e.text for e in events if isinstance(e, (ThinkingDelta, AnswerDelta)))
        engine_runs.append((text, next(e for e in events if isinstance(e, Stats)).generated_tokens))
        engine.unload()
    assert len(runs[0]) >= GREEDY_TOKENS
    assert runs[0] == runs[1]
    assert engine_runs[0][1] == GREEDY_TOKENS and engine_runs[0] == engine_runs[1]


def test_engine_sees_the_grafted_model_as_vision(grafted):
    from engine_mlx.checkpoint import inspect_checkpoint

    assert inspect_checkpoint(grafted[1]).is_vision


def test_cli_add_vision_reports_size_then_progress(hub_env, conversions, tmp_path, capsys):
    from engine_mlx.cli import main

    out = tmp_path / "cli-vision"
    assert (
        main(
            [
                "add-vision",
                "--model",
                str(conversions[0]),
                "--from",
                RELEASE,
                "--output",
                str(out),
                "--json",
            ]
        )
        == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    plan = events[0]
    assert plan["type"] == "plan" and plan["fetch_bytes"] < plan["repo_bytes"]
    assert (
        plan["summary"]
        == f"{human_bytes(plan['fetch_bytes'])} of {human_bytes(plan['repo_bytes'])}"
    )
    assert not plan["mtp"]
    assert any(e["type"] == "progress" for e in events)
    assert events[-1] == {"type": "done", "path": str(out)}
    assert (out / "model-vision.safetensors").is_file() and not (out / "mtp").exists()


@pytest.mark.parametrize(
    "fault, when, message",
    [
        (("404",), "plan", r"not in the repository \(404\)"),
        (("500",), "run", "HTTP 500"),
        (("truncate", 1000), "run", "broke off"),
        (("wrong_size", 7), "run", "received"),
    ],
)
def test_graft_faults_leave_everything_as_it_was(
    hub_env, conversions, tmp_path, fault, when, message
):
    from engine_mlx.hub.graft import plan_graft, run_graft
    from engine_mlx.hub.network import HubError

    text = conversions[0]
    before = _snapshot(text)
    out = tmp_path / "out"
    shard = f"{RELEASE}/model-00003-of-00003.safetensors"
    if when == "plan":
        hub_env.faults[shard] = fault
    with pytest.raises(HubError, match=message) as exc:
        plan = plan_graft(text, RELEASE, output=out)
        hub_env.faults.update({f"{RELEASE}/{t.file}": fault for t in plan.tensors})
        run_graft(plan)
    assert RELEASE in str(exc.value)
    assert _snapshot(text) == before
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no partial folder either


def test_graft_cancelled_or_short_of_disk_leaves_nothing(
    hub_env, conversions, tmp_path, monkeypatch
):
    from engine_mlx.hub import graft
    from engine_mlx.hub.network import Cancelled, HubError

    text = conversions[0]
    before = _snapshot(text)
    out = tmp_path / "out"
    plan = graft.plan_graft(text, RELEASE, output=out)
    seen = []
    with pytest.raises(Cancelled):
        graft.run_graft(plan, on_progress=seen.append, cancelled=lambda: len(seen) > 1)
    assert list(tmp_path.iterdir()) == [] and _snapshot(text) == before
    hub_env.log.clear()
    monkeypatch.setattr(graft, "free_space", lambda _path: plan.fetch_bytes)
    with pytest.raises(
        HubError, match="needs .* plus 256 MiB kept free for the system, but there is"
    ):
        graft.run_graft(plan)
    assert hub_env.log == [] and list(tmp_path.iterdir()) == []


def test_graft_never_writes_the_original_that_has_every_name_the_graft_writes(
    hub_env, conversions, tmp_path
):
    """The staging folder holds hard links to the user's files: a new file written at one of their
    names would overwrite the user's bytes. The new shard takes a free name, every other name the graft
    writes replaces the link (a new inode), and an existing ``mtp/`` refuses an MTP graft."""
    import mlx.core as mx
    import numpy as np
    from safetensors.numpy import save_file

    from engine_mlx.hub.graft import plan_graft, run_graft
    from engine_mlx.hub.network import HubError

    text = tmp_path / "text"
    shutil.copytree(conversions[0], text)  # copies: the session's conversion is never at risk
    for name in ("model-vision.safetensors", "model-vision-2.safetensors"):
        save_file({"user.kept": np.arange(8, dtype=np.float32)}, str(text / name))
    (text / "mtp").mkdir()
    (text / "mtp" / "config.json").write_text('{"mine": true}')
    (text / "mtp" / "model.safetensors").write_bytes(os.urandom(4096))
    for name in ("preprocessor_config.json", "video_preprocessor_config.json"):
        (text / name).write_text('{"mine": true}')
    assert {"config.json", "model.safetensors.index.json"} <= {p.name for p in text.iterdir()}
    before, inodes = _fingerprint(text), _snapshot(text)
    out = tmp_path / "out"

    plan = plan_graft(text, RELEASE, output=out)
    assert plan.vision_shard == "model-vision-3.safetensors"
    run_graft(plan)
    assert _fingerprint(text) == before and _snapshot(text) == inodes
    # the user's files are carried over as they are; the graft's own files sit beside them
    for name in ("model-vision.safetensors", "model-vision-2.safetensors", "mtp/model.safetensors"):
        assert (out / name).stat().st_ino == (text / name).stat().st_ino
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    tower = {k for k, v in index.items() if v == plan.vision_shard}
    assert tower == {k for k in _tensors(conversions[1]) if k.startswith("vision_tower.")}
    assert set(mx.load(str(out / plan.vision_shard))) == tower
    assert json.loads((out / "config.json").read_text())["vision_config"]
    assert json.loads((out / "preprocessor_config.json").read_text()) != {"mine": True}

    served = len(hub_env.log)
    with pytest.raises(HubError, match="mtp: already exists, and the MTP head would go there"):
        plan_graft(text, RELEASE, mtp=True, output=tmp_path / "out-mtp")
    assert len(hub_env.log) == served and not (tmp_path / "out-mtp").exists()
    assert _fingerprint(text) == before


def test_graft_removes_what_a_killed_graft_left_but_not_a_running_ones(
    hub_env, conversions, tmp_path
):
    import fcntl
    import time

    from engine_mlx.hub.graft import plan_graft, run_graft

    text = tmp_path / "m"
    shutil.copytree(conversions[0], text, copy_function=os.link)
    killed = tmp_path / ".m-vision.partial-killed"  # its lock file is there, nobody holds it
    (killed / "model").mkdir(parents=True)
    (killed / ".lock").touch()
    (killed / "model" / "model-vision.safetensors").write_bytes(os.urandom(10_000))
    running = tmp_path / ".m-vision.partial-running"
    running.mkdir()
    held = os.open(running / ".lock", os.O_WRONLY | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # as the graft that made it holds it
    starting = tmp_path / ".m-vision.partial-starting"  # made a moment ago, not locked yet
    starting.mkdir()
    stale = tmp_path / ".m-vision.partial-stale"  # killed before it took its lock
    stale.mkdir()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    other = tmp_path / ".other.partial-x"  # another output's
    other.mkdir()
    try:
        run_graft(plan_graft(text, RELEASE, output=tmp_path / "m-vision"))
    finally:
        os.close(held)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["m", "m-vision", running.name, starting.name, other.name])


def test_in_place_graft_killed_between_its_renames_gets_the_folder_back(
    hub_env, conversions, tmp_path
):
    from engine_mlx.hub.graft import plan_graft

    model = tmp_path / "models" / "tiny"
    shutil.copytree(conversions[0], model, copy_function=os.link)
    before = _fingerprint(model)
    stage = model.parent / ".tiny.partial-killed"
    stage.mkdir()
    (stage / ".lock").touch()
    os.rename(model, stage / "previous")  # the first rename done, then the process died
    plan = plan_graft(model, RELEASE, in_place=True)
    assert plan.model_dir == model and _fingerprint(model) == before
    assert [p.name for p in model.parent.iterdir()] == ["tiny"]


@pytest.mark.parametrize(
    "config, index, message",
    [
        ("[1, 2]", None, "config.json: not a JSON object"),
        (None, '{"weight_map": {"model.visual.x": ["a"]}}', "no weight_map of tensor names"),
        (None, '{"weight_map": [1]}', "no weight_map of tensor names"),
    ],
)
def test_graft_refuses_a_hostile_release_before_writing(
    hub_env, conversions, tiny_release_dir, tmp_path, config, index, message
):
    from engine_mlx.hub.graft import plan_graft
    from engine_mlx.hub.network import HubError

    served = tmp_path / "served"
    served.mkdir()
    (served / "config.json").write_text(config or (tiny_release_dir / "config.json").read_text())
    if index:
        (served / "model.safetensors.index.json").write_text(index)
    hub_env.add_repo("evil/release", served)
    text, before = conversions[0], _fingerprint(conversions[0])
    with pytest.raises(HubError, match=message):
        plan_graft(text, "evil/release", output=tmp_path / "out")
    assert _fingerprint(text) == before and not (tmp_path / "out").exists()


def test_graft_refuses_mismatched_dimensions_before_fetching(hub_env, conversions, tmp_path):
    from engine_mlx.hub.graft import plan_graft
    from engine_mlx.hub.network import HubError

    other = tmp_path / "other"
    shutil.copytree(conversions[0], other, copy_function=os.link)
    config = json.loads((other / "config.json").read_text())
    config["text_config"]["hidden_size"] *= 2
    (other / "config.json").unlink()
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(HubError, match="hidden_size"):
        plan_graft(other, RELEASE)
    assert not any(s.path.endswith(".safetensors") for s in hub_env.log)
    assert not (tmp_path / "other-vision").exists()


def test_graft_refuses_a_model_that_has_vision(hub_env, conversions):
    from engine_mlx.hub.graft import plan_graft
    from engine_mlx.hub.network import HubError

    with pytest.raises(HubError, match="already has a vision tower"):
        plan_graft(conversions[1], RELEASE)


# ------------------------------------------------------------------------------------ downloads


def test_download_into_the_hf_cache_layout(hub_env, conversions):
    from huggingface_hub import scan_cache_dir

    from engine_mlx.hub.download import Download

    seen = []
    job = Download(TEXT_REPO)
    plan = job.plan()
    assert plan.remaining_bytes == plan.total_bytes == hub_env.repo_bytes(TEXT_REPO)
    snapshot = job.run(plan, on_progress=seen.append)
    for f in conversions[0].iterdir():
        assert (snapshot / f.name).read_bytes() == f.read_bytes()
        assert (snapshot / f.name).is_symlink()  # into blobs/, as huggingface_hub writes it
    info = scan_cache_dir(os.environ["HF_HUB_CACHE"])
    (repo,) = info.repos
    assert repo.repo_id == TEXT_REPO and repo.size_on_disk == plan.total_bytes
    assert (Path(repo.repo_path) / "refs" / "main").read_text() == plan.repo.commit
    assert seen[-1].done_bytes == plan.total_bytes and all(p.rate_bps >= 0 for p in seen)
    # a second run finds everything and downloads nothing
    hub_env.log.clear()
    assert Download(TEXT_REPO).plan().remaining_bytes == 0
    Download(TEXT_REPO).run()
    assert hub_env.bytes_served(".safetensors") == 0


def test_download_interrupted_mid_file_resumes(hub_env, conversions):
    from engine_mlx.hub.download import Download
    from engine_mlx.hub.network import HubError

    name = "model.safetensors"
    size = (conversions[0] / name).stat().st_size
    hub_env.faults[f"{TEXT_REPO}/{name}"] = ("cut", 3_000_000)
    with pytest.raises(HubError, match="broke off"):
        Download(TEXT_REPO).run()
    plan = Download(TEXT_REPO).plan()  # as after a restart
    partial = next(f for f in plan.files if f.file.name == name)
    assert partial.have_bytes > 0 and not partial.complete
    hub_env.log.clear()
    snapshot = Download(TEXT_REPO).run(plan)
    resumed = [s for s in hub_env.log if s.path.endswith(name)]
    assert resumed[0].start == partial.have_bytes  # a Range request from where it stopped
    assert sum(s.end - s.start for s in resumed) == size - partial.have_bytes
    assert (snapshot / name).read_bytes() == (conversions[0] / name).read_bytes()


def test_download_pause_keeps_and_cancel_deletes_the_partial_file(hub_env):
    from engine_mlx.hub.download import Download
    from engine_mlx.hub.network import Cancelled, Paused

    job = Download(TEXT_REPO)
    with pytest.raises(Paused, match="paused"):
        job.run(on_progress=lambda p: p.done_bytes > 2_000_000 and job.pause())
    plan = Download(TEXT_REPO).plan()
    assert 0 < plan.have_bytes < plan.total_bytes
    partial = next(plan.storage.glob("blobs/*.incomplete"))
    job = Download(TEXT_REPO)
    with pytest.raises(Cancelled, match="cancelled") as cancelled:
        job.run(plan, on_progress=lambda p: job.cancel())
    assert not isinstance(cancelled.value, Paused)  # the app tells the two apart by type
    assert not partial.exists() and not list(plan.storage.glob("blobs/*.incomplete"))


def test_download_refuses_when_the_disk_is_too_small(hub_env, monkeypatch):
    from engine_mlx.hub import download
    from engine_mlx.hub.network import HubError
    from engine_mlx.sizes import human_bytes

    monkeypatch.setattr(download, "free_space", lambda path: 10_000_000)
    with pytest.raises(HubError) as exc:
        download.Download(TEXT_REPO).run()
    need = hub_env.repo_bytes(TEXT_REPO)
    assert (  # the margin is named, so "needs 49 MiB, has 9.5 MiB" cannot read as a contradiction
        f"needs {human_bytes(need)} more plus 256 MiB kept free for the system, "
        f"but {os.environ['HF_HUB_CACHE']} has 9.5 MiB free; "
        f"free {human_bytes(need + 256 * 2**20 - 10_000_000)} and try again"
    ) in str(exc.value)
    # not a byte of any file
    assert not any(s.path.startswith(TEXT_REPO + "/") for s in hub_env.log)


@pytest.mark.parametrize(
    "fault, message",
    [
        (("404",), "404"),
        (("500",), "HTTP 500"),
        (("truncate", 5000), "broke off"),
        (("wrong_size", 3), "different size"),
        (("corrupt",), "sha256 does not match"),
    ],
)
def test_download_faults_say_what_failed(hub_env, fault, message):
    from engine_mlx.hub.download import Download
    from engine_mlx.hub.network import HubError

    hub_env.faults[f"{TEXT_REPO}/model.safetensors"] = fault
    job = Download(TEXT_REPO)
    with pytest.raises(HubError, match=message) as exc:
        job.run()
    assert "model.safetensors" in str(exc.value)
    snapshots = job.plan().snapshot if fault != ("404",) else None
    assert snapshots is None or not (snapshots / "model.safetensors").exists()


# ------------------------------------------------------------------------------------ hostile Hub

HOSTILE = "evil/tiny"


def _fingerprint(root: Path, skip: Path | None = None) -> dict[str, tuple]:
    """Every file's bytes (hashed), every link's target and every folder under ``root``, not following
    links, except what lies in ``skip`` (the repo's own cache folder, where a download may write)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        dirs[:] = [d for d in dirs if here / d != skip]
        for name in dirs + files:
            path = here / name
            if path == skip:
                continue
            key = str(path.relative_to(root))
            if path.is_symlink():
                out[key] = ("link", os.readlink(path))
            elif path.is_dir():
                out[key] = ("folder",)
            else:
                out[key] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return out


@pytest.fixture
def hostile(hub, monkeypatch, tmp_path):
    """A user's home holding the Hugging Face cache and some files of theirs, a repo on the local Hub
    (a config, a nested file, 2 MiB of weights) and the fingerprint of everything outside its cache
    folder, taken before the test acts."""
    hub.reset()
    home = tmp_path / "home"
    (home / "docs").mkdir(parents=True)
    (home / "elsewhere").mkdir()
    (home / "cache").mkdir()  # the Hugging Face cache, as after any earlier download
    (home / "notes.txt").write_bytes(b"my notes\n" * 100)
    (home / "notes.txt.incomplete").write_bytes(b"a draft\n" * 500)
    (home / "docs" / "thesis.txt").write_bytes(os.urandom(5000))
    served = tmp_path / "served"
    (served / "sub").mkdir(parents=True)
    (served / "config.json").write_text('{"model_type": "qwen3_5"}')
    (served / "sub" / "extra.json").write_text("{}")
    (served / "weights.safetensors").write_bytes(os.urandom(2 * 2**20))
    hub.add_repo(HOSTILE, served)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "cache"))
    storage = home / "cache" / "models--evil--tiny"
    env = SimpleNamespace(hub=hub, home=home, served=served, storage=storage, root=tmp_path)
    env.untouched = lambda: _fingerprint(tmp_path, storage)
    return env


def test_download_of_nested_files_links_inside_the_repo_folder(hostile):
    from engine_mlx.hub.download import Download

    before = hostile.untouched()
    snapshot = Download(HOSTILE).run()
    for name in ("config.json", "sub/extra.json", "weights.safetensors"):
        link = snapshot / name
        assert link.is_symlink() and link.read_bytes() == (hostile.served / name).read_bytes()
        assert link.resolve().parent == (hostile.storage / "blobs").resolve()
    assert hostile.untouched() == before


@pytest.mark.parametrize(
    "file, lie, named",
    [  # the three: a relative escape with a cut, an absolute path, a user file deleted
        ("weights.safetensors", {"sha256": "../../../escape-sha"}, "sha256"),
        ("weights.safetensors", {"sha256": "{home}/abs-target"}, "sha256"),
        ("weights.safetensors", {"sha256": "../../../notes.txt", "size": 10}, "sha256"),
        ("weights.safetensors", {"sha256": "AB" * 32}, "sha256"),  # uppercase: not the blob name
        ("weights.safetensors", {"sha256": "ab" * 31}, "sha256"),
        ("config.json", {"blobId": "../../../escape-blob"}, "blob id"),
        ("config.json", {"rfilename": "{home}/abs.json"}, "file name"),
        ("config.json", {"rfilename": "../../../../escape.json"}, "file name"),
        ("config.json", {"rfilename": "sub//x.json"}, "file name"),
        ("config.json", {"rfilename": "sub\\..\\..\\x.json"}, "file name"),
        ("config.json", {"rfilename": "x\u0000.json"}, "file name"),
        ("config.json", {"size": -1}, "size"),
        ("", {"sha": "../../../escape"}, "commit"),
    ],
)
def test_download_refuses_unsafe_names_in_the_listing(hostile, file, lie, named):
    """Every name the server lists is checked before anything is written or deleted: not a byte
    outside the repo's cache folder changes, and no file is fetched."""
    from engine_mlx.hub.download import Download
    from engine_mlx.hub.network import HubError

    lie = {k: v.format(home=hostile.home) if isinstance(v, str) else v for k, v in lie.items()}
    hostile.hub.overrides[f"{HOSTILE}/{file}" if file else HOSTILE] = lie
    hostile.hub.faults[f"{HOSTILE}/weights.safetensors"] = ("cut", 2**20)
    before = hostile.untouched()
    with pytest.raises(HubError, match=f"lists an invalid {named}") as exc:
        Download(HOSTILE).run()
    assert HOSTILE in str(exc.value) and "nothing was written" in str(exc.value)
    assert hostile.untouched() == before
    assert hostile.hub.bytes_served() == 0 and not hostile.storage.exists()


@pytest.mark.parametrize(
    "planted",
    [
        "blobs/{sha}.incomplete",  # a link named as the partial file, to the user's notes
        "hardlink blobs/{sha}.incomplete",  # the same as a hard link: the notes' own inode
        "",  # the repo folder itself
        "blobs",
        "snapshots",
        "refs",
        "snapshots/{commit}",
        "snapshots/{commit}/sub",  # a folder on the way to a nested file
    ],
)
def test_download_never_writes_through_a_planted_link(hostile, planted):
    from hub_server import COMMIT

    from engine_mlx.hub.download import Download
    from engine_mlx.hub.network import HubError

    sha = hostile.hub.sha256(HOSTILE, "weights.safetensors")
    hard = planted.startswith("hardlink ")
    rel = planted.removeprefix("hardlink ").format(sha=sha, commit=COMMIT)
    path = hostile.storage / rel if rel else hostile.storage
    path.parent.mkdir(parents=True, exist_ok=True)
    target = hostile.home / ("notes.txt" if rel.endswith(".incomplete") else "elsewhere")
    if hard:
        os.link(target, path)
    else:
        path.symlink_to(target)
    before = hostile.untouched()
    notes = (hostile.home / "notes.txt").read_bytes()
    with pytest.raises(HubError, match=r"is a link|of its own") as exc:
        Download(HOSTILE).run()
    assert str(path) in str(exc.value) and "remove it" in str(exc.value)
    assert hostile.untouched() == before and (hostile.home / "notes.txt").read_bytes() == notes
    assert os.listdir(hostile.home / "elsewhere") == []


def test_app_cancel_deletes_partials_only_inside_the_repo_folder(qapp, hostile):
    """A linked ``blobs/`` holding ``*.incomplete`` files is no paused download, and Cancel leaves
    what it points at alone."""
    from app.controllers.downloads import DownloadsController
    from engine_mlx.hub.catalog import CatalogEntry

    hostile.storage.mkdir(parents=True)
    (hostile.storage / "blobs").symlink_to(hostile.home)  # holds notes.txt.incomplete
    before = hostile.untouched()
    controller = DownloadsController(catalog=[CatalogEntry(HOSTILE, "tiny", False, None)])
    assert HOSTILE not in controller.transfers
    controller.cancel(HOSTILE)
    assert hostile.untouched() == before


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from engine_mlx.cli import main
sys.exit(main(["download", sys.argv[2]]))
"""


def test_download_that_runs_out_of_room_names_the_file_and_keeps_it(hostile):
    """A write that fails for room (here a file size limit, as a FAT32 disk has) says which file,
    the free space and the margin, and keeps what arrived so the download resumes."""
    from engine_mlx.hub.download import Download

    limit = 2**20 + 12345
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    run = subprocess.run(
        [sys.executable, "-c", _FULL_DISK, str(limit), HOSTILE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    sha = hostile.hub.sha256(HOSTILE, "weights.safetensors")
    part = hostile.storage / "blobs" / f"{sha}.incomplete"
    assert run.returncode != 0
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(
        f"error: {HOSTILE}/weights.safetensors: cannot write {part} (File too large);"
    )
    assert "downloads keep 256 MiB free" in line and "received so far are kept" in line
    assert part.stat().st_size == limit
    snapshot = Download(HOSTILE).run()  # resumes from the kept bytes
    assert (snapshot / "weights.safetensors").read_bytes() == (
        hostile.served / "weights.safetensors"
    ).read_bytes()


def test_a_complete_download_needs_no_free_space(hostile, monkeypatch):
    from engine_mlx.hub import download

    snapshot = download.Download(HOSTILE).run()
    monkeypatch.setattr(download, "free_space", lambda path: 0)
    assert download.Download(HOSTILE).run() == snapshot  # linked again, nothing to fetch


def test_cli_download_json(hub_env, capsys):
    from engine_mlx.cli import main

    assert main(["download", TEXT_REPO, "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["type"] == "plan" and events[0]["remaining_bytes"] == hub_env.repo_bytes(
        TEXT_REPO
    )
    assert events[-1]["type"] == "done" and Path(events[-1]["path"], "config.json").is_file()


def test_catalog_sizes_from_the_hub_and_the_release_proposal(hub_env, monkeypatch, conversions):
    from engine_mlx.hub import catalog
    from engine_mlx.hub.graft import propose_release

    entries = catalog.load_catalog()
    assert entries and all(e.repo.startswith("mlx-community/Qwen3.5") for e in entries)
    refreshed = catalog.refresh([catalog.CatalogEntry(TEXT_REPO, "tiny", False, None), entries[0]])
    assert refreshed[0].size_bytes == hub_env.repo_bytes(TEXT_REPO) and refreshed[0].exact
    assert refreshed[1].error and "no such repository" in refreshed[1].error
    real = {
        "model_type": "qwen3_5_moe",
        "text_config": {"hidden_size": 4096, "num_hidden_layers": 60, "num_experts": 397},
    }
    # an expert-pruned build too
    assert catalog.release_for_config(real) == "Qwen/Qwen3.5-397B-A17B"
    assert propose_release(conversions[0]) is None  # the tiny model is no published release


# ------------------------------------------------------------------------------------ offline

_GUARD = r"""
import json, socket, sys
attempts = []
real_connect = socket.socket.connect
def connect(self, address):
    attempts.append(str(address))
    raise OSError("network blocked by the test")
socket.socket.connect = connect
socket.create_connection = lambda address, *a, **k: connect(None, address)
from engine_mlx.checkpoint import discover_models
from engine_mlx.engine import Engine
from engine_mlx.conversation import Conversation, Message, Role
from engine_mlx.settings import GenerationSettings
discover_models(extra_dirs=[sys.argv[1]])
engine = Engine(state_dir=sys.argv[2])
engine.load(sys.argv[1])
list(engine.generate(Conversation((Message(Role.USER, "Hi"),), id="c1"), GenerationSettings(max_tokens=3)))
quiet = list(attempts)
from huggingface_hub import constants
from engine_mlx.hub.graft import plan_graft
from engine_mlx.hub.network import HubError
try:
    plan_graft(sys.argv[1], "Qwen/Qwen3.5-Tiny-A1B", output=sys.argv[2] + "/out")
    error = None
except HubError as exc:
    error = str(exc)
print(json.dumps({"quiet": quiet, "action": attempts[len(quiet):], "error": error, "offline_after": constants.HF_HUB_OFFLINE}))
"""


def test_offline_nothing_but_a_user_action_reaches_for_the_network(conversions, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE"))}
    env.update(
        PYTHONPATH=str(Path(__file__).parents[1]),
        HF_HOME=str(tmp_path / "hf"),
        HF_ENDPOINT="http://127.0.0.1:9",
    )
    run = subprocess.run(
        [sys.executable, "-c", _GUARD, str(conversions[0]), str(tmp_path)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["quiet"] == []  # discovery, loading and a chat turn: not one connection
    assert report["action"] and all("127.0.0.1" in a and "9" in a for a in report["action"])
    assert "cannot reach" in report["error"]
    assert report["offline_after"] is True


# ------------------------------------------------------------------------------------ app


def test_get_models_dialog_downloads_with_progress_pause_and_resume(
    qapp, qtbot, qt_wait, hub_env, conversions
):
    from PySide6.QtCore import Qt

    from app.controllers.downloads import DownloadsController, TransferState
    from app.views.downloads import DownloadsDialog
    from engine_mlx.hub.catalog import CatalogEntry

    catalog = [CatalogEntry(TEXT_REPO, "Qwen3.5 Tiny, text-only 4-bit", False, None)]
    controller = DownloadsController(catalog=catalog)
    dialog = DownloadsDialog(controller)
    qtbot.addWidget(dialog)
    dialog.show()
    assert "Free disk space" in dialog.free.text()
    qtbot.mouseClick(dialog.refresh_button, Qt.MouseButton.LeftButton)
    size = hub_env.repo_bytes(TEXT_REPO)
    qt_wait(lambda: controller.catalog[0].exact, 30)
    assert dialog.table.item(0, 1).text() == human_bytes(size)

    hub_env.faults[f"{TEXT_REPO}/model.safetensors"] = ("slow", 256 * 1024, 0.05)
    dialog.table.selectRow(0)
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    bar = dialog.table.cellWidget(0, 2)
    qt_wait(lambda: bar.value() > 0 and controller.transfers[TEXT_REPO].done_bytes > 1_000_000, 60)
    assert "iB/s" in dialog.table.item(0, 3).text()
    qtbot.mouseClick(dialog.pause_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: controller.transfers[TEXT_REPO].state is TransferState.PAUSED, 30)
    assert "paused" in dialog.table.item(0, 3).text() and dialog.resume_button.isEnabled()
    kept = controller.transfers[TEXT_REPO].done_bytes
    assert 0 < kept < size

    # quit and start again: the paused download is found in the cache and resumes from there
    dialog.close()
    controller = DownloadsController(catalog=catalog)
    dialog = DownloadsDialog(controller)
    qtbot.addWidget(dialog)
    dialog.show()
    bar = dialog.table.cellWidget(0, 2)
    assert (
        controller.transfers[TEXT_REPO].state is TransferState.PAUSED
        and dialog.resume_button.isEnabled()
    )
    hub_env.faults.clear()
    hub_env.log.clear()
    qtbot.mouseClick(dialog.resume_button, Qt.MouseButton.LeftButton)
    qt_wait(lambda: controller.transfers[TEXT_REPO].state is TransferState.DONE, 60)
    assert bar.value() == 1000 and "Ready" in dialog.table.item(0, 3).text()
    resumed = [s for s in hub_env.log if s.path.endswith("model.safetensors")]
    assert resumed and resumed[0].start > 0  # resumed, not restarted
    snapshot = controller.transfers[TEXT_REPO].result
    assert (snapshot / "model.safetensors").read_bytes() == (
        conversions[0] / "model.safetensors"
    ).read_bytes()


def test_text_only_banner_offers_add_vision_and_the_new_model_appears(
    qapp, qtbot, qt_wait, hub_env, conversions, tmp_path
):
    from PySide6.QtCore import Qt

    from app import theme
    from app.controllers.downloads import TransferState
    from app.paths import app_paths
    from app.window import MainWindow

    theme.apply(qapp, theme.Scheme.LIGHT)
    text = tmp_path / "Qwen3.5-Tiny-text-4bit"
    shutil.copytree(conversions[0], text, copy_function=os.link)
    before = _snapshot(text)
    window = MainWindow(app_paths(tmp_path / "data"), reload_last=False)
    try:
        window.show()
        window.models.load(text)
        qt_wait(
            lambda: window.models.loaded_info is not None or window.error_banner.isVisible(), 120
        )
        assert window.models.loaded_info is not None, window.error_banner.label.text()
        window.open_files([write_image(tmp_path / "a.png")])
        qt_wait(lambda: window.error_banner.isVisible(), 10)
        assert "text-only" in window.error_banner.label.text()
        assert window.error_banner.action.text() == "Add vision…"
        qtbot.mouseClick(window.error_banner.action, Qt.MouseButton.LeftButton)
        dialog = window.add_vision_dialog
        assert dialog.isVisible() and not dialog.add_button.isEnabled()
        dialog.source.setText(RELEASE)
        qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
        key = str(text)

        def settles_in(state: TransferState, timeout_s: float) -> None:
            """Wait until the graft reaches ``state`` (or fails, which the assertion then reports)."""
            transfer = lambda: window.downloads.transfers[key]  # noqa: E731
            qt_wait(lambda: transfer().state in (state, TransferState.FAILED), timeout_s)
            assert transfer().state is state, transfer().message

        settles_in(TransferState.READY, 60)
        fetch = window.downloads.transfers[key].total_bytes
        assert 0 < fetch < hub_env.repo_bytes(RELEASE) / 100
        assert dialog.add_button.text() == f"Add vision (downloads {human_bytes(fetch)})"
        assert (
            f"of {human_bytes(hub_env.repo_bytes(RELEASE))} from {RELEASE}" in dialog.status.text()
        )
        qtbot.mouseClick(dialog.add_button, Qt.MouseButton.LeftButton)
        settles_in(TransferState.DONE, 120)
        new = tmp_path / "Qwen3.5-Tiny-text-4bit-vision"
        assert (new / "model-vision.safetensors").is_file() and dialog.bar.value() == 1000
        qt_wait(lambda: any(e.path == new and e.info.is_vision for e in window.models.entries), 60)
        assert _snapshot(text) == before and not (text / "model-vision.safetensors").exists()
    finally:
        window.close()


def test_model_picker_offers_add_vision_for_a_text_only_model(
    qtbot, hub_env, conversions, tmp_path, request
):
    from PySide6.QtCore import Qt

    from app.controllers.downloads import DownloadsController, TransferState
    from app.controllers.models import ModelEntry, ModelsController
    from app.paths import app_paths
    from app.store import Store
    from app.views.model_picker import ModelPicker
    from app.workers import EngineClient
    from engine_mlx.checkpoint import inspect_checkpoint

    paths = app_paths(tmp_path / "data").ensure()
    store = Store(paths.database, paths.attachments)
    engine = EngineClient(paths.engine_state)
    request.addfinalizer(lambda: (engine.shutdown(), store.close()))
    models = ModelsController(store, engine, paths)
    models.scanned = True
    models.entries = [ModelEntry(inspect_checkpoint(d), None) for d in conversions[:2]]
    downloads = DownloadsController(catalog=[])
    picker = ModelPicker(models, downloads=downloads)
    qtbot.addWidget(picker)
    picker.show()
    text_row = next(i for i, e in enumerate(picker.entries) if not e.info.is_vision)
    picker.table.selectRow(1 - text_row)
    assert not picker.vision_button.isEnabled()  # the vision conversion needs nothing
    picker.table.selectRow(text_row)
    assert picker.vision_button.isEnabled() and picker.vision_button.text() == "Add vision…"
    qtbot.mouseClick(picker.vision_button, Qt.MouseButton.LeftButton)
    dialog = picker.vision_dialog
    # the tiny model is no published release
    assert dialog.isVisible() and dialog.source.text() == ""
    dialog.source.setText(RELEASE)
    dialog.mtp.setChecked(True)
    qtbot.mouseClick(dialog.check_button, Qt.MouseButton.LeftButton)
    key = str(conversions[0])
    qtbot.waitUntil(lambda: downloads.transfers[key].state is TransferState.READY, timeout=60_000)
    size = downloads.known_vision_size(conversions[0])
    assert size and dialog.add_button.isEnabled()
    picker.table.selectRow(1 - text_row)
    picker.table.selectRow(text_row)  # the picker now names the size it learned
    assert picker.vision_button.text() == f"Add vision (downloads {human_bytes(size)})"
    # planned, not wanted: nothing runs
    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    assert downloads.transfers[key].state is TransferState.CANCELLED
    # only the headers were read: no tensor data
    assert all(s.start in (0, 8) for s in hub_env.log if s.path.endswith(".safetensors"))


def test_release_proposed_from_the_model_card(conversions, tmp_path):
    from engine_mlx.hub.graft import propose_release

    card = tmp_path / "m"
    shutil.copytree(conversions[0], card, copy_function=os.link)
    (card / "README.md").unlink()
    (card / "README.md").write_text("---\nbase_model: Qwen/Qwen3.5-397B-A17B\ntags:\n- mlx\n---\n")
    assert propose_release(card) == "Qwen/Qwen3.5-397B-A17B"


def test_graft_in_place_swaps_the_folder_and_keeps_it_on_failure(hub_env, conversions, tmp_path):
    from engine_mlx.cli import main
    from engine_mlx.hub.network import HubError

    model = tmp_path / "models" / "tiny-text"
    shutil.copytree(conversions[0], model, copy_function=os.link)
    (model / ".cache").mkdir()  # e.g. huggingface_hub's local_dir metadata: carried over
    (model / ".cache" / "note").write_text("kept")
    before = _snapshot(model)
    hub_env.faults[f"{RELEASE}/model-00003-of-00003.safetensors"] = ("500",)
    with pytest.raises(HubError, match="HTTP 500"):
        from engine_mlx.hub.graft import plan_graft, run_graft

        run_graft(plan_graft(model, RELEASE, in_place=True))
    assert _snapshot(model) == before and sorted(p.name for p in model.parent.iterdir()) == [
        "tiny-text"
    ]
    hub_env.faults.clear()
    inode = (model / "model.safetensors").stat().st_ino
    assert main(["add-vision", "--model", str(model), "--from", RELEASE, "--in-place"]) == 0
    # no sibling, no leftovers
    assert sorted(p.name for p in model.parent.iterdir()) == ["tiny-text"]
    assert (model / "model-vision.safetensors").is_file() and (
        model / ".cache" / "note"
    ).read_text() == "kept"
    assert (model / "model.safetensors").stat().st_ino == inode  # the same weights, never copied
    assert "vision_config" in json.loads((model / "config.json").read_text())


# --- add-mtp: the MTP head alone, for text-only and vision conversions -----------------------------


def _served_outside(served, release_dir: Path, prefixes: tuple[str, ...]) -> list[str]:
    """The safetensors requests that hold a byte outside the shard headers and the tensors whose
    names start with ``prefixes`` (adjacent ones may share a request)."""
    spans = {}
    for shard in release_dir.glob("*.safetensors"):
        raw = shard.read_bytes()
        n = int.from_bytes(raw[:8], "little")
        table = json.loads(raw[8 : 8 + n])
        spans[f"{RELEASE}/{shard.name}"] = [(0, 8 + n)] + [
            (8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
            for k, v in table.items()
            if k.startswith(prefixes)
        ]
    outside = []
    for s in served:
        if not s.path.endswith(".safetensors"):
            continue
        covered = s.start
        for lo, hi in sorted(spans[s.path]):
            if lo <= covered < hi:
                covered = hi
        if covered < s.end:
            outside.append(f"{s.path} {s.start}-{s.end}")
    return outside


@pytest.mark.parametrize("kind", ["text", "vision"])
def test_cli_add_mtp_writes_the_head_mlx_vlm_splits_fetching_only_its_bytes(
    hub_env, conversions, tiny_release_dir, tmp_path, capsys, kind
):
    """``add-mtp`` on a text-only (mlx_lm) and a vision (mlx_vlm, no --mtp) conversion: the model's
    ``mtp/`` equals ``mlx_vlm.convert --mtp``'s drafter tensor for tensor, only the head's byte ranges
    (and shard headers) were fetched, the model's own files are untouched, and ``models --json``
    and the engine see the head."""
    import mlx.core as mx

    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.cli import main
    from engine_mlx.mtp_head import MtpSource

    text, vision, vision_mtp = conversions
    model = tmp_path / "models" / f"tiny-{kind}"
    shutil.copytree(text if kind == "text" else vision, model, copy_function=os.link)
    before, inodes = _fingerprint(model), _snapshot(model)

    def listed():
        assert main(["models", "--dir", str(model.parent), "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        return next(r for r in rows if r["path"] == str(model))

    assert listed()["mtp"] is None
    hub_env.log.clear()
    assert main(["add-mtp", "--model", str(model), "--from", RELEASE, "--json"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    plan = events[0]
    assert plan["type"] == "plan" and plan["output"] == str(model / "mtp")
    assert 0 < plan["fetch_bytes"] < plan["repo_bytes"] and plan["tensors"] > 0
    assert any(e["type"] == "progress" for e in events)
    assert events[-1] == {"type": "done", "path": str(model / "mtp")}
    assert _served_outside(hub_env.log, tiny_release_dir, ("mtp.",)) == []
    assert hub_env.bytes_served(".safetensors") >= plan["fetch_bytes"]

    ours, theirs = _tensors(model / "mtp"), _tensors(vision_mtp)
    assert set(ours) == set(theirs) and ours
    assert all(mx.array_equal(ours[k], v).item() for k, v in theirs.items())
    assert json.loads((model / "mtp" / "config.json").read_text()) == json.loads(
        (vision_mtp / "config.json").read_text()
    )
    # nothing else changed, and no staging folder is left
    assert _fingerprint(model, skip=model / "mtp") == before
    assert {k: v for k, v in _snapshot(model).items() if not k.startswith("mtp")} == inodes
    assert sorted(p.name for p in model.iterdir() if p.name.startswith(".")) == []
    head = inspect_checkpoint(model).mtp
    assert head is not None and head.source is MtpSource.FOLDER
    row = listed()
    assert row["mtp"]["source"] == "folder" and row["mtp"]["path"] == str(model / "mtp")
    assert row["mtp"]["weight_bytes"] == head.weight_bytes and row["mtp_error"] is None
    assert main(["models", "--dir", str(model.parent)]) == 0
    kind = "vision" if kind == "vision" else "text-only"
    assert f"({kind}, MTP head, " in capsys.readouterr().out

    # a second run refuses before asking the Hub anything: the head is there
    hub_env.log.clear()
    assert main(["add-mtp", "--model", str(model), "--from", RELEASE]) == 2
    assert "mtp: already exists, so the model has an MTP head" in capsys.readouterr().err
    assert hub_env.log == []


def test_add_mtp_fault_or_cancel_leaves_the_model_as_it_was(hub_env, conversions, tmp_path):
    from engine_mlx.hub.add_mtp import plan_add_mtp, run_add_mtp
    from engine_mlx.hub.network import Cancelled, HubError

    model = tmp_path / "tiny-text"
    shutil.copytree(conversions[0], model, copy_function=os.link)
    before, inodes = _fingerprint(model), _snapshot(model)
    plan = plan_add_mtp(model, RELEASE)
    seen = []
    with pytest.raises(Cancelled):
        run_add_mtp(plan, on_progress=seen.append, cancelled=lambda: len(seen) > 1)
    assert _fingerprint(model) == before and _snapshot(model) == inodes
    hub_env.faults.update({f"{RELEASE}/{t.file}": ("truncate", 10) for t in plan.tensors})
    with pytest.raises(HubError, match="broke off|received"):
        run_add_mtp(plan)
    assert _fingerprint(model) == before and _snapshot(model) == inodes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-text"]


def test_add_mtp_refuses_before_fetching(hub_env, conversions, tiny_release_dir, tmp_path):
    """A folder named mtp (even a dangling link), a head in the weights, a release without a head,
    another model's release: each refused with its reason before a byte of weights is fetched."""
    import numpy as np
    from safetensors.numpy import save_file

    from engine_mlx.hub.add_mtp import plan_add_mtp
    from engine_mlx.hub.network import HubError

    model = tmp_path / "tiny-text"
    shutil.copytree(conversions[0], model, copy_function=os.link)
    (model / "MTP").symlink_to(tmp_path / "nowhere")  # case-insensitive volumes: the same name
    with pytest.raises(HubError, match="MTP head; move that folder out first"):
        plan_add_mtp(model, RELEASE)
    (model / "MTP").unlink()
    with pytest.raises(HubError, match="the release has no MTP head"):
        plan_add_mtp(model, TEXT_REPO)  # the text-only conversion: the head was dropped
    config = json.loads((tiny_release_dir / "config.json").read_text())
    config["text_config"]["hidden_size"] *= 2
    other = tmp_path / "other-release"
    other.mkdir()
    (other / "config.json").write_text(json.dumps(config))
    hub_env.add_repo("other/release", other)
    with pytest.raises(HubError, match="does not match the local model: hidden_size"):
        plan_add_mtp(model, "other/release")
    assert hub_env.bytes_served(".safetensors") <= 64_000  # shard headers at most
    embedded = tmp_path / "embedded"
    embedded.mkdir()
    (embedded / "config.json").write_text((model / "config.json").read_text())
    save_file({"mtp.fc.weight": np.zeros((2, 2), np.float32)}, str(embedded / "model.safetensors"))
    with pytest.raises(
        HubError, match=r"already has an MTP head in its weights \(mtp\.\* tensors\)"
    ):
        plan_add_mtp(embedded, RELEASE)
    assert not (model / "mtp").exists() and not (embedded / "mtp").exists()


def test_add_mtp_to_a_hugging_face_cache_download_writes_a_drafter_folder(hub_env, tmp_path):
    """The cache's folders belong to huggingface_hub: the head goes to --output, a drafter folder the
    engine takes with --mtp-from."""
    from engine_mlx.checkpoint import inspect_checkpoint
    from engine_mlx.hub.add_mtp import plan_add_mtp, run_add_mtp
    from engine_mlx.hub.download import Download
    from engine_mlx.hub.network import HubError
    from engine_mlx.mtp_head import MtpSource, inspect_drafter

    snapshot = Download(TEXT_REPO).run()
    before = _fingerprint(snapshot)
    with pytest.raises(
        HubError, match="Hugging Face cache.*--output DIR and use it with --mtp-from"
    ):
        plan_add_mtp(snapshot, RELEASE)
    drafter = tmp_path / "drafters" / "tiny-mtp"
    assert run_add_mtp(plan_add_mtp(snapshot, RELEASE, output=drafter)) == drafter
    assert _fingerprint(snapshot) == before and not (snapshot / "mtp").exists()
    head = inspect_drafter(drafter, inspect_checkpoint(snapshot).hidden_size)
    assert head.source is MtpSource.DRAFTER and head.weight_bytes > 0
    with pytest.raises(HubError, match="already exists; remove it or choose another output"):
        plan_add_mtp(snapshot, RELEASE, output=drafter)
