"""The emulated container image, built once per test module that asks for it."""

from __future__ import annotations

import pytest

from tests.deploy.image import Image, build_image


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Image:
    return build_image(tmp_path_factory.mktemp("image"))
