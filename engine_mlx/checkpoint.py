"""What a model folder holds, read without loading it; and where model folders are on this machine.

``inspect_checkpoint`` reads config.json, the chat template and the safetensors headers (never
the tensors) and raises :class:`~engine_mlx.errors.CheckpointError` with a specific reason when the
folder cannot be used. A model folder is untrusted input: before anything else it must name no
Python to import and point nowhere outside itself (``check_folder_safety``), and its tensors must
fit the architecture of its config.json (:mod:`engine_mlx.weight_check`). ``discover_models`` looks
in the Hugging Face cache, LM Studio's folders and user folders, without touching the network.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from . import hf_cache
from .errors import CheckpointError, UnsupportedModelError
from .mtp_head import MtpHead, find_head
from .safetensors_header import MAX_HEADER_BYTES, HeaderError, header_length, parse_header

SUPPORTED_MODEL_TYPES = frozenset({"qwen3_5", "qwen3_5_moe", "qwen3_5_text", "qwen3_5_moe_text"})
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
SAFETENSORS_INDEX = "model.safetensors.index.json"
# Config keys by which the pinned loaders import Python that a model folder names: mlx-lm and
# mlx-vlm import config.json's ``model_file`` as the model's module; transformers imports the
# classes in ``auto_map`` (config, tokenizer and processor configs) and ``custom_pipelines``.
CODE_KEYS = frozenset({"model_file", "auto_map", "custom_pipelines"})
# tokenizer_config.json keys whose value mlx-lm imports as a module of its own package.
_MLX_LM_MODULE_KEYS = {
    "chat_template_type": "mlx_lm.chat_templates",
    "tool_parser_type": "mlx_lm.tool_parsers",
}
CODE_SUFFIXES = frozenset({".py", ".pyc", ".pyo", ".pyw"})
# JSON files in a model folder that are data, not settings: never scanned for code keys.
_DATA_JSON = frozenset({"tokenizer.json", "vocab.json", SAFETENSORS_INDEX})
# mlx-vlm's MoE offload layout loads expert shards from a subfolder with strict checks off.
_OFFLOAD_INDEX = "offload_index.json"
# Bytes per element of each safetensors dtype MLX can load.
DTYPE_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E8M0": 1,
    "U16": 2, "I16": 2, "F16": 2, "BF16": 2,
    "U32": 4, "I32": 4, "F32": 4,
    "U64": 8, "I64": 8, "C64": 8,
}  # fmt: skip
# The floating-point safetensors dtypes the activations can have, as MLX names them.
_ACTIVATION_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
# The vision tower's tensors (its features are cast into the text embeddings); like the
# multi-token-prediction head ("mtp."), they do not set the language model's activation dtype.
_NOT_LANGUAGE_MODEL = ("vision_tower.", "visual.", "model.visual.")
# Gated-DeltaNet parameters that only enter the float32 recurrence (both libraries compute the gate
# in float32); the converters keep A_log in float32 when they cast everything else to bfloat16.
_RECURRENCE_ONLY = ("A_log", "dt_bias")
# A safetensors header is a small JSON table; anything claiming more than this is not a real header.
_THINKING_MARKERS = ("enable_thinking", "<think>")


@dataclass(frozen=True)
class ModelInfo:
    """A checkpoint as far as the app, the CLI and the memory estimate need to know it."""

    path: Path
    name: str  # folder name, or "org/name" for a Hugging Face cache snapshot
    model_type: str
    architecture: str
    is_vision: bool
    quant_bits: int | None  # None = not quantized
    quant_group_size: int | None
    param_count: int  # logical parameters: packed quantized weights unpacked, no scales/biases
    weight_bytes: int  # tensor bytes, as stored
    context_length: int | None
    supports_thinking: bool
    num_layers: int
    num_full_attention_layers: int
    full_attention_interval: int
    num_key_value_heads: int
    head_dim: int
    linear_num_key_heads: int
    linear_num_value_heads: int
    linear_key_head_dim: int
    linear_value_head_dim: int
    linear_conv_kernel_dim: int
    layer_types: tuple[str, ...] | None = None
    # What the language model computes in, so the dtype of its KV cache and conv state (see
    # ``_activation_dtype``): "bfloat16" for the released checkpoints, "float32" for float32 ones.
    activation_dtype: str = "bfloat16"
    quant_mode: str | None = None  # "affine", "mxfp4", "nvfp4", "mxfp8"
    quant_bits_range: tuple[int, int] | None = None  # fewest and most bits over quantized layers
    weight_dtype: str | None = (
        None  # the floating dtype of most weight bytes: "bfloat16", "float32"...
    )
    # In a quantized checkpoint, the dtype of language-model linear layers left unquantized (if any).
    unquantized_linear_dtype: str | None = None
    # Bytes of bfloat16/float16 tensors (weights, quantization scales and biases): MLX's CPU backend
    # holds them as float32, twice as many (runtime._float32_on_cpu).
    half_float_bytes: int = 0
    # The vision tower's share of ``weight_bytes`` and of ``half_float_bytes``: only rank 0 of a
    # model split over several Macs holds it (engine_mlx.distributed.vision).
    vision_weight_bytes: int = 0
    vision_half_float_bytes: int = 0
    hidden_size: int = 0  # the language model's (0: config.json does not say)
    mtp: MtpHead | None = None  # the model's own multi-token-prediction head (engine_mlx.mtp_head)
    mtp_error: str | None = None  # why its mtp/ folder cannot be used, when it cannot

    @property
    def num_linear_attention_layers(self) -> int:
        return self.num_layers - self.num_full_attention_layers

    @property
    def precision(self) -> str:
        """How the weights are stored, for people: "4-bit", "mixed 4–8 bit", "MXFP4", "bfloat16"."""
        if not self.quant_bits:
            return self.weight_dtype or "16-bit"
        low, high = self.quant_bits_range or (self.quant_bits, self.quant_bits)
        bits = f"{low}-bit" if low == high else f"mixed {low}–{high} bit"
        mode = self.quant_mode or "affine"
        if mode != "affine":
            bits = mode.upper() if low == high else f"{mode.upper()}, {bits}"
        if self.unquantized_linear_dtype:  # e.g. router gates kept in bfloat16
            bits += f" + {self.unquantized_linear_dtype}"
        return bits


class SourceKind(str, Enum):
    HF_CACHE = "hf_cache"
    LMSTUDIO = "lmstudio"
    USER = "user"


@dataclass(frozen=True)
class SearchRoot:
    path: Path
    kind: SourceKind


@dataclass(frozen=True)
class DiscoveredModel:
    """A folder with a config.json; ``info`` when it is usable, else ``error`` says why not."""

    path: Path
    source: SourceKind
    info: ModelInfo | None
    error: str | None
    other_model: bool = False  # not a Qwen3.5-family checkpoint at all (listed only on request)

    @property
    def ok(self) -> bool:
        return self.info is not None


# ------------------------------------------------------------------------------------- templates


def _template_from(value: Any) -> str | None:
    """A chat_template value: a string, or a list of {"name", "template"} (the "default" wins)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        chosen = named.get("default") or next((t for t in named.values() if t), None)
        return chosen if isinstance(chosen, str) else None
    return None


