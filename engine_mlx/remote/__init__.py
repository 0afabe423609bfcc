"""The app as a client of a QwenDesk server (issue 20): ``RemoteEngine`` answers the engine's calls with
the typed events of ``engine_mlx.events``, from ``python -m engine_mlx serve`` on another machine.

``connection`` (the server's address and key, checked), ``wire`` (typed input to a request body, streamed
chunks back to events), ``engine`` (RemoteEngine: the model list, streaming, Stop).
"""
