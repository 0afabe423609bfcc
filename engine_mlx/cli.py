"""The command line: ``python -m engine_mlx tiny | models | chat | serve | cluster | download | add-vision | add-mtp | boxes | mcp``.

Bad input exits non-zero with one line naming the file and what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TextIO

from engine_mlx.conversation import (
    Attachment,
    Conversation,
    ImageAttachment,
    Message,
    PdfAttachment,
    Role,
    TextAttachment,
    VideoAttachment,
)
from engine_mlx.errors import EngineError
from engine_mlx.events import (
    AnswerDelta,
    Event,
    Finished,
    FinishReason,
    Progress,
    Stats,
    ThinkingDelta,
    event_to_json,
)
from engine_mlx.media import DEFAULT_VIDEO_FPS, MAX_VIDEO_FPS
from engine_mlx.mtp_head import MtpMode
from engine_mlx.settings import DEFAULT_CONTEXT_TOKENS, DEFAULT_MAX_TOKENS, GenerationSettings
from engine_mlx.sizes import human_bytes

EXIT_ERROR = 2
DIM, RESET = "\x1b[2m", "\x1b[0m"
CLEAR_LINE = "\x1b[2K"  # erase the whole line (the cursor stays)
CONTINUE_COMMAND = "/continue"  # interactive chat: carry on the last answer
HELP_COMMAND = "/help"
INTERACTIVE_HELP = (
    "Type a message and press Enter to send it.\n"
    f"  {CONTINUE_COMMAND}  carry on the last answer where the token limit cut it\n"
    f"  {HELP_COMMAND}      this help\n"
    "  Ctrl+D (Ctrl+Z then Enter on Windows) or Ctrl+C ends the chat."
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m engine_mlx", description="QwenDesk's MLX engine.")
    sub = p.add_subparsers(dest="command", required=True)

    tiny = sub.add_parser("tiny", help="build the tiny random-weight Qwen3.5 model in DIR")
    tiny.add_argument("dir", type=Path)
    tiny.add_argument(
        "--text-only", action="store_true", help="a text-only conversion (no vision tower)"
    )
    tiny.add_argument(
        "--release",
        action="store_true",
        help="the unconverted HF-layout release (bf16, real vocabulary)",
    )
    tiny.add_argument(
        "--mtp",
        action="store_true",
        help="with an MTP head (in DIR/mtp) trained on the model's replies to a few first messages",
    )

    models = sub.add_parser(
        "models", help="list Qwen3.5 models found on this machine, with their fit"
    )
    models.add_argument(
        "--dir", dest="dirs", action="append", type=Path, default=[], help="also search here"
    )
    models.add_argument(
        "--context",
        type=int,
        default=DEFAULT_CONTEXT_TOKENS,
        help="context tokens for the fit estimate",
    )
    models.add_argument("--json", action="store_true")
    models.add_argument(
        "--all", action="store_true", help="also list folders of other model families"
    )

    chat = sub.add_parser(
        "chat",
        help="chat with a model (one answer with PROMPT, else interactive: a line reading "
        f"{CONTINUE_COMMAND} carries on the last answer where the token limit cut it)",
    )
    chat.add_argument("--model", required=True, type=Path)
    chat.add_argument("--image", action="append", type=Path, default=[])
    chat.add_argument("--pdf", type=Path)
    chat.add_argument("--pages", help="PDF page range, e.g. 2-5 (default: all)")
    chat.add_argument("--video", type=Path)
    chat.add_argument(
        "--file",
        action="append",
        type=Path,
        default=[],
        help="a text or code file, given to the model as a fenced block (repeatable)",
    )
    chat.add_argument(
        "--fps",
        type=float,
        default=DEFAULT_VIDEO_FPS,
        help=f"video sampling rate (default {DEFAULT_VIDEO_FPS:g}, at most {MAX_VIDEO_FPS:g})",
    )
    chat.add_argument("--no-think", action="store_true", help="answer without thinking")
    chat.add_argument("--thinking-budget", type=int)
    chat.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    chat.add_argument("--temperature", type=float)
    chat.add_argument(
        "--top-p", type=float, help="nucleus sampling (default: Qwen's for the thinking mode)"
    )
    chat.add_argument(
        "--top-k", type=int, help="sample from the k most likely tokens (default: Qwen's)"
    )
    chat.add_argument(
        "--presence-penalty",
        type=float,
        help="subtract this from every token already in the reply (default: Qwen's 1.5)",
    )
    chat.add_argument("--seed", type=int)
    chat.add_argument("--system", default="", help="system prompt")
    chat.add_argument("--context", type=int, default=DEFAULT_CONTEXT_TOKENS)
    chat.add_argument("--force", action="store_true", help="load even if the model does not fit")
    chat.add_argument("--json", action="store_true", help="one JSON event per line on stdout")
    chat.add_argument("--mcp-config", type=Path, help="tools: the MCP servers of this mcp.json")
    chat.add_argument(
        "--files",
        dest="files_roots",
        action="append",
        type=Path,
        default=[],
        help="tools: the built-in Files tool, reading only this folder (repeatable)",
    )
    chat.add_argument(
        "--allow-tools",
        metavar="all|NAME,...",
        help="tools run without asking (SERVER, TOOL or SERVER/TOOL); a scripted chat "
        "denies the rest, an interactive one asks",
    )
    _parallel_option(chat)
    _mtp_options(chat)
    chat.add_argument("prompt", nargs="?")

    from engine_mlx.server.config import DEFAULT_HOST, DEFAULT_KEEPALIVE_S, DEFAULT_PORT

    serve = sub.add_parser("serve", help="serve a model on a local OpenAI-compatible API")
    serve.add_argument("--model", required=True, type=Path)
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 = any free port"
    )
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help="address to listen on (default 127.0.0.1: this computer only); anything else "
        "lets other machines in and needs --api-key",
    )
    serve.add_argument(
        "--allow-host",
        dest="allow_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="a name clients reach this server by beyond loopback, e.g. studio.local (repeatable)",
    )
    serve.add_argument(
        "--tls-cert", type=Path, help="serve HTTPS with this certificate (PEM); needs --tls-key"
    )
    serve.add_argument("--tls-key", type=Path, help="the certificate's private key (PEM)")
    serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every request")
    serve.add_argument(
        "--allow-origin",
        dest="origins",
        action="append",
        default=[],
        help="a browser origin (e.g. http://localhost:3000) allowed to call the API",
    )
    serve.add_argument(
        "--context",
        type=int,
        default=DEFAULT_CONTEXT_TOKENS,
        help=f"context tokens (prompt + reply) a request may use (default {DEFAULT_CONTEXT_TOKENS}); "
        "a longer prompt gets 400 context_length_exceeded",
    )
    serve.add_argument(
        "--thinking",
        nargs="+",
        default=["on"],
        metavar="on|off|budget N",
        help="thinking for requests that do not say: on (default), off, or budget N "
        "(on, closed after N thinking tokens)",
    )
    serve.add_argument(
        "--reasoning-alias",
        action="store_true",
        help="also send the reasoning as 'reasoning' beside 'reasoning_content'",
    )
    serve.add_argument(
        "--keepalive",
        type=float,
        default=DEFAULT_KEEPALIVE_S,
        metavar="SECONDS",
        help=f"stream an SSE comment after this long without a byte (default {DEFAULT_KEEPALIVE_S:g})",
    )
    serve.add_argument("--force", action="store_true", help="load even if the model does not fit")
    _parallel_option(serve)
    _cluster_parser(sub)
    _mtp_options(serve)
    dl = sub.add_parser(
        "download", help="download a model repo into the Hugging Face cache (resumable)"
    )
    dl.add_argument("repo", help="e.g. mlx-community/Qwen3.5-397B-A17B-4bit")
    dl.add_argument("--revision", default="main")
    dl.add_argument("--json", action="store_true", help="progress as one JSON event per line")

    av = sub.add_parser(
        "add-vision", help="add the vision tower (and MTP head) to a text-only model"
    )
    av.add_argument(
        "--model", required=True, type=Path, help="the text-only model folder (left untouched)"
    )
    av.add_argument(
        "--from", dest="source", help="the original release, e.g. Qwen/Qwen3.5-397B-A17B"
    )
    av.add_argument("--revision", default="main")
    av.add_argument(
        "--mtp", action="store_true", help="also the multi-token-prediction head (as ./mtp)"
    )
    av.add_argument(
        "--output", type=Path, help="the new model folder (default: beside the model, -vision)"
    )
    av.add_argument(
        "--in-place",
        action="store_true",
        help="graft into the model folder itself (swapped in at the end)",
    )
    av.add_argument("--json", action="store_true", help="progress as one JSON event per line")

    am = sub.add_parser(
        "add-mtp",
        help="add the multi-token-prediction head (as ./mtp) to a text-only or vision model",
    )
    am.add_argument("--model", required=True, type=Path, help="the model folder")
    am.add_argument(
        "--from", dest="source", help="the original release, e.g. Qwen/Qwen3.5-397B-A17B"
    )
    am.add_argument("--revision", default="main")
    am.add_argument(
        "--output",
        type=Path,
        help="write the head here instead of MODEL/mtp (use it with --mtp-from)",
    )
    am.add_argument("--json", action="store_true", help="progress as one JSON event per line")

    boxes = sub.add_parser(
        "boxes", help="the boxes and points an answer names on an image, in pixels"
    )
    boxes.add_argument("--image", required=True, type=Path, help="the image the answer is about")
    answer = boxes.add_mutually_exclusive_group(required=True)
    answer.add_argument("--answer", help="the answer's text")
    answer.add_argument("--answer-file", type=Path, help="a file holding the answer's text")
    boxes.add_argument(
        "--draw", type=Path, help="write a copy of the image with the shapes drawn (PNG)"
    )
    boxes.add_argument(
        "--json", action="store_true", help="a JSON list of {label, kind, pixels, relative}"
    )

    mcp = sub.add_parser(
        "mcp", help="MCP tool servers: list their tools, call one; their resources and prompts"
    )
    mcp_sub = mcp.add_subparsers(dest="mcp_command", required=True)
    for name, text in (
        ("list", "each enabled server's tools"),
        ("call", "run one tool and print its result"),
        ("resources", "each enabled server's resources"),
        ("read", "read one resource and print it"),
        ("prompts", "each enabled server's prompts"),
    ):
        cmd = mcp_sub.add_parser(name, help=text)
        cmd.add_argument(
            "--config", type=Path, help="an mcp.json (default: the one in QwenDesk's data folder)"
        )
        cmd.add_argument(
            "--files",
            dest="files_roots",
            action="append",
            type=Path,
            default=[],
            help="also offer the built-in Files tool, reading only this folder (repeatable)",
        )
        cmd.add_argument("--json", action="store_true")
        if name == "call":
            cmd.add_argument("server")
            cmd.add_argument("tool")
            cmd.add_argument("--args", default="{}", help="the tool's arguments as a JSON object")
            cmd.add_argument(
                "--timeout", type=float, help="seconds (default: the server's, else 60)"
            )
        if name == "read":
            cmd.add_argument("server")
            cmd.add_argument("uri")
    return p


def _cluster_parser(sub) -> None:
    from engine_mlx.distributed.ranks import FIRST_RANK
    from engine_mlx.distributed.setup import DEFAULT_RESTARTS

    cluster = sub.add_parser(
        "cluster", help="one model over several Macs: check the hosts, launch the group"
    )
    commands = cluster.add_subparsers(dest="cluster_command", required=True)
    check = commands.add_parser(
        "check", help="every host reachable, same QwenDesk, same model files, fits"
    )
    check.add_argument("--hostfile", required=True, type=Path, help="an mlx.launch hostfile (JSON)")
    check.add_argument(
        "--model", required=True, type=Path, help="the model folder, at this path on every host"
    )
    check.add_argument("--context", type=int, default=DEFAULT_CONTEXT_TOKENS)
    probe = commands.add_parser("probe", help="this host's report for 'cluster check' (JSON)")
    probe.add_argument("--model", required=True, type=Path)
    probe.add_argument("--ranks", type=int, required=True, help="how many hosts share the model")
    probe.add_argument(
        "--rank", type=int, default=FIRST_RANK, help="this host's rank (0 holds the vision tower)"
    )
    probe.add_argument("--context", type=int, default=DEFAULT_CONTEXT_TOKENS)
    launch = commands.add_parser(
        "launch",
        help="serve the model from every host of the hostfile (mlx.launch); prints the base URL",
    )
    launch.add_argument("--hostfile", required=True, type=Path)
    launch.add_argument("--model", required=True, type=Path)
    launch.add_argument("--parallel", choices=("pipeline", "tensor"), default="pipeline")
    launch.add_argument(
        "--restarts",
        type=int,
        default=DEFAULT_RESTARTS,
        help="start the group again this many times if a rank dies",
    )
    launch.add_argument(
        "--starting-port",
        type=int,
        help="the ring backend's first port (mlx.launch's default otherwise)",
    )
    launch.add_argument(
        "serve_args",
        nargs=argparse.REMAINDER,
        help="after --: options for serve (--port, --host, ...)",
    )


def _cluster(args) -> int:
    from engine_mlx.distributed import setup

    if args.cluster_command == "probe":
        print(setup.probe_json(args.model, args.ranks, args.context, args.rank))
        return 0
    if args.cluster_command == "check":
        problems = setup.check(args.hostfile, args.model, args.context)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print("The cluster is ready.")
        return EXIT_ERROR if problems else 0
    serve_args = args.serve_args[1:] if args.serve_args[:1] == ["--"] else args.serve_args
    return setup.launch(
        args.hostfile, args.model, args.parallel, serve_args, args.restarts, args.starting_port
    )


def _parallel_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parallel",
        choices=("pipeline", "tensor"),
        help="split the model over the Macs of a cluster (run on every rank by "
        "'cluster launch' or mlx.launch): pipeline = layers in turn, tensor = "
        "every layer at once",
    )
    from engine_mlx.distributed.ranks import DEFAULT_RANK_TIMEOUT_S

    parser.add_argument(
        "--rank-timeout",
        type=float,
        default=DEFAULT_RANK_TIMEOUT_S,
        metavar="SECONDS",
        help="with --parallel: rank 0 ends the group when the others have not answered a "
        f"model call for this long (default {DEFAULT_RANK_TIMEOUT_S:g})",
    )


def _join(args):
    """This process's rank when ``--parallel`` asks for a cluster, else None."""
    if not getattr(args, "parallel", None):
        return None
    from engine_mlx.distributed.ranks import join

    if args.rank_timeout <= 0:
        raise EngineError("--rank-timeout must be positive")
    return join(args.parallel, args.rank_timeout)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "tiny" and args.release:
            from engine_mlx.tiny_release import build_tiny_release

            print(build_tiny_release(args.dir))
            return 0
        if args.command == "tiny":
            from engine_mlx.tiny import build_tiny_model

            print(build_tiny_model(args.dir, vision=not args.text_only))
            if args.mtp:
                from engine_mlx.tiny_mtp import train_head

                train_head(args.dir)
            return 0
        if args.command == "models":
            return _models(args)
        if args.command == "serve":
            return _serve(args)
        if args.command in ("download", "add-vision", "add-mtp"):
            return _hub(args)
        if args.command == "cluster":
            return _cluster(args)
        if args.command == "boxes":
            return _boxes(args)
        if args.command == "mcp":
            from engine_mlx.tools.commands import mcp_command

            return mcp_command(args)
        return _chat(args)
    except EngineError as exc:
        return _fail(str(exc), getattr(args, "json", False))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a full disk, a permission problem: say which file
        return _fail(
            f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "),
            getattr(args, "json", False),
        )
    except Exception as exc:  # noqa: BLE001 - one line for the user, the traceback only with -v logging
        logging.getLogger(__name__).debug("unexpected failure", exc_info=True)
        return _fail(
            f"unexpected failure: {type(exc).__name__}: {exc}", getattr(args, "json", False)
        )


