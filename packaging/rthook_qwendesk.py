# PyInstaller runtime hook: runs in the frozen app before any of its modules is imported.
import os

# Models are local folders: Hugging Face code must never try the network or send telemetry. The
# engine package is the one home of that environment; the bundle forces it rather than defaulting it.
# (A download the user starts lifts huggingface_hub's offline flag for that action only.)
from engine_mlx import OFFLINE_ENV

os.environ.update(OFFLINE_ENV)

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# transformers checks for torch/tf/flax at import; none is bundled, so don't let it look for them
# in some other environment on the machine.
os.environ.setdefault("USE_TORCH", "0")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
