"""Screenshots of a tool call in the real app for the README: the consent card, then the call and the answer.

    QT_QPA_PLATFORM=offscreen .venv/bin/python -m app.screenshots_tools [out_dir]

The demo model (random weights) cannot choose to call a tool, so its two replies are forced through the
real engine, tokenizer and detokenizer (``ToolsController.step_settings``, the tests' hook): the call to
the built-in Files tool and the answer after it. Everything else is real: the tool loop, the consent
card clicked, the MCP call over the shared folder, the result in the next step's prompt.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from .paths import app_paths
from .screenshots import _settle, _wait, main
from .store import ChatSettings, ThinkingMode

QUESTION = "What do my trip notes say about the quokkas?"
CALL = "<tool_call>\n<function=read_text>\n<parameter=path>\ntrip-notes.md\n</parameter>\n</function>\n</tool_call>"
ANSWER = (
    "Your notes say the quokkas live on **Rottnest Island**, and the first ferry leaves at 7:30."
)
NOTES = "# Perth trip\n\n- Quokkas: Rottnest Island, take the 7:30 ferry from Fremantle.\n- Kings Park at sunset.\n"


def shoot(out_dir: Path) -> list[Path]:
    from PySide6.QtWidgets import QApplication

    from engine_mlx.forcing import ForcedText
    from engine_mlx.settings import GenerationSettings
    from engine_mlx.tools.host import ServerState

    from . import theme
    from .controllers.tools import ToolPrefs
    from .window import MainWindow

    app = QApplication.instance() or QApplication([sys.argv[0]])
    app.setApplicationName("QwenDesk")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="qwendesk-shot-"))
    shared = Path(tempfile.mkdtemp(prefix="trip-"))
    (shared / "trip-notes.md").write_text(NOTES, encoding="utf-8")
    theme.apply(app, theme.Scheme.LIGHT)
    window = MainWindow(app_paths(data), reload_last=False)
    window.resize(1360, 1020)
    window.show()
    window.models.use_demo()
    _wait(lambda: window.models.loaded_info is not None, 300)
    window.tools.set_prefs(ToolPrefs((str(shared),)))
    _wait(lambda: any(s.state is ServerState.READY for s in window.tools.status()), 60)
    window.chat.set_settings(
        ChatSettings(thinking=ThinkingMode.OFF).with_generation(max_tokens=200)
    )
    window.tools.step_settings = lambda step: GenerationSettings(
        thinking=False,
        max_tokens=200,
        temperature=0.0,
        forced=ForcedText(CALL if step == 0 else ANSWER),
    )
    window.composer.edit.setPlainText(QUESTION)
    window.composer.send_button.click()
    _wait(lambda: window.tools_wiring.cards, 120)
    _settle(600)
    window.transcript.scroll_to_bottom()
    _settle(300)
    saved = [out_dir / "tools-consent.png", out_dir / "tools-answer.png"]
    window.grab().save(str(saved[0]))
    (card,) = window.tools_wiring.cards.values()
    card.run_button.click()
    _wait(lambda: not window.chat.busy, 120)
    from .views.tool_call import call_blocks

    for block in call_blocks(window.transcript.last_answer()):
        block.toggle.setChecked(True)
    _settle(800)
    window.transcript.scroll_to_bottom()
    _settle(300)
    window.grab().save(str(saved[1]))
    window.close()
    return saved


if __name__ == "__main__":
    sys.exit(main(shoot))
