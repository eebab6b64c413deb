import logging

import pytest

from tests.training.models import token_data
from utils.tokenization.data_module import SimpleDataModule


@pytest.fixture(autouse=True)
def _quiet_lightning():
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture
def data():
    return SimpleDataModule(token_data(), val_split=0.2)


FAST = dict(progress=False, logger="none", eval_every=10, eval_batches=2, batch_size=8)
