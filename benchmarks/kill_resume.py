"""Kill ``compressor run`` at random moments, again and again, and check the run directory every time.

Two specs that differ only in their seed (so two different students) take turns on ONE run directory: each attempt
starts ``compressor run SPEC --out DIR --resume`` and sends SIGKILL after a delay drawn uniformly between 0 and the
duration of the last whole run (at first the uninterrupted one; then the last attempt that ran a spec from its
start to its end unkilled: the bound follows the machine's load, so kills keep landing inside runs). After every
kill the directory must be consistent (``problems_any_moment``: every marker's artifacts verify, ONNX models of one
export only, ``export.json`` matching them); when an attempt finishes instead, the directory must be complete and
every weights file byte-identical to an uninterrupted run of that spec (``problems_finished``), and the next attempt
switches to the other spec. Prints a summary (kills per stage, problems) and exits 1 when any check failed.

    python benchmarks/kill_resume.py --kills 20 --seed 0 --workdir /tmp/kill-resume
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.kill_runs import (  # noqa: E402  (the repository root on the path first)
    kill_after,
    problems_any_moment,
    problems_finished,
    stage_in_progress,
    start_run,
    write_spec,
)


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (the platform's processor string elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def reference_run(spec_file: Path, run_dir: Path, log: Path) -> float:
    """An uninterrupted run; returns its wall time in seconds."""
    start = time.perf_counter()
    proc = start_run(spec_file, run_dir, log)
    if proc.wait() != 0:
        raise SystemExit(f"the uninterrupted run of {spec_file} failed; see {log}")
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver (attempts that finish first do "
                        "not count)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill delays")
    parser.add_argument("--workdir", type=Path, default=Path("kill-resume"), help="scratch folder (emptied first)")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    specs = [write_spec(args.workdir / f"spec{s}.yaml", seed=s) for s in (0, 1)]
    references = [args.workdir / f"reference{s}" for s in (0, 1)]
    durations = [reference_run(spec, ref, args.workdir / f"reference{i}.log")
                 for i, (spec, ref) in enumerate(zip(specs, references, strict=True))]
    bound = max(durations)  # kill delays are drawn from [0, bound]
    print(f"uninterrupted runs: {', '.join(f'{d:.1f} s' for d in durations)}", flush=True)

    rng = random.Random(args.seed)
    run_dir, log = args.workdir / "run", args.workdir / "attempt.log"
    which, kills, completions, attempts = 0, Counter(), 0, 0
    whole = False  # whether the attempt under way runs its spec from the start (the previous one finished the other)
    problems: list[str] = []
    start = time.perf_counter()
    while sum(kills.values()) < args.kills:
        attempts += 1
        proc, started = start_run(specs[which], run_dir, log), time.perf_counter()
        delay = rng.uniform(0.0, bound)
        killed = kill_after(proc, delay)
        elapsed = time.perf_counter() - started
        if killed:
            stage = stage_in_progress(log)
            kills[stage] += 1
            found = problems_any_moment(run_dir)
            print(f"attempt {attempts}: spec{which}, killed after {delay:.1f} s in {stage}: "
                  f"{'consistent' if not found else found}", flush=True)
        else:
            found = [f"exit status {proc.returncode}: {log.read_text()[-500:]}"] if proc.returncode else []
            found = found or problems_finished(run_dir, specs[which], references[which])
            completions += 1
            if whole:
                bound = elapsed  # how long a whole run takes under the load of the moment
            print(f"attempt {attempts}: spec{which} finished: {'complete, weights identical' if not found else found}",
                  flush=True)
            which = 1 - which  # the next student differs: a mix of two exports would show
        whole = not killed
        problems += [f"attempt {attempts}: {p}" for p in found]
    status = start_run(specs[which], run_dir, log).wait()  # the last kill's run, finished
    found = [f"exit status {status}"] if status else problems_finished(run_dir, specs[which], references[which])
    completions += 1
    problems += [f"final run: {p}" for p in found]
    summary = {
        "kills": sum(kills.values()), "kills_per_stage": dict(kills), "attempts": attempts + 1,
        "completed_runs": completions, "problems": problems, "seconds": round(time.perf_counter() - start, 1),
        "uninterrupted_run_seconds": [round(d, 1) for d in durations], "seed": args.seed, "cpu": cpu_name(),
        "cores": os.cpu_count(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