def _hub(args) -> int:
    from engine_mlx.hub import commands

    if args.command == "download":
        return commands.download(args.repo, args.revision, args.json)
    if args.command == "add-mtp":
        return commands.add_mtp(args.model, args.source, args.revision, args.output, args.json)
    return commands.add_vision(
        args.model, args.source, args.revision, args.mtp, args.output, args.json, args.in_place
    )


def _mtp_options(cmd: argparse.ArgumentParser) -> None:
    cmd.add_argument(
        "--mtp",
        choices=[m.value for m in MtpMode],
        default=MtpMode.AUTO.value,
        help="speculative decoding with the model's MTP head: auto (default: drafts while it "
        "pays), on (always), off",
    )
    cmd.add_argument(
        "--mtp-from",
        type=Path,
        metavar="DIR",
        help="an MTP drafter folder (mlx-vlm's split layout) to draft with instead of the model's own",
    )


def _fail(message: str, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"type": "error", "reason": "error", "error": message}), flush=True)
    print(f"error: {message}", file=sys.stderr)
    return EXIT_ERROR


# ---------------------------------------------------------------------------------------- models


def _models(args) -> int:
    from engine_mlx.checkpoint import discover_models
    from engine_mlx.memory import estimate_fit

    rows = []
    for found in discover_models(extra_dirs=[*args.dirs, *_app_folders()]):
        if found.other_model and not args.all:  # refused Qwen3.5 folders are always listed
            continue
        row = {"path": str(found.path), "source": found.source.value, "error": found.error}
        if found.info is not None:
            info, fit = found.info, estimate_fit(found.info, args.context)
            row.update(
                name=info.name,
                vision=info.is_vision,
                bits=info.quant_bits,
                precision=info.precision,
                params=info.param_count,
                weight_bytes=info.weight_bytes,
                context_length=info.context_length,
                thinking=info.supports_thinking,
                mtp=info.mtp.to_json() if info.mtp else None,
                mtp_error=info.mtp_error,
                fit=fit.verdict.value,
                fit_summary=fit.summary(),
                fit_advice=fit.advice,
            )
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(
            "No Qwen3.5 MLX models found. Looked in the Hugging Face cache and LM Studio's models folder;"
        )
        print("add a folder with --dir, or build the demo model: python -m engine_mlx tiny DIR")
        return 0
    for row in rows:
        if row.get("error"):
            print(f"  {row['path']}\n      refused: {row['error']}")
            continue
        kind = "vision" if row["vision"] else "text-only"
        head = ", MTP head" if row["mtp"] else ""
        print(
            f"  {row['name']}  ({kind}{head}, {row['precision']}, {human_bytes(row['weight_bytes'])})"
        )
        if row["mtp_error"]:
            print(f"      MTP head not usable: {row['mtp_error']}")
        print(f"      {row['path']}\n      {row['fit_summary']}")
        if row["fit_advice"]:
            print(f"      {row['fit_advice']}")
    return 0


