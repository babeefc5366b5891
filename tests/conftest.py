import os

import pytest

# a pipeline stage that reads a parameter it does not declare (aetdask/parameters.py) fails the test that runs it
os.environ.setdefault("AETDASK_STRICT_PARAMETERS", "1")

from ._util import SEED


@pytest.fixture
def seed_dir():
    if not SEED.is_dir():
        pytest.skip("seed-paper data not present")
    return SEED
