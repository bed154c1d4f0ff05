"""Distributed runs: the DDP distillation math, the rank-0-only write guard, and a 2-process gloo run of the CLI.

The DDP test runs ``distill_student`` in 2 gloo processes on models without batch norm (the one place where a
rank's slice legitimately differs from the whole batch) and compares with the single-process loop: equal up to the
order of floating-point sums, and bit-identical across the two ranks.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from safetensors.torch import load_file
from torch import nn

from compressor.distributed import DistInfo, Shard
from compressor.io import read_json
from compressor.pipeline.context import RunContext, StageError
from compressor.recipes import distill_student
from compressor.spec import parse_spec
from compressor.spec.training import AugmentSpec
from compressor.task import Task
from compressor.training.teacher_logits import TeacherLogits
from compressor.training.view_pool import ViewPool
from compressor.training.view_pool_build import build_view_pool
from tests.method_cases import one_thread, toy_split  # noqa: F401  (fixture)
from tests.synthetic import FAST_TRAINING, fast_spec

# Every method with per-batch randomness or global per-batch state, at once.
METHODS = {
    "weighting": "exponential", "weight_draw": "sample", "temperature": 2.0, "alpha": 0.7,
    "teacher_noise": {"logit_noise": 0.1, "swap": "top2", "swap_probability": 0.5, "swap_threshold": 0.2},
    "messy": {"rate": 0.2}, "soft_randomization": {"sigma": 0.1}, "group_dro": {"enabled": True, "eta_w": 0.05},
    "mutual": {"enabled": True}, "gate": {"knowledge": "cmd_s", "eta": 1.2},
    "averaging": {"warmup_epochs": 0, "recompute_batchnorm": False},
    "training": {"epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                 "schedule": {"name": "constant"}, "target": {"kind": "boot_soft"},
                 "augment": {"crop_padding": 1, "hflip": True}, "select": "best_val"},
}


def mlp(seed: int, classes: int = 3) -> nn.Module:
    """A small MLP without batch norm (its result does not depend on how a batch is split)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, classes))


def teacher(seed: int) -> nn.Module:
    """An MLP teacher with confident outputs on some rows (so the entropy gate keeps some and drops others)."""
    model = mlp(seed)
    with torch.no_grad():
        model[3].weight.mul_(10.0)
    return model


def run_cases(rank: int, world: int, init_file: str, out: str) -> None:
    """Distil two MLP teachers into an MLP student (with a peer) as rank ``rank`` of ``world``, with the teachers
    run per batch and with their view pool; save the results."""
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    data = toy_split(100, classes=3, minority=0.3, seed=1)  # batches of 32, 32, 32, 4: every rank gets rows
    teachers = [teacher(1), teacher(2)]
    spec = parse_spec({"distillation": METHODS, "data": {"source": "npz", "path": "x.npz"}}).distillation
    for cached in (False, True):
        pool = ViewPool.open(Path(out) / "pool", "k") if cached else None
        student, peer = mlp(10), mlp(11)
        history, averager = distill_student(student, teachers, data, spec, Task.MULTICLASS, "cpu",
                                            torch.Generator().manual_seed(0), peer=peer, num_classes=3,
                                            dist=DistInfo(rank, world), view_pool=pool,
                                            val=toy_split(25, classes=3, seed=4))  # ranks measure 13 + 12 rows
        torch.save({"student": student.state_dict(), "peer": peer.state_dict(),
                    "averaged": averager.model.state_dict(), "history": history.as_dict(),
                    "selection": history.selection},
                   Path(out) / f"{'cache' if cached else 'run'}_{world}_{rank}.pt")
    if world > 1:
        dist.destroy_process_group()


def load(out: Path, cached: bool, world: int, rank: int) -> dict:
    return torch.load(out / f"{'cache' if cached else 'run'}_{world}_{rank}.pt", weights_only=True)


def on_main_outcomes(rank: int, world: int, init_file: str, out: str) -> None:
    """As rank ``rank`` of ``world``: what ``RunContext.on_main`` returns or raises for work that succeeds, fails
    for the user, fails with an extra error type, and crashes on rank 0; saved as JSON."""
    torch.set_num_threads(1)
    # a collective that waits for a rank that never comes fails after two minutes instead of hanging the suite
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    ctx = RunContext(spec=None, run_dir=Path(out), device=torch.device("cpu"), dist=DistInfo(rank, world))

    def work(kind: str) -> int:
        assert rank == 0, "the work ran on another rank"
        errors = {"user": StageError("bad file", exit_code=3), "extra": KeyError("k"), "crash": ZeroDivisionError("z")}
        if kind in errors:
            raise errors[kind]
        return 42

    outcomes = {}
    for kind in ("ok", "user", "extra", "crash"):
        try:
            outcomes[kind] = ctx.on_main("the work", work, kind, errors=(KeyError,))
        except Exception as exc:
            outcomes[kind] = [type(exc).__name__, str(exc), getattr(exc, "exit_code", None)]
    (Path(out) / f"on_main_{rank}.json").write_text(json.dumps(outcomes))
    dist.destroy_process_group()