# ---------------------------------------------------------------------------------------- boxes


def _boxes(args) -> int:
    from engine_mlx import grounding
    from engine_mlx.media import load_image

    if args.answer_file is not None:
        try:
            text = args.answer_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise EngineError(f"{args.answer_file}: is not UTF-8 text") from None
    else:
        text = args.answer
    width, height = grounding.image_size(args.image)
    shapes = grounding.parse_grounding(text)
    if args.draw is not None:
        image = load_image(args.image, max_side=max(width, height))
        grounding.draw(image, shapes).save(args.draw, format="PNG")
    if args.json:
        print(json.dumps([shape.to_json(width, height) for shape in shapes]))
        return 0
    if not shapes:
        print("The answer names no boxes or points.")
    for shape in shapes:
        coords = ",".join(map(str, shape.pixels(width, height)))
        print(f"{shape.kind.value:5}  {coords:24}  {shape.label}")
    return 0


def _boxes_events(convo: Conversation, answer: str) -> list[dict]:
    """``chat --json``'s ``boxes`` events: the grounding of ``answer`` per image of the conversation
    (images and PDF pages, numbered as Qwen numbers them) or per video frame, for those it falls on."""
    from engine_mlx import grounding
    from engine_mlx.media import load_pdf_pages, probe_video

    shapes = grounding.parse_grounding(answer)
    if not shapes:
        return []
    images: list[tuple[str, int | None, tuple[int, int]]] = []  # (path, page, size)
    videos: list[VideoAttachment] = []
    for message in convo.messages:
        for attachment in message.attachments:
            if isinstance(attachment, ImageAttachment):
                images.append((str(attachment.path), None, grounding.image_size(attachment.path)))
            elif isinstance(attachment, PdfAttachment):
                pages = load_pdf_pages(attachment.path, attachment.first_page, attachment.last_page)
                first = attachment.first_page
                images.extend(
                    (str(attachment.path), first + i, p.size) for i, p in enumerate(pages)
                )
            elif isinstance(attachment, VideoAttachment):
                videos.append(attachment)
    turn = next((m.text for m in reversed(convo.messages) if m.role is Role.USER), "")
    on_images: dict[int, list] = {}
    on_frames: dict[tuple[int, float], list] = {}
    for shape in shapes:
        video = grounding.choose_video(shape, videos=len(videos), images=len(images))
        if video is not None:
            moment = shape.time_s if shape.time_s is not None else videos[video - 1].start_s
            on_frames.setdefault((video, moment), []).append(shape)
        elif images:
            # by default the newest image: the last of the user message replied to, or of the chat
            number = grounding.choose_image(
                shape, default=len(images), count=len(images), turn_text=turn
            )
            on_images.setdefault(number, []).append(shape)
    events = []
    for number, on_image in sorted(on_images.items()):
        path, page, (width, height) = images[number - 1]
        events.append(
            {
                "type": "boxes",
                "image": number,
                "path": path,
                "page": page,
                "width": width,
                "height": height,
                "boxes": [s.to_json(width, height) for s in on_image],
            }
        )
    for (number, moment), on_frame in sorted(on_frames.items()):
        attachment = videos[number - 1]
        info = probe_video(attachment.path)  # the frame as displayed (rotation applied)
        events.append(
            {
                "type": "boxes",
                "video": number,
                "path": str(attachment.path),
                "time_s": moment,
                "width": info.width,
                "height": info.height,
                "boxes": [s.to_json(info.width, info.height) for s in on_frame],
            }
        )
    return events


