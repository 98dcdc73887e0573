"""smsgw.records is a leaf: another carrier protocol or store uses it without pulling in the
carriers or the stores (nor they each other through it)."""

from __future__ import annotations

import ast
import inspect

import smsgw.records


def test_records_import_nothing_from_smsgw() -> None:
    tree = ast.parse(inspect.getsource(smsgw.records))
    imported = [
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    ]
    assert imported and not [name for name in imported if name.split(".")[0] == "smsgw"]


def test_the_carriers_and_stores_use_the_records_own_classes() -> None:
    from smsgw.carriers.base import MobileOriginated
    from smsgw.store.base import InboundRecord

    assert MobileOriginated is smsgw.records.MobileOriginated
    assert InboundRecord is smsgw.records.InboundRecord
