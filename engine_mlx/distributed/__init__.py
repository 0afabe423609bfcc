"""One model across several Macs on MLX's distributed runtime (``mlx.distributed``, ``mlx.launch``).

Every rank runs the same command; rank 0 owns the Engine (prompts, sampling, snapshots, HTTP) and
broadcasts each model call, and the other ranks replay it on their own shard (``follower``).
"""