def _app_folders() -> list[Path]:
    """The QwenDesk app's demo model and added folders."""
    from engine_mlx.app_folders import app_model_folders

    return app_model_folders()


# ---------------------------------------------------------------------------------------- chat


def _page_range(spec: str | None) -> tuple[int, int | None]:
    """``--pages``: ``2-5``, ``3`` (one page), ``3-`` (page 3 to the end) or ``-5`` (pages 1 to 5);
    (first, last), last None for the end."""
    if not spec:
        return 1, None
    first, dash, last = spec.strip().partition("-")
    try:
        return (int(first) if first else 1), (int(last) if last else None if dash else int(first))
    except ValueError:
        raise EngineError(f"--pages {spec!r} is not a page range like 2-5, 3 or 3-") from None


def _attachments(args) -> tuple[Attachment, ...]:
    """The attachments, each checked as the app checks a dropped file: a refused type (.heic), a
    folder, a pipe, a device or a symlink loop is named as what it is before the model loads."""
    from engine_mlx.media import ATTACHABLE_SUFFIXES, AttachmentKind, check_file, classify

    options = {  # each kind: its option, the attachment it makes, and the kind's name in a sentence
        AttachmentKind.IMAGE: ("--image", ImageAttachment, "an image"),
        AttachmentKind.PDF: ("--pdf", PdfAttachment, "a PDF"),
        AttachmentKind.VIDEO: ("--video", VideoAttachment, "a video"),
        AttachmentKind.TEXT: ("--file", TextAttachment, "a text file"),
    }
    out: list[Attachment] = [ImageAttachment(p) for p in args.image]
    if args.pdf:
        first, last = _page_range(args.pages)
        out.append(PdfAttachment(args.pdf, first, last))
    if args.video:
        out.append(VideoAttachment(args.video, fps=args.fps))
    out.extend(TextAttachment(p) for p in args.file)
    for attachment in out:
        path = Path(attachment.path)
        check_file(path)
        if (
            isinstance(attachment, TextAttachment)
            and path.suffix.lower() not in ATTACHABLE_SUFFIXES
        ):
            continue  # any UTF-8 file may go in as text (a Makefile); load_text checks its bytes
        option, expected, name = options[classify(path)]
        if not isinstance(attachment, expected):
            raise EngineError(f"{path}: is {name}; pass it with {option}")
    return tuple(out)