def _read_json(path: Path) -> Any:
    with path.open("rb") as f:
        return json.load(f)


def read_chat_template(path: Path | str) -> str | None:
    """The chat template from chat_template.jinja, chat_template.json or tokenizer_config.json."""
    folder = Path(path)
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        try:
            return jinja.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            pass
    for name in ("chat_template.json", "tokenizer_config.json"):
        file = folder / name
        if not file.is_file():
            continue
        try:
            data = _read_json(file)
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and (template := _template_from(data.get("chat_template"))):
            return template
    return None


# ------------------------------------------------------------------------------------ safetensors


@dataclass(frozen=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def _read_safetensors_header(folder: Path, shard: Path, rel: str | None = None) -> list[_Tensor]:
    """The tensor table of one shard, checked against the file without reading any tensor.

    Raises CheckpointError naming the shard (and the tensor) when the file is truncated, not
    safetensors, holds a dtype MLX cannot load, or its offsets are not one contiguous buffer that
    ends exactly where the file does.
    """
    rel = rel or shard.name
    try:
        size = shard.stat().st_size
        with shard.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    folder, f"weight shard {rel} is truncated ({size} bytes); download it again"
                )
            header_len = header_length(prefix)
            if header_len > MAX_HEADER_BYTES or header_len > size - 8:
                raise CheckpointError(
                    folder,
                    f"weight shard {rel} is truncated or not a safetensors file "
                    f"(header of {header_len} bytes in a {size}-byte file); download it again",
                )
            raw = f.read(header_len)
    except OSError as e:
        reason = f"weight shard {rel} cannot be read ({e.strerror or e})"
        raise CheckpointError(folder, reason) from None
    try:
        header = parse_header(raw)
    except HeaderError as e:
        raise CheckpointError(
            folder, f"weight shard {rel} has a damaged safetensors header ({e}); download it again"
        ) from None
    entries = [(t.begin, t.end, t.name, t.dtype, t.shape) for t in header.tensors]
    tensors = []
    data_end = 0
    for begin, end, name, dtype, shape in sorted(entries):
        if dtype not in DTYPE_SIZES:
            raise CheckpointError(
                folder, f"tensor {name} in {rel} has dtype {dtype}, which MLX cannot load"
            )
        nbytes = math.prod(shape) * DTYPE_SIZES[dtype]
        if begin != data_end or end - begin != nbytes or min(shape, default=0) < 0:
            raise CheckpointError(
                folder,
                f"tensor {name} in {rel} has offsets {begin}–{end} where {data_end}–"
                f"{data_end + nbytes} belong ({dtype} {list(shape)}); the file is damaged, "
                "download it again",
            )
        tensors.append(_Tensor(name, dtype, shape, nbytes))
        data_end = end
    needed = 8 + header_len + data_end
    if size < needed:
        raise CheckpointError(
            folder,
            f"weight shard {rel} is truncated ({size} bytes, its header needs {needed}); "
            "download it again",
        )
    if size > needed:
        raise CheckpointError(
            folder,
            f"weight shard {rel} has {size - needed} bytes after its last tensor "
            f"({size} bytes, its header accounts for {needed}); the file is damaged, "
            "download it again",
        )
    return tensors


