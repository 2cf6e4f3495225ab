"""The one training step (mlp_backend/training/step.py) trains bitwise as before the redesign."""
import json
import pathlib

import pytest

from bits_cases import cases, digest, train

FIXTURE = json.loads((pathlib.Path(__file__).parent / "fixtures" / "bits_before_redesign.json").read_text())
CASES = dict(cases())


def test_the_fixture_covers_every_case():
    assert sorted(FIXTURE) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_training_is_bitwise_as_before_the_redesign(name):
    """Parameters, optimizer state, history and step count after 4 epochs: the same bits as
    the eager path of commit 4458ae9 (every optimizer and schedule, weight decay, float64,
    full batch, every output/loss pair, state replaced between epochs, the paper's shape)."""
    assert digest(*train(**CASES[name])) == FIXTURE[name]