def _chat(args) -> int:
    from engine_mlx.engine import Engine

    attachments = _attachments(args)
    settings = GenerationSettings(
        thinking=not args.no_think,
        thinking_budget=args.thinking_budget,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        presence_penalty=args.presence_penalty,
        seed=args.seed,
    )
    rank = _join(args)
    if rank is not None and not rank.leads:
        return rank.follow(args.model)
    loader = rank.loader() if rank is not None else None
    engine = Engine(loader=loader)
    engine.load(
        args.model,
        context_tokens=args.context,
        force=args.force,
        mtp=MtpMode(args.mtp),
        mtp_from=args.mtp_from,
    )
    try:
        return _chat_turns(args, engine, attachments, settings)
    finally:
        if loader is not None:
            loader.stop()


def _chat_turns(
    args, engine, attachments: tuple[Attachment, ...], settings: GenerationSettings
) -> int:
    messages: tuple[Message, ...] = (Message(Role.SYSTEM, args.system),) if args.system else ()
    convo = Conversation(messages, id=f"cli-{uuid.uuid4()}")
    out = _Printer(sys.stdout, as_json=args.json)

    prompts: Iterable[str] = [args.prompt] if args.prompt is not None else _stdin_lines(args.json)
    loop, host = None, None
    if args.mcp_config is not None or args.files_roots:
        from engine_mlx.tools.commands import chat_tool_loop

        loop, host = chat_tool_loop(args, engine)
    try:
        return _run_turns(args, engine, convo, settings, attachments, prompts, out, loop)
    finally:
        if host is not None:
            host.close()


