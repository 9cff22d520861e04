"""Sortable tables of pandas DataFrames in the docks, and the export-folder dialog."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QSortFilterProxyModel, Qt
from qtpy.QtWidgets import QFileDialog, QTableView


class DataFrameModel(QAbstractTableModel):
    """A read-only pandas DataFrame for a QTableView; numbers sort as numbers."""

    SORT_ROLE = Qt.ItemDataRole.UserRole

    def __init__(self, df=None, parent=None):
        super().__init__(parent)
        import pandas as pd

        self.df = df if df is not None else pd.DataFrame()

    def set_frame(self, df) -> None:
        self.beginResetModel()
        self.df = df.reset_index(drop=True)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.df)

    def columnCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.df.columns)

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        value = self.df.iat[index.row(), index.column()]
        if role == Qt.ItemDataRole.DisplayRole:
            return _fmt(value)
        if role == self.SORT_ROLE:
            if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
                v = float(value)
                return v if np.isfinite(v) else float("-inf")
            return "" if value is None else str(value)
        if role == Qt.ItemDataRole.TextAlignmentRole and isinstance(value, (int, float, np.number)):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            return str(self.df.columns[section]) if section < len(self.df.columns) else None
        return str(section + 1)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "–"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


class FrameTable(QTableView):
    """A sortable table of a DataFrame (click a header to sort); ``row_frame(i)`` gives the row shown."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.model_ = DataFrameModel()
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model_)
        self.proxy.setSortRole(DataFrameModel.SORT_ROLE)
        self.setModel(self.proxy)
        self.setSortingEnabled(True)
        self.horizontalHeader().setSortIndicator(-1, Qt.SortOrder.AscendingOrder)  # rows in their own order until a header is clicked
        self.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
        self.setSelectionMode(QTableView.SelectionMode.SingleSelection)
        self.verticalHeader().setDefaultSectionSize(20)
        self.setMinimumHeight(120)

    @property
    def frame(self):
        return self.model_.df

    def set_frame(self, df) -> None:
        self.model_.set_frame(df)
        self.resizeColumnsToContents()

    def source_row(self, view_row: int) -> int:
        return self.proxy.mapToSource(self.proxy.index(view_row, 0)).row()

    def row_record(self, view_row: int) -> dict:
        return self.model_.df.iloc[self.source_row(view_row)].to_dict()


def save_csv_dialog(parent, title: str = "Export CSV into a folder") -> str | None:
    path = QFileDialog.getExistingDirectory(parent, title)
    return path or None