@pytest.mark.slow
def test_on_main_returns_or_raises_rank_0s_outcome_on_every_rank(tmp_path):
    """Rank 0's result or user error reaches every rank; a crash is raised on rank 0 and named on the others."""
    mp.start_processes(on_main_outcomes, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    main, other = (json.loads((tmp_path / f"on_main_{rank}.json").read_text()) for rank in (0, 1))
    expected = {"ok": 42, "user": ["StageError", "bad file", 3], "extra": ["KeyError", "'k'", None]}
    assert main == {**expected, "crash": ["ZeroDivisionError", "z", None]}
    assert other == {**expected, "crash": ["RuntimeError", "the work failed on rank 0: ZeroDivisionError: z", None]}


def test_shard_bounds_cover_the_batch_once():
    for rows in (1, 2, 7, 32, 33):
        for world in (1, 2, 3, 4):
            spans = [Shard(r, world).bounds(rows) for r in range(world)]
            assert spans[0][0] == 0 and spans[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
            assert max(Shard(0, world).sizes(rows)) - min(Shard(0, world).sizes(rows)) <= 1


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """The results of ``run_cases`` in one process and in two gloo processes."""
    out = tmp_path_factory.mktemp("ddp")
    data = toy_split(100, classes=3, minority=0.3, seed=1)
    augment = AugmentSpec(**METHODS["training"]["augment"])
    build_view_pool(out / "pool", "k", TeacherLogits([teacher(1), teacher(2)], "cpu"), data.images, augment, 3,
                    torch.Generator().manual_seed(0), exact=True)
    before = torch.get_num_threads()
    run_cases(0, 1, "", str(out))
    torch.set_num_threads(before)
    mp.start_processes(run_cases, args=(2, str(out / "init"), str(out)), nprocs=2, join=True, start_method="spawn")
    return out


@pytest.mark.parametrize("cached", [False, True], ids=["teachers-per-batch", "view-pool"])
def test_ddp_distillation_equals_the_single_process_loop(ddp_results, cached):
    single, rank0, rank1 = (load(ddp_results, cached, w, r) for w, r in ((1, 0), (2, 0), (2, 1)))
    for part in ("student", "peer", "averaged"):
        for name, value in single[part].items():
            assert torch.equal(rank0[part][name], rank1[part][name]), (part, name)  # ranks agree exactly
            assert torch.allclose(rank0[part][name], value, rtol=1e-4, atol=1e-5), (part, name)  # = one process
            assert not torch.equal(value, mlp(10 if part != "peer" else 11).state_dict()[name])  # it trained
    for figure, values in single["history"].items():  # figures cover every rank's rows: the same epoch means
        assert np.allclose(rank0["history"][figure], values, rtol=1e-4, atol=1e-5), figure
    assert rank0["history"]["val_loss"] == rank1["history"]["val_loss"]  # validation sums added up over the ranks
    assert rank0["selection"]["epoch"] == rank1["selection"]["epoch"] == single["selection"]["epoch"]
    assert single["history"]["group_weight_0"][-1] != pytest.approx(0.5)  # the group weights did move
    assert 0 < single["history"]["gate_pass_rate"][-1] < 1  # the CMD gate did select


GUARD_PROGRAM = textwrap.dedent("""
    import json, os, sys, torch
    from compressor.distributed import forbid_writes_under
    from compressor.io import read_json, write_json
    root = sys.argv[1]
    write_json(os.path.join(root, "a.json"), {"x": 1})
    forbid_writes_under(root, 1)
    assert read_json(os.path.join(root, "a.json")) == {"x": 1}  # reading is fine
    attempts = {
        "atomic write": lambda: write_json(os.path.join(root, "b.json"), {}),
        "open w": lambda: open(os.path.join(root, "c"), "w"),
        "open r+": lambda: open(os.path.join(root, "a.json"), "r+"),
        "mkdir": lambda: os.mkdir(os.path.join(root, "d")),
        "remove": lambda: os.remove(os.path.join(root, "a.json")),
        "rename": lambda: os.replace(os.path.join(root, "a.json"), os.path.join(root, "..", "moved.json")),
        "torch.save": lambda: torch.save({}, os.path.join(root, "e.pt")),
    }
    blocked = []
    for name, attempt in attempts.items():
        try:
            attempt()
        except PermissionError:
            blocked.append(name)
    open(os.path.join(root, "..", "outside.txt"), "w").write("ok")  # outside the run directory: allowed
    print(json.dumps({"blocked": blocked, "listing": sorted(os.listdir(root))}))
""")


def test_write_guard_refuses_every_write_under_the_run_directory(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    proc = subprocess.run([sys.executable, "-c", GUARD_PROGRAM, str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert sorted(result["blocked"]) == sorted(["atomic write", "open w", "open r+", "mkdir", "remove", "rename",
                                                "torch.save"])
    assert result["listing"] == ["a.json"] and (tmp_path / "outside.txt").exists()


def student_accuracy(run_dir: Path) -> float:
    metrics = read_json(run_dir / "metrics.json")
    return metrics["test"][metrics["final_model"]]["accuracy"]


# A small spec; teachers train for 4 epochs so that a run can be caught (and killed) while they train.
SPEC = fast_spec(export={"onnx": False}, noise={"kind": "symmetric", "rate": 0.2},
                 teachers={"training": {**FAST_TRAINING, "epochs": 4}})


def run_command(spec_file: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "compressor", "run", str(spec_file), "--nproc", "2", "--out", str(run_dir), *extra]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """``compressor run SPEC --nproc 2`` (2 gloo processes on CPU): its spec file, run directory and output."""
    root = tmp_path_factory.mktemp("two_process")
    (root / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    env = {**os.environ, "COMPRESSOR_QUIET": "1"}
    proc = subprocess.run(run_command(root / "spec.yaml", root / "run"), capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "spec.yaml", root / "run", proc


@pytest.mark.slow
def test_two_process_gloo_run_matches_the_single_process_run(two_process_run, tmp_path):
    """Rank 0 alone writes, every rank trains, and the accuracy is within the single-process seed spread."""
    from compressor.pipeline import run_pipeline
    from compressor.pipeline.runner import STAGES

    _, run_dir, proc = two_process_run
    # Every rank but 0 runs under forbid_writes_under(run_dir) (compressor/cli/run.py, tested above): a write by
    # rank 1 would have failed the run. Rank 1 really worked: it trained teacher 1 and took part in distillation.
    assert [read_json(run_dir / "teachers" / f"teacher_{i}.json")["rank"] for i in (0, 1)] == [0, 1]
    summary = read_json(run_dir / "student" / "summary.json")
    assert summary["world_size"] == 2 and summary["teacher_logits"] == "view pool"
    assert not list(run_dir.rglob("*.tmp")) and not (run_dir / ".compressor" / "checkpoints").exists()
    assert proc.stdout.count("run directory:") == 1  # one summary: rank 0's

    # The normal seed spread of the single-process run, measured here over seeds 0-5 (same spec, stages up to
    # metrics; about a second each): the 2-process student must lie within [min - 0.02, max + 0.02] of those
    # accuracies. The margin is about one binomial standard error of a test accuracy near 0.85 on the 360 test
    # images (0.019): a 2-process run that behaves like one more seed passes, a broken one does not.
    stages = [s for s in STAGES if s.name in ("data", "teachers", "audit", "distill", "metrics")]
    accuracies = []
    for seed in range(6):
        run_pipeline(parse_spec({**SPEC, "seed": seed}), tmp_path / f"single_{seed}", stages=stages)
        accuracies.append(student_accuracy(tmp_path / f"single_{seed}"))
    distributed_accuracy = student_accuracy(run_dir)
    assert min(accuracies) - 0.02 <= distributed_accuracy <= max(accuracies) + 0.02, (distributed_accuracy, accuracies)


def descendants(pid: int) -> list[int]:
    """Process ids of every descendant of ``pid`` (Linux /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children += [int(entry.name), *descendants(int(entry.name))]
    return children


def alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_two_process_run_resumes_to_the_uninterrupted_student(two_process_run, tmp_path):
    """SIGKILL to the launcher while the teachers train: its workers die with it; ``--resume`` (2 processes again)
    finishes with the uninterrupted 2-process run's student, bit for bit."""
    spec_file, whole, _ = two_process_run
    env = {**os.environ, "COMPRESSOR_QUIET": "1"}
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(run_command(spec_file, run_dir), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoint = run_dir / ".compressor" / "checkpoints" / "teachers" / "round.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before a teacher checkpoint"
        time.sleep(0.005)
    workers = descendants(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    while any(alive(pid) for pid in workers):  # the kernel kills them (exit_with_launcher)
        assert time.monotonic() < deadline, "workers outlived their launcher"
        time.sleep(0.05)
    assert checkpoint.exists() and not (run_dir / "student.safetensors").exists()

    resumed = subprocess.run(run_command(spec_file, run_dir, "--resume"), capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch" in resumed.stderr
    final, expected = load_file(run_dir / "student.safetensors"), load_file(whole / "student.safetensors")
    assert all(torch.equal(final[key], expected[key]) for key in expected)