def _run_turns(
    args,
    engine,
    convo: Conversation,
    settings: GenerationSettings,
    attachments,
    prompts,
    out: _Printer,
    loop,
) -> int:
    status = 0
    for text in prompts:
        if text.strip() == HELP_COMMAND:  # answered here: never sent to the model
            print(INTERACTIVE_HELP, file=sys.stderr)
            continue
        if text.strip() == CONTINUE_COMMAND:
            if not convo.messages or convo.messages[-1].role is not Role.ASSISTANT:
                print(
                    f"error: {CONTINUE_COMMAND} carries on an answer; there is none yet",
                    file=sys.stderr,
                )
                status = EXIT_ERROR
                continue
            last = convo.messages[-1]
            finished = out.show(engine.generate(replace(convo, continue_last=True), settings))
            grown = Message(
                Role.ASSISTANT, last.text + out.answer, thinking=last.thinking + out.thinking
            )
            convo = replace(convo, messages=convo.messages[:-1] + (grown,))
        else:
            convo = convo.with_message(Message(Role.USER, text, attachments))
            attachments = ()  # attachments go with the first turn; the conversation keeps them
            if loop is None:
                finished = out.show(engine.generate(convo, settings))
            else:  # the tool steps join the conversation; the answer is the last step's
                finished = out.show(loop.run(convo, settings))
                convo = replace(loop.conversation, tools=convo.tools)
            convo = convo.with_message(Message(Role.ASSISTANT, out.answer, thinking=out.thinking))
        if args.json and finished.reason is not FinishReason.ERROR:
            for event in _boxes_events(convo, convo.messages[-1].text):
                print(json.dumps(event), flush=True)
        if finished.reason is FinishReason.ERROR:
            print(f"error: {finished.error}", file=sys.stderr)
            status = EXIT_ERROR
    return status


