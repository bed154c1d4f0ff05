"""A failing randomized test prints the seed that replays it (``tests/conftest.py``)."""

import re
from pathlib import Path

pytest_plugins = ["pytester"]

FAILING = '''
import torch

def test_draws():
    print("drawn", torch.rand(3).tolist())
    assert False
'''


def test_failure_prints_a_seed_that_replays_the_draws(pytester, monkeypatch):
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(test_random=FAILING)
    monkeypatch.setenv("COMPRESSOR_TEST_SEED", "1234")

    def run() -> str:
        result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
        assert result.ret == 1
        return result.stdout.str()

    first, again = run(), run()
    assert "replay with: COMPRESSOR_TEST_SEED=1234 pytest 'test_random.py::test_draws'" in first
    drawn = re.findall(r"drawn \[.*\]", first)
    assert drawn and drawn == re.findall(r"drawn \[.*\]", again)
