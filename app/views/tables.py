"""Read-only tables of rows (the model picker, Get models, the local API's request log)."""

from __future__ import annotations

from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget


def row_table(
    columns: list[str] | tuple[str, ...], stretch: tuple[int, ...] = (0,), selectable: bool = True
) -> QTableWidget:
    """A table with ``columns`` whose cells are not editable; whole rows are selected one at a time
    (or nothing is, with ``selectable=False``), and the ``stretch`` columns take the spare width. The other
    columns are as wide as their header and contents, so no theme's font or padding cuts them off."""
    table = QTableWidget(0, len(columns))
    table.setHorizontalHeaderLabels(list(columns))
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.verticalHeader().hide()
    if selectable:
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
    for column in range(len(columns)):
        table.horizontalHeader().setSectionResizeMode(
            column,
            QHeaderView.ResizeMode.Stretch
            if column in stretch
            else QHeaderView.ResizeMode.ResizeToContents,
        )
    return table