def _stdin_lines(quiet: bool) -> Iterable[str]:
    interactive = sys.stdin.isatty() and not quiet
    if interactive:
        print(f"Type a message, or {HELP_COMMAND} for the commands.", file=sys.stderr)
    while True:
        if interactive:
            print(">>> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            return
        if line.strip():
            yield line.rstrip("\n")


class _Printer:
    """Writes events as JSON lines, or as text with thinking dimmed and stats at the end."""

    def __init__(self, stream: TextIO, *, as_json: bool):
        self.stream = stream
        self.as_json = as_json
        self.color = stream.isatty()
        self.thinking = ""
        self.answer = ""
        self.progress_shown = False

    def show(self, events: Iterable[Event]) -> Finished:
        self.thinking = self.answer = ""
        finished = Finished(FinishReason.ERROR, "no events")
        from engine_mlx.tools.loop import TOOL_EVENTS, ToolCallFinished, tool_event_json

        for event in events:
            if isinstance(
                event, TOOL_EVENTS
            ):  # the tool loop's: the answer starts again after a result
                if isinstance(event, ToolCallFinished):
                    self.thinking = self.answer = ""
                if self.as_json:
                    print(json.dumps(tool_event_json(event)), file=self.stream, flush=True)
                else:
                    self._tool_text(event)
                continue
            if isinstance(event, ThinkingDelta):
                self.thinking += event.text
            elif isinstance(event, AnswerDelta):
                self.answer += event.text
            elif isinstance(event, Finished):
                finished = event
            if self.as_json:
                print(json.dumps(event_to_json(event)), file=self.stream, flush=True)
            else:
                self._text(event)
        return finished

    def _tool_text(self, event) -> None:
        from engine_mlx.tools.loop import StepLimitReached, ToolCallFinished

        if isinstance(event, ToolCallFinished):
            first = event.result.strip().splitlines()[0][:200] if event.result.strip() else ""
            self.stream.write(
                f"\n[tool {event.server} ▸ {event.tool}: {event.outcome.value}] {first}\n"
            )
        elif isinstance(event, StepLimitReached):
            self.stream.write(f"\n[tools: stopped after {event.steps} steps]\n")
        self.stream.flush()

    def _text(self, event: Event) -> None:
        w = self.stream.write
        if isinstance(event, Progress):
            if self.color and event.total:
                print(
                    f"\r{CLEAR_LINE}prompt {event.done}/{event.total}",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
                self.progress_shown = True
            return
        if self.progress_shown:  # the prompt is read: take the progress text off the line
            print(f"\r{CLEAR_LINE}", end="", file=sys.stderr, flush=True)
            self.progress_shown = False
        if isinstance(event, ThinkingDelta):
            if not self.thinking[: -len(event.text)]:
                w(f"{DIM}Thinking: " if self.color else "[thinking]\n")
            w(event.text)
        elif isinstance(event, AnswerDelta):
            if not self.answer[: -len(event.text)]:
                w(
                    f"{RESET}\n\n"
                    if self.color and self.thinking
                    else ("\n[/thinking]\n" if self.thinking else "")
                )
            w(event.text)
        elif isinstance(event, Stats):
            s = asdict(event)
            line = (
                f"{s['prompt_tokens']} prompt tokens ({s['reused_tokens']} reused, {s['prefilled_tokens']} "
                f"prefilled at {s['prefill_tps']:.0f} tok/s) · {s['generated_tokens']} generated "
                f"({s['thinking_tokens']} thinking) at {s['decode_tps']:.1f} tok/s · first token "
                f"{s['ttft_s']:.2f} s · peak {human_bytes(s['peak_memory_bytes'])}"
            )
            if event.drafted_tokens:
                line += f" · MTP {event.accepted_tokens / event.drafted_tokens:.0%} of {event.drafted_tokens} drafts kept"
            w(f"{RESET}\n\n{DIM}{line}{RESET}\n" if self.color else f"\n\n{line}\n")
        elif isinstance(event, Finished) and event.reason is not FinishReason.STOP:
            w(f"[{event.reason.value}{': ' + event.error if event.error else ''}]\n")
        self.stream.flush()


# ---------------------------------------------------------------------------------------- serve


def _thinking_default(words: list[str]):
    from engine_mlx.server.config import ThinkingDefault

    if words in (["on"], ["off"]):
        return ThinkingDefault(on=words == ["on"])
    if len(words) == 2 and words[0] == "budget" and words[1].isdigit():
        return ThinkingDefault(on=True, budget=int(words[1]))
    raise EngineError(
        f"--thinking {' '.join(words)!r} is not 'on', 'off' or 'budget N' (N thinking tokens)"
    )


def _print_request(rec) -> None:
    """serve's access log on stderr, a line per request once it has ended: who, what, how it ended
    and the tokens (a client that left shows as 499 "disconnected": its generation was stopped)."""
    tokens = f"prompt {rec.prompt_tokens} (cached {rec.cached_tokens}), completion {rec.completion_tokens}"
    print(
        f"{rec.client} {rec.path} {rec.status} {rec.finish_reason or '-'}; {tokens}; "
        f"{rec.duration_s:.2f} s" + (f"; {rec.error}" if rec.error else ""),
        file=sys.stderr,
        flush=True,
    )


def _serve(args) -> int:
    """Listen first (requests get 503 while the model loads), then load on the engine thread."""
    from engine_mlx.engine import Engine
    from engine_mlx.jobs import EngineThread, JobKind
    from engine_mlx.server.config import ServerConfig
    from engine_mlx.server.runner import ApiServer

    if not Path(args.model).exists():
        raise EngineError(f"{args.model}: no such folder")
    if args.context < 1 or args.keepalive <= 0:
        raise EngineError("--context and --keepalive must be positive")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise EngineError("--tls-cert and --tls-key go together: give both (PEM files)")
    for pem in (args.tls_cert, args.tls_key):
        if pem is not None and not pem.is_file():
            raise EngineError(f"{pem}: no such file")
    config = ServerConfig(
        args.host,
        args.port,
        args.api_key,
        tuple(args.origins),
        context_tokens=args.context,
        thinking=_thinking_default(args.thinking),
        reasoning_alias=args.reasoning_alias,
        keepalive_s=args.keepalive,
        allow_hosts=tuple(args.allow_hosts),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    if config.exposed:
        if not args.api_key:
            raise EngineError(
                f"listening on {args.host} lets other machines in: set --api-key KEY too "
                "(clients send it as 'Authorization: Bearer KEY')"
            )
        print(
            f"warning: listening on {args.host}: other machines can reach this API with the key"
            + ("" if config.tls_cert else " over plain HTTP (add --tls-cert/--tls-key for HTTPS)"),
            file=sys.stderr,
        )
    rank = _join(args)
    if rank is not None and not rank.leads:
        return rank.follow(args.model)
    loader = rank.loader() if rank is not None else None
    engine, jobs = Engine(loader=loader), EngineThread()
    server = ApiServer(engine, jobs, config, on_request=_print_request)
    try:
        server.bind()
    except OSError as exc:
        raise EngineError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    failure: list[str] = []

    def load() -> None:
        try:
            info = engine.load(
                args.model,
                context_tokens=args.context,
                force=args.force,
                mtp=MtpMode(args.mtp),
                mtp_from=args.mtp_from,
            )
        except (
            Exception
        ) as exc:  # an EngineError names the folder; anything else still ends the server
            failure.append(
                str(exc) if isinstance(exc, EngineError) else f"{type(exc).__name__}: {exc}"
            )
            server.stop()
            return
        print(
            f"Serving {info.name} at {server.base_url} (model id {info.name!r}); Ctrl-C stops.",
            file=sys.stderr,
            flush=True,
        )

    print(
        f"Loading {args.model} ... (requests get 503 until it is ready)",
        file=sys.stderr,
        flush=True,
    )
    jobs.submit(load, JobKind.LOAD)
    try:
        server.serve()
    except KeyboardInterrupt:  # uvicorn shut down cleanly, then passed Ctrl-C on
        pass
    finally:
        if loader is not None:
            jobs.submit(loader.stop)  # after any generation still running: the followers exit
        jobs.close(timeout=5)
    if failure:
        raise EngineError(failure[0])
    return 0
