"""Who may run what: Allow, Ask or Block per server, overridden per tool; kept beside ``mcp.json``.

The table changes only through the user's own choices (a consent card, Settings ▸ Tools); a tool's
result is data and never reaches it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path


class Consent(str, Enum):
    ALLOW = "allow"
    ASK = "ask"
    BLOCK = "block"


@dataclass(frozen=True)
class ConsentTable:
    servers: dict[str, Consent] = field(default_factory=dict)
    tools: dict[str, Consent] = field(default_factory=dict)  # "server/tool" -> consent

    def decide(self, server: str, tool: str) -> Consent:
        """The tool's own choice (on this server, else on any: "*/tool"), else its server's, else every
        server's ("*"), else Ask."""
        return (
            self.tools.get(f"{server}/{tool}")
            or self.tools.get(f"*/{tool}")
            or self.servers.get(server)
            or self.servers.get("*")
            or Consent.ASK
        )

    def with_tool(self, server: str, tool: str, consent: Consent) -> ConsentTable:
        return replace(self, tools={**self.tools, f"{server}/{tool}": consent})

    def with_server(self, server: str, consent: Consent) -> ConsentTable:
        return replace(self, servers={**self.servers, server: consent})

    def to_json(self) -> dict:
        return {
            "servers": {k: v.value for k, v in self.servers.items()},
            "tools": {k: v.value for k, v in self.tools.items()},
        }


def load_consent(path: Path) -> ConsentTable:
    """The saved table; an unreadable or malformed file counts as empty (everything asks)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return ConsentTable(
            {str(k): Consent(v) for k, v in data.get("servers", {}).items()},
            {str(k): Consent(v) for k, v in data.get("tools", {}).items()},
        )
    except (OSError, ValueError, AttributeError, TypeError):
        return ConsentTable()


def save_consent(path: Path, table: ConsentTable) -> None:
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(table.to_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)
