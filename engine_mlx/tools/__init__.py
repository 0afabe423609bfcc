"""Tools for the model: MCP servers (stdio and Streamable HTTP) and the built-in Files tool.

``config`` reads and checks ``mcp.json``; ``host`` runs the servers off the caller's thread and calls
their tools with a timeout and a size cap; ``files`` is the built-in read-only Files server;
``consent`` holds who may run what. Nothing here imports Qt.
"""
