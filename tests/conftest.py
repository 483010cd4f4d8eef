import pytest

from stvsr_core import save_weights

from helpers import random_model


@pytest.fixture(scope="session")
def untrained_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "untrained.safetensors"
    save_weights(random_model(), path, description="untrained, for tests")
    return path