def _weight_shards(folder: Path, root: Path) -> list[tuple[str, Path]]:
    """The shards to read, as (name, path): those the index names, else all *.safetensors.

    Every shard the index names must exist and resolve inside ``root`` (the model's own folder).
    """
    index = folder / SAFETENSORS_INDEX
    if index.is_file():
        try:
            weight_map = _read_json(index)["weight_map"]
            names = sorted(set(weight_map.values()))
            if not all(isinstance(n, str) and n for n in names):
                raise TypeError("a shard name is not a string")
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise CheckpointError(
                folder, f"{SAFETENSORS_INDEX} is not a valid safetensors index; download it again"
            ) from None
        for name in names:
            if not _inside(folder / name, root):
                raise CheckpointError(
                    folder,
                    f"{SAFETENSORS_INDEX} names weight file {name}, which is outside the model "
                    "folder; QwenDesk reads nothing outside a model's folder",
                )
        # is_file() follows symlinks: a HF cache link to a blob never downloaded counts as missing.
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            listed = ", ".join(missing[:3])
            if len(missing) > 3:
                listed += f" and {len(missing) - 3} more"
            raise CheckpointError(
                folder,
                f"weight shard {listed} named in {SAFETENSORS_INDEX} is missing; "
                "the download is incomplete",
            )
        return [(n, folder / n) for n in names]
    shards = sorted(p for p in folder.glob("*.safetensors") if p.is_file())
    if shards:
        return [(p.name, p) for p in shards]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(
            folder,
            f"has only PyTorch pickle weights ({pickles[0]}); QwenDesk loads only .safetensors "
            "weights, because pickle files can run code when loaded — use an MLX or safetensors "
            "conversion of the model",
        )
    raise CheckpointError(folder, "has no .safetensors weight files")


