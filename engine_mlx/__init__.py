"""QwenDesk's engine: Qwen3.5 checkpoints through MLX, with no Qt and no network.

No network at run time and no telemetry: huggingface_hub and transformers read these when they are
first imported, which is always after this package (mlx-vlm would otherwise try the Hub for a
processor file a local checkpoint lacks).
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
