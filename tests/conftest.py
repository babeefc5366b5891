import pytest

from ._util import SEED


@pytest.fixture
def seed_dir():
    if not SEED.is_dir():
        pytest.skip("seed-paper data not present")
    return SEED
