"""``compressor run`` killed at random moments, then run again with ``--resume``: the run directory is consistent
after every kill and, once a run finishes, complete with the weights of an uninterrupted run, byte for byte.

One kill by default (the delay drawn from the test seed); ``COMPRESSOR_KILLS=N`` for more. The 20-kill measurement
across all stages is ``benchmarks/kill_resume.py`` (results in benchmarks/RESULTS.md).
"""

from __future__ import annotations

import os
import random

import pytest
import yaml

from compressor.pipeline import run_pipeline
from compressor.pipeline.audit_stage import AUDIT_STAGE
from compressor.pipeline.data_stage import DATA_STAGE
from compressor.pipeline.distill_stage import DISTILL_STAGE
from compressor.pipeline.teachers_stage import TEACHERS_STAGE
from compressor.spec import parse_spec
from tests.kill_runs import kill_after, problems_any_moment, problems_finished, stage_in_progress, start_run, write_spec
from tests.method_cases import one_thread  # noqa: F401  (fixture)

KILLS = int(os.environ.get("COMPRESSOR_KILLS", "1"))
LONGEST_DELAY = 30.0  # seconds; an uninterrupted run of the spec takes about 40-70 s on 2 busy cores


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_killed_runs_resume_to_a_complete_identical_run_directory(tmp_path):
    spec_file = write_spec(tmp_path / "spec.yaml")
    reference = tmp_path / "reference"  # the weights of an uninterrupted run (one thread, as the child processes)
    run_pipeline(parse_spec(yaml.safe_load(spec_file.read_text())), reference,
                 stages=[DATA_STAGE, TEACHERS_STAGE, AUDIT_STAGE, DISTILL_STAGE])
    rng = random.Random(random.getrandbits(32))  # from the test seed (tests/conftest.py)
    run_dir, log = tmp_path / "run", tmp_path / "run.log"
    for _ in range(KILLS):
        delay = rng.uniform(0.0, LONGEST_DELAY)
        killed = kill_after(start_run(spec_file, run_dir, log), delay)
        problems = problems_any_moment(run_dir)
        assert not problems, f"after a kill at {delay:.1f} s in {stage_in_progress(log)}: {problems}"
        if not killed:
            break
    status = start_run(spec_file, run_dir, log).wait()
    assert status == 0, log.read_text()[-3000:]
    assert not problems_finished(run_dir, spec_file, reference)
