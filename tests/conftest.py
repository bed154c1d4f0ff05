"""Test configuration: Triton runs through its interpreter on machines without a GPU (set before any import),
every test starts from a seed that a failure prints, so a randomized test can be replayed, and every test has its
own user-level cache folder (``COMPRESSOR_CACHE_DIR``).

Each session draws a fresh seed (random inputs keep exploring) unless ``COMPRESSOR_TEST_SEED`` gives one; each test
seeds torch's, numpy's and Python's global generators with a hash of it and the test's id, so the same seed replays
any test alone: ``COMPRESSOR_TEST_SEED=<seed> pytest <test id>``.
"""

import os
import random
import shutil
import tempfile
import zlib

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

SEED_VARIABLE = "COMPRESSOR_TEST_SEED"
SESSION_SEED = int(os.environ.get(SEED_VARIABLE) or random.SystemRandom().randrange(2**31))


def pytest_report_header() -> str:
    return f"random seed: {SEED_VARIABLE}={SESSION_SEED}"


@pytest.fixture(autouse=True)
def _seeded(request: pytest.FixtureRequest) -> None:
    """Seed the global generators for this test from the session seed and the test's id."""
    seed = zlib.crc32(f"{SESSION_SEED}:{request.node.nodeid}".encode())
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def pytest_configure(config: pytest.Config) -> None:
    """A user-level cache folder for the session (fixtures wider than a test run before the per-test one)."""
    os.environ["COMPRESSOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compressor-test-cache-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ.get("COMPRESSOR_CACHE_DIR", ""), ignore_errors=True)


@pytest.fixture(autouse=True)
def _private_user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give every test its own user-level cache (view pools), so no test reads or fills the real one."""
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path_factory.mktemp("user-cache")))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        report.sections.append(("random seed", f"replay with: {SEED_VARIABLE}={SESSION_SEED} pytest '{item.nodeid}'"))
