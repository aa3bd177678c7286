"""The test fixtures' settings keep every test's store in its own temporary folder."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import make_settings


def test_a_storage_table_without_a_path_still_puts_the_store_in_the_tests_folder(tmp_path: Path) -> None:
    """A test's ``[storage]`` of its own (``max_wait_ms = 200``) without a ``path`` left the
    store at the default, ``gateway.db`` in the working directory: the checkout's, which the
    README's ``make run`` fills with the demo's rows, so a test run after it read them (until
    2026-12-07: ``test_a_delivery_not_committed_in_time_is_503_then_written_and_its_retry_a_duplicate``
    found the demo's sign-up)."""
    settings = make_settings(tmp_path, "[storage]\nmax_wait_ms = 200\n")
    assert settings.store_path == tmp_path / "gateway.db"
    assert settings.options.storage.max_wait_ms == 200
    assert make_settings(tmp_path, "").store_path == tmp_path / "gateway.db"
    elsewhere = tmp_path / "other.db"
    assert make_settings(tmp_path, f'[storage]\npath = "{elsewhere}"\n').store_path == elsewhere
