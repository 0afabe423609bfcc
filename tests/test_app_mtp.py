"""The app and the model's MTP head: the status bar shows the acceptance of an answer that drafted,
the model picker says which models have a head and offers MTP Auto/Off for them, remembered, and the
engine's next answer really decodes as chosen."""

from __future__ import annotations

import test_app_window as base

from app.controllers.models import MTP_PREF, ModelEntry
from app.store import ThinkingMode
from app.views.model_picker import ModelPicker
from engine_mlx.checkpoint import inspect_checkpoint
from engine_mlx.memory import estimate_fit
from engine_mlx.tiny_mtp import DEMO_PROMPTS

GREEDY = dict(thinking=ThinkingMode.ON, temperature=0.0, presence_penalty=0.0, max_tokens=24)


def answer(window, qt_wait):
    """Send the first message the head was trained on; the stored answer's figures."""
    base.send(window, qt_wait, DEMO_PROMPTS[0], **GREEDY)
    stats = base.stored(window)[-1].stats
    assert stats is not None and stats.generated_tokens > 0
    return stats


def picker_on(window, qt_wait, folder) -> ModelPicker:
    """The picker with ``folder`` listed (added as the user adds one) and selected."""
    window.models.add_folder(folder)
    qt_wait(lambda: any(e.info is not None and e.path == folder for e in window.models.entries))
    picker = ModelPicker(window.models, window)
    row = next(i for i, e in enumerate(picker.entries) if e.info is not None and e.path == folder)
    picker.table.selectRow(row)
    return picker


def choose(picker: ModelPicker, mode: str) -> None:
    """Pick an item as the user does: the combo box's own signal runs the picker's handler."""
    index = picker.mtp.findData(mode)
    assert index >= 0 and picker.mtp.currentIndex() != index
    picker.mtp.setCurrentIndex(index)  # emits currentIndexChanged


def test_mtp_auto_drafts_off_does_not_and_the_choice_is_remembered(
    make_window, qt_wait, tiny_mtp_model_dir, tmp_path
):
    data = tmp_path / "data"
    window = make_window(data_dir=data, model=tiny_mtp_model_dir)
    assert window.models.loaded_info.mtp is not None

    # Auto is the default: the trained head drafts, and the status bar shows how many it kept.
    stats = answer(window, qt_wait)
    assert 0 < stats.accepted_tokens <= stats.drafted_tokens
    shown = f"MTP {stats.accepted_tokens / stats.drafted_tokens:.0%}"
    assert window.status_bar.status_mtp.text() == shown

    picker = picker_on(window, qt_wait, tiny_mtp_model_dir)
    assert picker.mtp.isEnabled() and picker.mtp.currentData() == "auto"
    choose(picker, "off")
    picker.reject()
    assert window.store.get_pref(MTP_PREF) == "off"
    stats = answer(window, qt_wait)
    assert stats.drafted_tokens == 0 and stats.accepted_tokens == 0
    assert window.status_bar.status_mtp.text() == ""  # no drafting, no figure

    window.close()
    again = make_window(data_dir=data, model=tiny_mtp_model_dir)
    picker = picker_on(again, qt_wait, tiny_mtp_model_dir)
    assert picker.mtp.currentData() == "off"  # remembered
    picker.reject()
    stats = answer(again, qt_wait)  # loaded with MTP off
    assert stats.drafted_tokens == 0

    picker = picker_on(again, qt_wait, tiny_mtp_model_dir)
    choose(picker, "auto")
    picker.reject()
    assert again.store.get_pref(MTP_PREF) == "auto"
    stats = answer(again, qt_wait)
    assert stats.drafted_tokens > 0
    shown = f"MTP {stats.accepted_tokens / stats.drafted_tokens:.0%}"
    assert again.status_bar.status_mtp.text() == shown

    # The figure belongs to the chat: a new chat has none, reopening this one shows it again.
    cid = again.chat.current_id
    again.chat.new_conversation()
    assert again.status_bar.status_mtp.text() == ""
    again.chat.open(cid)
    assert again.status_bar.status_mtp.text() == shown


def test_picker_shows_the_head_and_offers_mtp_only_for_a_model_with_one(
    make_window, tiny_mtp_model_dir, tiny_model_dir
):
    window = make_window()
    with_head, without = (inspect_checkpoint(d) for d in (tiny_mtp_model_dir, tiny_model_dir))
    assert with_head.mtp is not None and without.mtp is None
    window.models.scanned = True
    window.models.entries = [
        ModelEntry(info, estimate_fit(info, 4096)) for info in (with_head, without)
    ]
    picker = ModelPicker(window.models, window)
    assert picker.table.item(0, 3).text() == "Vision + text · MTP head"
    assert picker.table.item(1, 3).text() == "Vision + text"
    picker.table.selectRow(0)
    assert picker.mtp.isEnabled() and "MTP head" in picker.details.text()
    picker.table.selectRow(1)
    assert not picker.mtp.isEnabled() and "add-mtp" in picker.mtp.toolTip()
    assert "MTP head" not in picker.details.text()
    picker.reject()


def test_a_stored_mtp_pref_this_version_does_not_offer_reads_as_auto(make_window):
    window = make_window()
    for stored in ("on", "sometimes"):
        window.store.set_pref(MTP_PREF, stored)
        assert window.models.mtp_mode.value == "auto"