def _index_mismatch(weight_map: dict[str, Any], tables: dict[str, list[_Tensor]]) -> str | None:
    """A tensor the index places in a shard whose header does not hold it, as a reason."""
    held = {name: {t.name for t in tensors} for name, tensors in tables.items()}
    for tensor, shard in weight_map.items():
        if tensor not in held.get(shard, ()):
            return (
                f"tensor {tensor} is missing from {shard} ({SAFETENSORS_INDEX} puts it there); "
                "the file is damaged or from another download, download it again"
            )
    return None


# -------------------------------------------------------------------------------------- safety


def containment_root(folder: Path) -> Path:
    """The folder nothing may be read outside of: the model folder itself or, for a Hugging Face
    cache snapshot (``models--org--name/snapshots/<rev>``, whose files link into ``../../blobs``),
    the repo's own cache folder ``models--org--name``.
    """
    for candidate in (Path(os.path.abspath(folder)), folder.resolve()):  # as named, then as linked
        if (repo := hf_cache.snapshot_repo_folder(candidate)) is not None:
            return repo.resolve()
    return folder.resolve()


def _inside(path: Path, root: Path) -> bool:
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a symlink loop
        return False


def _code_key(value: Any, where: str = "") -> str | None:
    """The first key (as a dotted path) that names Python to import, anywhere in a JSON value."""
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            if key in CODE_KEYS and item:
                return path
            if found := _code_key(item, path):
                return found
    elif isinstance(value, list):
        for item in value:
            if found := _code_key(item, where):
                return found
    return None


def _ships_module(package: str, name: Any) -> bool:
    """Whether ``package`` (a package of the installed mlx-lm) has a module ``name``, found without
    importing it."""
    import importlib.util

    if not isinstance(name, str) or not name.isidentifier():
        return False
    try:
        return importlib.util.find_spec(f"{package}.{name}") is not None
    except ImportError:
        return False


