# PyInstaller runtime hook: runs in the frozen app before any of its modules is imported.
import os

# Models are local folders: Hugging Face code must never try the network or send telemetry.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# transformers checks for torch/tf/flax at import; none is bundled, so don't let it look for them
# in some other environment on the machine.
os.environ.setdefault("USE_TORCH", "0")
os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("USE_FLAX", "0")
