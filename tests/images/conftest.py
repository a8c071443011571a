"""The image tier: both images built for real from the project's Dockerfiles (scripts/build-images.sh, buildah on
a local debootstrapped base, cached between runs) and checked by running what they hold with runc.

Every test here gets the `images` marker; the trainer image's tests also carry `trainer_image` (torch makes that
image several GB), so `-m "images and not trainer_image"` builds only the operator image.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from support import images

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.images)


@pytest.fixture(scope="session")
def operator_image() -> images.Image:
    return images.build("operator")["operator"]


@pytest.fixture(scope="session")
def trainer_image() -> images.Image:
    return images.build("trainer")["trainer"]
