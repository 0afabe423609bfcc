"""Model downloads and the vision/MTP graft: the engine's only network code.

Nothing here runs unless a user starts a download or a graft; :func:`network.online` lifts
``HF_HUB_OFFLINE`` for exactly that action. Modules:

- ``network``: the offline switch, the endpoint, one-line errors for Hub failures;
- ``remote``: a repo's file list (sizes, LFS sha256) and safetensors headers and byte ranges;
- ``download``: resumable, verified downloads into the Hugging Face cache layout;
- ``graft``: the vision tower (and MTP head) of an original release onto a text-only conversion;
- ``convert``: fetched release tensors -> mlx-vlm's layout, with mlx-vlm's own sanitize and MTP splitter;
- ``catalog``: the Qwen3.5 MLX repos QwenDesk offers (``catalog.json``);
- ``commands``: the ``download`` and ``add-vision`` subcommands of ``python -m engine_mlx``.
"""