def check_folder_safety(folder: Path) -> None:
    """Refuse a folder that would make a loader run its code or read files outside it.

    Runs before anything in the folder is imported or loaded: every entry must resolve inside
    :func:`containment_root`; no settings file may name Python to import (``model_file``,
    ``auto_map``, ``custom_pipelines``, or an mlx-lm chat-template/tool-parser module the pinned
    mlx-lm does not ship); the folder may hold no Python files (the loaders import them when a
    config names them, and the Hub download patterns fetch them for that).
    """
    root = containment_root(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError as e:
        raise CheckpointError(folder, f"cannot be read ({e.strerror or e})") from None
    for entry in entries:
        if not _inside(entry, root):
            raise CheckpointError(
                folder,
                f"{entry.name} links outside the model folder (to {os.path.realpath(entry)}); "
                "QwenDesk reads nothing outside a model's folder",
            )
    for entry in entries:
        if entry.suffix.lower() != ".json" or entry.name in _DATA_JSON or not entry.is_file():
            continue
        try:
            data = _read_json(entry)
        except (OSError, ValueError):
            continue  # config.json is reported by _load_config; the loaders fail on the rest
        if key := _code_key(data):
            raise CheckpointError(
                folder,
                f"{entry.name} names Python code to import ({key}); QwenDesk never runs code "
                "from a model folder, so it refuses this one",
            )
        if entry.name != "tokenizer_config.json" or not isinstance(data, dict):
            continue
        for key, package in _MLX_LM_MODULE_KEYS.items():
            value = data.get(key)
            if value is not None and not _ships_module(package, value):
                raise CheckpointError(
                    folder,
                    f"{entry.name} names a Python module to import ({key} = {value!r}) that "
                    "mlx-lm does not ship; QwenDesk never runs code from a model folder",
                )
    for entry in entries:
        if entry.suffix.lower() in CODE_SUFFIXES:
            raise CheckpointError(
                folder,
                f"holds Python code ({entry.name}); QwenDesk never runs code from a model folder, "
                "so it refuses this one — use a conversion without custom code",
            )
    if (folder / _OFFLOAD_INDEX).exists():
        raise CheckpointError(
            folder,
            f"is an mlx-vlm expert-offload folder ({_OFFLOAD_INDEX}), which QwenDesk does not load",
        )


def _quantization(config: dict[str, Any]) -> dict[str, Any]:
    for key in ("quantization", "quantization_config"):
        value = config.get(key)
        if isinstance(value, dict) and isinstance(value.get("bits"), int):
            return value
    return {}


def _bits_range(quant: dict[str, Any]) -> tuple[int, int] | None:
    """The default bits and every per-layer override's (mlx-lm/mlx-vlm write one per special layer)."""
    if not isinstance(quant.get("bits"), int):
        return None
    bits = [quant["bits"]]
    bits += [
        v["bits"] for v in quant.values() if isinstance(v, dict) and isinstance(v.get("bits"), int)
    ]
    return min(bits), max(bits)


_DTYPE_NAMES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


def _weight_dtype(tensors: Iterable[_Tensor]) -> str | None:
    by_dtype: dict[str, int] = {}
    for t in tensors:
        if t.dtype in _DTYPE_NAMES and not t.name.endswith((".scales", ".biases")):
            by_dtype[t.dtype] = by_dtype.get(t.dtype, 0) + t.nbytes
    return _DTYPE_NAMES[max(by_dtype, key=by_dtype.__getitem__)] if by_dtype else None


_UNQUANTIZED_PREFIXES = ("vision_tower.", "model.visual.", "visual.", "mtp.")  # never quantized


def _unquantized_linear_dtype(tensors: list[_Tensor], quant: dict[str, Any]) -> str | None:
    """The dtype of 2-D language-model weights that have no quantization scales, in a quantized checkpoint."""
    if not quant:
        return None
    names = {t.name for t in tensors}
    for t in tensors:
        if (
            t.dtype in _DTYPE_NAMES
            and len(t.shape) == 2
            and t.name.endswith(".weight")
            and not t.name.startswith(_UNQUANTIZED_PREFIXES)
            and t.name.removesuffix(".weight") + ".scales" not in names
        ):
            return _DTYPE_NAMES[t.dtype]
    return None


def _count_params(tensors: Iterable[_Tensor], quant: dict[str, Any]) -> int:
    """Logical parameters: a uint32 packed weight with b bits holds 32/b values per element.

    MLX's per-layer overrides (``quantization["<module path>"] = {"bits": ..}``) are honoured;
    the quantization ``scales`` and ``biases`` are bookkeeping, not parameters.
    """
    default_bits = quant.get("bits")
    total = 0
    for t in tensors:
        if t.name.endswith((".scales", ".biases")):
            continue
        count = math.prod(t.shape)
        if t.dtype == "U32" and default_bits and t.name.endswith(".weight"):
            override = quant.get(t.name.removesuffix(".weight"))
            bits = default_bits
            if isinstance(override, dict):
                bits = override.get("bits", default_bits)
            count = count * 32 // bits
        total += count
    return total


_PACKED_BITS = (1, 2, 3, 4, 5, 6, 8)
_GROUP_SIZES = (16, 32, 64, 128)


def _packing_problem(tables: dict[str, list[_Tensor]]) -> str | None:
    """A packed quantized weight whose shape cannot go with its scales at any supported packing.

    mlx-lm infers a layer's bits and group size from these two shapes, so a damaged shape would
    otherwise surface as an unsupported bit width rather than as the tensor it is. Only what holds
    for every packing is checked (same leading dimensions, a supported bits × group size): the
    config's bits are not required, because the loaders accept layers the config does not name.
    """
    shapes = {t.name: (t.shape, rel) for rel, table in tables.items() for t in table}
    for name, (scales, _) in shapes.items():
        base = name.removesuffix(".scales")
        if base == name or f"{base}.weight" not in shapes or not scales:
            continue
        weight, rel = shapes[f"{base}.weight"]
        fits = (
            len(weight) == len(scales)
            and weight[:-1] == scales[:-1]
            and any(
                weight[-1] * 32 == scales[-1] * group * bits
                for bits in _PACKED_BITS
                for group in _GROUP_SIZES
            )
        )
        if not fits:
            return (
                f"tensor {base}.weight in {rel} has shape {list(weight)}, which cannot hold the "
                f"packed weights its scales {list(scales)} describe; the file is damaged or does "
                "not match config.json"
            )
    return None


# ----------------------------------------------------------------------------------------- config


def _has_tokenizer(folder: Path) -> bool:
    if (folder / "tokenizer.json").is_file():
        return True
    vocab_files = ("vocab.json", "tokenizer.model", "vocab.txt")
    return (folder / "tokenizer_config.json").is_file() and any(
        (folder / v).is_file() for v in vocab_files
    )


def _int(folder: Path, section: dict[str, Any], key: str, default: int | None = None) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        if value is None:
            reason = f"config.json does not give {key}; the file is incomplete"
        else:
            reason = f"config.json has {key} = {value!r}, which is not a whole number"
        raise CheckpointError(folder, reason)
    return value


def _activation_dtype(
    tensors: Iterable[_Tensor], config: dict[str, Any], text: dict[str, Any]
) -> str:
    """The dtype the language model computes in, which its KV cache and conv state take.

    MLX promotes mixed operands (bfloat16 with float32, or bfloat16 with float16, gives float32), so
    the activations have the widest dtype among the language model's unquantized floating-point
    tensors: embeddings, norms, quantization scales. config.json's dtype is only a fallback, since
    ``mlx_lm.convert --dtype`` casts the tensors and leaves the config as it was.
    """
    found = {
        t.dtype
        for t in tensors
        if t.dtype in _ACTIVATION_DTYPES
        and not t.name.startswith(_NOT_LANGUAGE_MODEL)
        and "mtp." not in t.name
        and not t.name.endswith(_RECURRENCE_ONLY)
    }
    if len(found) == 1:
        return _ACTIVATION_DTYPES[found.pop()]
    if found:
        return "float32"
    for section in (text, config):
        for key in ("dtype", "torch_dtype"):
            if section.get(key) in _ACTIVATION_DTYPES.values():
                return section[key]
    return "bfloat16"


def _display_name(folder: Path) -> str:
    """'org/name' for a HF cache snapshot (models--org--name/snapshots/<rev>), else the name."""
    return hf_cache.snapshot_repo_id(folder) or folder.name


def _load_config(folder: Path) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(folder, "has no config.json, so it is not a model folder")
    try:
        config = _read_json(config_path)
    except (OSError, ValueError) as e:
        raise CheckpointError(folder, f"config.json is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(folder, "config.json does not hold a JSON object")
    return config


def inspect_checkpoint(path: Path | str, *, check_tensors: bool = True) -> ModelInfo:
    """Everything the app needs to know about a model folder, without loading any tensor.

    Refuses (CheckpointError, one line naming the folder and the reason) a folder that names code
    to run or links outside itself (:func:`check_folder_safety`), damaged shards, and, with
    ``check_tensors``, tensors that do not fit the architecture config.json describes
    (:mod:`engine_mlx.weight_check`; off only for header-only fixtures of made-up tensors).
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise CheckpointError(
            folder, f"{what}; choose the model's folder (the one with config.json)"
        )
    check_folder_safety(folder)
    config = _load_config(folder)

    architectures = config.get("architectures")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        shown = model_type or (architectures[0] if architectures else "unknown")
        raise UnsupportedModelError(
            folder,
            f"architecture {shown} is not a Qwen3.5-family model; "
            "QwenDesk runs qwen3_5 / qwen3_5_moe checkpoints",
        )
    architecture = model_type
    if isinstance(architectures, list) and architectures:
        architecture = str(architectures[0])

    shards = _weight_shards(folder, containment_root(folder))
    tables = {rel: _read_safetensors_header(folder, shard, rel) for rel, shard in shards}
    tensors = [t for table in tables.values() for t in table]
    for stray in sorted(
        folder.glob("*.safetensors")
    ):  # mlx-lm loads model*.safetensors, index or not
        if stray.name not in tables and stray.name.startswith("model"):
            tables[stray.name] = _read_safetensors_header(folder, stray)
    index = folder / SAFETENSORS_INDEX
    if index.is_file() and (reason := _index_mismatch(_read_json(index)["weight_map"], tables)):
        raise CheckpointError(folder, reason)
    if not _has_tokenizer(folder):
        raise CheckpointError(
            folder,
            "has no tokenizer (tokenizer.json, or tokenizer_config.json with vocab.json); "
            "download the complete model",
        )
    if reason := _packing_problem(tables):
        raise CheckpointError(folder, reason)
    if check_tensors:
        from .weight_check import check_tensors as check_against_architecture

        shard_of = {t.name: rel for rel, table in tables.items() for t in table}
        check_against_architecture(folder, isinstance(config.get("vision_config"), dict), shard_of)

    text = config.get("text_config")
    text = text if isinstance(text, dict) else config
    num_layers = _int(folder, text, "num_hidden_layers")
    interval = _int(folder, text, "full_attention_interval", 4)
    if interval < 1:
        raise CheckpointError(folder, f"config.json has full_attention_interval = {interval}")
    layer_types = text.get("layer_types")
    if isinstance(layer_types, list) and layer_types:
        layer_types = tuple(str(t) for t in layer_types)
        full_layers = sum(1 for t in layer_types if t == "full_attention")
    else:
        layer_types = None
        # Layers interval-1, 2*interval-1, ... (0-based) are full attention, as in mlx-lm/mlx-vlm.
        full_layers = num_layers // interval
    head_dim = text.get("head_dim")
    if not isinstance(head_dim, int):
        head_dim = _int(folder, text, "hidden_size") // _int(folder, text, "num_attention_heads")
    quant = _quantization(config)
    context = text.get("max_position_embeddings", config.get("max_position_embeddings"))
    template = read_chat_template(folder) or ""
    vision = [t for t in tensors if t.name.startswith(_NOT_LANGUAGE_MODEL)]
    mtp, mtp_error = None, None
    try:
        mtp = find_head(folder, config, [(t.name, t.nbytes) for t in tensors])
    except CheckpointError as e:  # the model is usable; its head is not
        mtp_error = str(e)

    return ModelInfo(
        path=folder,
        name=_display_name(folder),
        model_type=model_type,
        architecture=architecture,
        is_vision=isinstance(config.get("vision_config"), dict),
        quant_bits=quant.get("bits"),
        quant_group_size=quant.get("group_size"),
        param_count=_count_params(tensors, quant),
        weight_bytes=sum(t.nbytes for t in tensors),
        half_float_bytes=sum(t.nbytes for t in tensors if t.dtype in ("BF16", "F16")),
        vision_weight_bytes=sum(t.nbytes for t in vision),
        vision_half_float_bytes=sum(t.nbytes for t in vision if t.dtype in ("BF16", "F16")),
        context_length=context if isinstance(context, int) else None,
        supports_thinking=any(marker in template for marker in _THINKING_MARKERS),
        num_layers=num_layers,
        num_full_attention_layers=full_layers,
        full_attention_interval=interval,
        num_key_value_heads=_int(folder, text, "num_key_value_heads"),
        head_dim=head_dim,
        linear_num_key_heads=_int(folder, text, "linear_num_key_heads", 0),
        linear_num_value_heads=_int(folder, text, "linear_num_value_heads", 0),
        linear_key_head_dim=_int(folder, text, "linear_key_head_dim", 0),
        linear_value_head_dim=_int(folder, text, "linear_value_head_dim", 0),
        linear_conv_kernel_dim=_int(folder, text, "linear_conv_kernel_dim", 0),
        layer_types=layer_types,
        activation_dtype=_activation_dtype(tensors, config, text),
        quant_mode=quant.get("mode", "affine") if quant else None,
        quant_bits_range=_bits_range(quant),
        weight_dtype=_weight_dtype(tensors),
        unquantized_linear_dtype=_unquantized_linear_dtype(tensors, quant),
        hidden_size=text["hidden_size"] if isinstance(text.get("hidden_size"), int) else 0,
        mtp=mtp,
        mtp_error=mtp_error,
    )


# -------------------------------------------------------------------------------------- discovery


def default_search_roots() -> list[SearchRoot]:
    """Where models usually are: the HF hub cache (found as huggingface_hub does), LM Studio."""
    return [
        SearchRoot(hf_cache.cache_root(), SourceKind.HF_CACHE),
        *(SearchRoot(root, SourceKind.LMSTUDIO) for root in hf_cache.lmstudio_roots()),
    ]


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _hf_cache_candidates(root: Path) -> Iterator[Path]:
    for repo_dir in _subdirs(root):
        if hf_cache.is_repo_folder(repo_dir):
            snapshot = hf_cache.current_snapshot(repo_dir)
            if snapshot is not None and (snapshot / "config.json").is_file():
                yield snapshot


def _folder_candidates(root: Path, depth: int = 2) -> Iterator[Path]:
    """``root`` if it is a model folder, else model folders up to ``depth`` levels below it."""
    if (root / "config.json").is_file():
        yield root
        return
    if hf_cache.is_repo_folder(root):  # a user pointed at one repo inside a Hugging Face cache
        snapshot = hf_cache.current_snapshot(root)
        if snapshot is not None and (snapshot / "config.json").is_file():
            yield snapshot
        return
    if depth > 0:
        for child in _subdirs(root):
            yield from _folder_candidates(child, depth - 1)


def _candidates(root: SearchRoot) -> Iterator[Path]:
    if root.kind is SourceKind.HF_CACHE:
        return _hf_cache_candidates(root.path)
    return _folder_candidates(root.path)


def discover_models(
    extra_dirs: Iterable[Path | str] = (),
    roots: Iterable[SearchRoot] | None = None,
    *,
    check_tensors: bool = True,
    inspect: Callable[[Path], ModelInfo] | None = None,
) -> list[DiscoveredModel]:
    """Every folder with a config.json under the search roots, each inspected (by ``inspect``, e.g.
    an :class:`engine_mlx.inspections.InspectionCache`'s, else :func:`inspect_checkpoint`).

    Unusable folders are listed too, with the reason, so a user can see why a model is not offered;
    callers filter on ``.ok``. Nothing here touches the network.
    """
    if inspect is None:

        def inspect(folder: Path) -> ModelInfo:
            return inspect_checkpoint(folder, check_tensors=check_tensors)

    search = list(default_search_roots() if roots is None else roots)
    search += [SearchRoot(Path(d).expanduser(), SourceKind.USER) for d in extra_dirs]
    found: list[DiscoveredModel] = []
    seen: set[Path] = set()
    for root in search:
        if not root.path.is_dir():
            continue
        for folder in _candidates(root):
            key = folder.resolve()
            if key in seen:
                continue
            seen.add(key)
            try:
                info = inspect(folder)
                found.append(DiscoveredModel(folder, root.kind, info, None))
            except UnsupportedModelError as e:
                found.append(DiscoveredModel(folder, root.kind, None, e.reason, other_model=True))
            except CheckpointError as e:
                found.append(DiscoveredModel(folder, root.kind, None, e.reason))
            except OSError as e:
                found.append(DiscoveredModel(folder, root.kind, None, f"cannot be read ({e})"))
    return found


__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "DiscoveredModel",
    "ModelInfo",
    "SearchRoot",
    "SourceKind",
    "check_folder_safety",
    "containment_root",
    "default_search_roots",
    "discover_models",
    "inspect_checkpoint",
    "read_chat_template",
]
