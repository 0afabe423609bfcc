"""QwenDesk's local OpenAI-compatible API: the loaded model, served on 127.0.0.1 (issue 10).

``config`` (ServerConfig, defaults), ``runner`` (ApiServer on uvicorn), ``app`` (routes, streaming,
request log), ``requests`` (a request body into the engine's typed input), ``responses`` and
``tool_calls`` (engine events into OpenAI messages), ``media`` (inline images on disk, capped),
``security`` (Host, Origin, key), ``errors``.
"""
