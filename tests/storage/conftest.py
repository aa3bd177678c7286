"""Fixtures of the store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.metrics import Metrics
from gateway.options import StorageOptions
from storage.local import LocalStore
from tests.storage.stores import OpenStore
from tests.storage.test_sync import Node


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    """``await open_store(**storage_options)``: an open store on ``tmp_path/gw.db``, closed after
    the test; ``checkpoint_rows`` / ``checkpoint_seconds`` set its checkpoint job's thresholds,
    ``wal_limit`` the bytes its WAL file is cut back to."""
    opened: list[LocalStore] = []

    async def open_(
        *,
        checkpoint_rows: int | None = None,
        checkpoint_seconds: float | None = None,
        wal_limit: int | None = None,
        **options: Any,
    ) -> LocalStore:
        store = LocalStore(tmp_path / "gw.db", StorageOptions(**options), Metrics())
        if checkpoint_rows is not None:
            store.checkpointer.rows = checkpoint_rows
        if checkpoint_seconds is not None:
            store.checkpointer.seconds = checkpoint_seconds
        if wal_limit is not None:
            store.wal_limit = wal_limit
        await store.open()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        await store.close()


@pytest.fixture
async def nodes(tmp_path: Path, central_dsn: str) -> AsyncIterator[tuple[Node, Node]]:
    """Two edge nodes, ``a`` and ``b``, their stores open, syncing to the throwaway central
    store (the sync's and the mirror's tests)."""
    a, b = Node(tmp_path, "a", central_dsn), Node(tmp_path, "b", central_dsn)
    await a.store.open()
    await b.store.open()
    yield a, b
    await a.store.close()
    await b.store.close()
