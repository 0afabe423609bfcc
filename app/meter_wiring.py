"""Puts the context meter under the message box and wires it to the window's chat, composer and model."""

from __future__ import annotations

from .controllers.context_meter import ContextMeterController
from .views.context_meter import ContextMeter
from .workers import LoadFailure


def install_context_meter(window) -> ContextMeterController:
    """The meter's view in the composer (below the text box) and its controller, fed by the window's parts."""
    meter = ContextMeterController(window.chat, window.attachments, window.engine, window)
    view = window.context_meter_view = ContextMeter()
    window.composer.layout().addWidget(view)
    meter.readingChanged.connect(view.show_reading)
    view.newChatWithSummary.connect(meter.new_chat_with_summary)
    view.dropOldestTurns.connect(meter.drop_oldest_turns)
    meter.errorOccurred.connect(window.show_error)
    meter.turnsDropped.connect(
        lambda n: window.banner.show_message(
            f"The {n} oldest turn{'s are' if n != 1 else ' is'} no longer sent to the model; "
            f"{'they stay' if n != 1 else 'it stays'} in this chat's history.",
            timeout_ms=8000,
        )
    )

    edit = window.composer.edit
    edit.textChanged.connect(lambda: meter.set_draft(edit.toPlainText()))
    for signal in (
        window.attachments.added,
        window.attachments.changed,
        window.attachments.removed,
        window.attachments.cleared,
    ):
        signal.connect(meter.attachments_changed)
    chat = window.chat
    for signal in (
        chat.conversationOpened,
        chat.streamFinished,
        chat.messagesRemoved,
        window.thinking_combo.activated,
    ):
        signal.connect(meter.history_changed)
    # A sent message joins the history at once (the empty answer placeholder adds nothing to count).
    chat.messageAppended.connect(lambda message: message.role == "user" and meter.history_changed())
    models = window.models
    # The context the model was loaded with (the setting may change later; it applies at the next load).
    models.modelLoaded.connect(
        lambda info: meter.set_limit(
            min(models.context_tokens, info.context_length or models.context_tokens)
        )
    )
    models.modelUnloaded.connect(lambda: meter.set_limit(0))
    # Server mode: the server's context; its POST /tokenize counts (engine_mlx.remote).
    models.serverConnected.connect(lambda _model: meter.set_limit(models.context_limit))
    models.loadFailed.connect(
        lambda _message, kind: meter.set_limit(0) if kind is LoadFailure.SERVER else None
    )
    meter.history_changed()
    return meter
