"""QwenDesk's engine: Qwen3.5 checkpoints through MLX, with no Qt and no network.

No network at run time and no telemetry: huggingface_hub and transformers read these when they are
first imported, which is always after this package (mlx-vlm would otherwise try the Hub for a
processor file a local checkpoint lacks).
"""

import os

# The one home of the offline environment (the app's self-test and the bundle's launcher apply it too).
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TRANSFORMERS_OFFLINE": "1"}

for _name, _value in OFFLINE_ENV.items():
    os.environ.setdefault(_name, _value)
