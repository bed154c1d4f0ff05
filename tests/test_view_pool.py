"""Teacher view pool: the KD target is the teachers' output for the very view the student sees (up to float16), the
views are distinct and seeded, top-k storage keeps what it says, untrustworthy pools are recomputed, the spec field
refuses fickle teachers, and a second run with the same teachers and data reads the first run's pool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from torch import nn

from compressor.cli import main
from compressor.data.batches import Views, to_float
from compressor.io import read_json, write_json
from compressor.methods.kd import KnowledgeDistillation
from compressor.pipeline import run_pipeline
from compressor.pipeline.runner import STAGES
from compressor.pipeline.view_pool import user_cache_dir
from compressor.recipes import distill_student
from compressor.run_layout import RunLayout
from compressor.spec import SpecError, parse_spec
from compressor.spec.training import AugmentSpec
from compressor.task import Task
from compressor.training.batch_source import ShuffledBatches
from compressor.training.teacher_logits import PooledTeacherLogits, TeacherLogits
from compressor.training.view_pool import ViewPool, softened_tv
from compressor.training.view_pool_build import PoolOverflow, build_view_pool, draw_pool_views
from tests.method_cases import one_thread, tiny_teacher, toy_split  # noqa: F401  (fixture)
from tests.synthetic import FAST_TRAINING, fast_spec

AUGMENT = AugmentSpec(crop_padding=1, hflip=True)


def conv_teacher(seed: int, classes: int = 3) -> nn.Module:
    """A small CNN with batch norm (channels_last is used for it), in evaluation mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3, stride=2),
                          nn.ReLU(), nn.Flatten(), nn.Linear(36, classes))
    with torch.no_grad():
        model.train()
        model(torch.rand(32, 1, 8, 8))
    return model.eval()


def build(path, models, data, views=4, augment=AUGMENT, exact=True, seed=0):
    return build_view_pool(path, "key", TeacherLogits(models, "cpu"), data.images, augment, views,
                           torch.Generator().manual_seed(seed), exact)


def crop_by_hand(image: torch.Tensor, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    """The view ``(dy, dx, flip)`` of one ``[C, H, W]`` float image, cut out of its zero-padded copy."""
    _, h, w = image.shape
    view = F.pad(image, (pad, pad, pad, pad))[:, dy : dy + h, dx : dx + w]
    return view.flip(-1) if flip else view


def test_kd_targets_are_the_teachers_live_outputs_on_the_view_the_student_sees(tmp_path):
    data = toy_split(90)
    models = [conv_teacher(1), conv_teacher(2)]
    pool = build(tmp_path / "pool", models, data)
    assert pool.shape == (90, 4, 2, 3) and pool.storage == "logits"
    live = TeacherLogits([conv_teacher(1), conv_teacher(2)], "cpu")
    spec = parse_spec({}).distillation
    kd = KnowledgeDistillation(spec, Task.MULTICLASS, 3, PooledTeacherLogits(pool, "cpu"))
    batches = ShuffledBatches(data, 32, AUGMENT, Task.MULTICLASS, "cpu", views=pool.plan())
    stored = np.asarray(pool.arrays["views.npy"])
    seen = set()
    generator = torch.Generator().manual_seed(3)
    for _ in range(3):
        for batch in batches.epoch(generator):
            for row, (i, v) in enumerate(zip(batch.index.tolist(), batch.view.tolist(), strict=True)):
                dy, dx, flip = stored[i, v]
                expected = crop_by_hand(to_float(data.images[i : i + 1], "cpu")[0], dy, dx, bool(flip), 1)
                assert torch.equal(batch.x[row], expected)  # the student sees exactly the stored view
                seen.add((i, v))
            kd.on_batch(None, batch)
            exact = live(batch.x)
            # float16 keeps 11 significant bits (relative error <= 2^-11); 1e-5 covers float32 batch-size effects
            assert (batch.knowledge.logits - exact).abs().le(exact.abs() * 2.0**-11 + 1e-5).all()
    assert len(seen) > 90 * 2  # over three epochs most images showed more than one of their views


def test_a_subset_of_the_pool_serves_the_kept_rows_views_and_teacher_outputs(tmp_path):
    """``data.label_issues: drop`` trains on some rows of the split: the pool, read through them, gives each kept
    row its own stored views and the teachers' outputs on them."""
    data = toy_split(90)
    pool = build(tmp_path / "pool", [conv_teacher(1), conv_teacher(2)], data)
    rows = np.sort(np.random.default_rng(4).permutation(90)[:37])
    kept = pool.subset(rows)
    live = TeacherLogits([conv_teacher(1), conv_teacher(2)], "cpu")
    batches = ShuffledBatches(data.subset(rows), 16, AUGMENT, Task.MULTICLASS, "cpu", views=kept.plan())
    stored = np.asarray(pool.arrays["views.npy"])
    for batch in batches.epoch(torch.Generator().manual_seed(3)):
        for row, (i, v) in enumerate(zip(batch.index.tolist(), batch.view.tolist(), strict=True)):
            dy, dx, flip = stored[rows[i], v]
            image = to_float(data.images[rows[i] : rows[i] + 1], "cpu")[0]
            assert torch.equal(batch.x[row], crop_by_hand(image, dy, dx, bool(flip), 1))
        exact = live(batch.x)
        got = PooledTeacherLogits(kept, "cpu")(batch.x, batch.index, batch.view)
        assert (got - exact).abs().le(exact.abs() * 2.0**-11 + 1e-5).all()
    inner = np.array([3, 0, 5])
    assert np.array_equal(kept.subset(inner).rows, rows[inner]) and pool.rows is None


def test_distilling_from_the_pool_equals_live_teachers_on_the_stored_views_rounded(tmp_path):
    """The pool changes nothing but the float16 rounding of the teacher logits: the students are bit-identical."""
    data = toy_split(200)
    spec = parse_spec({"distillation": {
        "weighting": "exponential", "teacher_noise": {"logit_noise": 0.1}, "soft_randomization": {"sigma": 0.1},
        "messy": {"rate": 0.1}, "averaging": {"warmup_epochs": 0},
        "training": {**FAST_TRAINING, "augment": {"crop_padding": 1, "hflip": True}}},
    }).distillation

    def teachers():
        return [tiny_teacher(classes=3, seed=1), tiny_teacher(classes=3, seed=2)]

    pool = build(tmp_path / "pool", teachers(), data, views=3, augment=spec.training.augment)
    live = TeacherLogits(teachers(), "cpu")
    results = {}
    for name, source in (("pool", None), ("live rounded", lambda x, i, v: live(x).half().float())):
        torch.manual_seed(5)
        student = tiny_teacher(classes=3, seed=5).train()
        _, averager = distill_student(student, [], data, spec, Task.MULTICLASS, "cpu",
                                      torch.Generator().manual_seed(0), teacher_source=source, view_pool=pool)
        results[name] = averager.model.state_dict()
    for key, value in results["pool"].items():
        assert torch.equal(value, results["live rounded"][key]), key


def test_views_are_distinct_seeded_and_capped_at_the_augmentations_views():
    assert AUGMENT.distinct_views == 18 and AugmentSpec().distinct_views == 1
    views = draw_pool_views(50, 5, AUGMENT, torch.Generator().manual_seed(0))
    assert views.shape == (50, 5, 3) and views.dtype == np.int16
    assert views[..., :2].min() >= 0 and views[..., :2].max() <= 2 and set(np.unique(views[..., 2])) <= {0, 1}
    assert all(len({tuple(v) for v in image}) == 5 for image in views)  # distinct views per image
    assert np.array_equal(views, draw_pool_views(50, 5, AUGMENT, torch.Generator().manual_seed(0)))
    assert not np.array_equal(views, draw_pool_views(50, 5, AUGMENT, torch.Generator().manual_seed(1)))
    every = draw_pool_views(7, 40, AUGMENT, torch.Generator().manual_seed(0))
    assert every.shape == (7, 18, 3) and all(len({tuple(v) for v in image}) == 18 for image in every)
    assert np.array_equal(draw_pool_views(4, 8, AugmentSpec(), torch.Generator()), np.zeros((4, 1, 3), np.int16))


def test_top_k_storage_keeps_the_top_classes_and_the_remaining_mass(tmp_path):
    data = toy_split(40)
    teacher = conv_teacher(4, classes=100)
    with torch.no_grad():
        teacher[-1].weight.mul_(8.0)  # peaked, as trained teachers are
    pool = build(tmp_path / "pool", [teacher], data, views=2, exact=False)
    assert pool.storage == "top_k" and pool.meta["top_k"] == 16 and pool.arrays["top_class.npy"].dtype == np.int16
    index, view = torch.arange(40), torch.randint(0, 2, (40,))
    got = pool.lookup(index, view, "cpu")[0]  # [B, C]
    stored = np.asarray(pool.arrays["views.npy"])[index.numpy(), view.numpy()]
    exact_inputs = torch.stack([crop_by_hand(to_float(data.images[i : i + 1], "cpu")[0], *map(int, stored[i][:2]),
                                             bool(stored[i][2]), 1) for i in range(40)])
    exact = torch.log_softmax(TeacherLogits([teacher], "cpu")(exact_inputs)[0], -1)
    top = exact.topk(16, -1).indices
    kept, rest = got.gather(-1, top), exact.exp().scatter(-1, top, 0.0).sum(-1)
    assert (kept - exact.gather(-1, top)).abs().le(exact.gather(-1, top).abs() * 2.0**-10 + 1e-4).all()
    tail = got.scatter(-1, top, float("nan"))
    assert torch.allclose(tail.nanmean(-1), torch.log(rest / 84), rtol=2e-3)  # the rest spread evenly
    assert torch.allclose(got.logsumexp(-1), torch.zeros(40), atol=2e-3)  # a distribution again
    recorded = pool.meta["top_k_error"]["4"]
    assert recorded["mean_tv"] > 0 and recorded["max_tv"] >= softened_tv(exact, got, 4.0).max() - 1e-3


class Failing(nn.Module):
    """A teacher that fails on its third call (a run killed while building the pool)."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = tiny_teacher(classes=3), 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("killed")
        return self.inner(x)


def test_stale_interrupted_or_overflowing_pools_are_not_trusted(tmp_path, monkeypatch):
    import compressor.training.view_pool_build as builder

    monkeypatch.setattr(builder, "first_chunk", lambda device: 64)  # several chunks
    data = toy_split(200)
    path = tmp_path / "pool"
    build(path, [tiny_teacher(classes=3)], data, views=1)
    assert ViewPool.open(path, "key") is not None
    assert ViewPool.open(path, "other") is None  # stale: computed for other inputs
    with pytest.raises(RuntimeError, match="killed"):  # a rebuild that dies half way...
        build(path, [Failing()], data, views=1)
    assert ViewPool.open(path, "key") is None  # ...leaves no key behind
    assert not list(path.glob("*.tmp"))
    build(path, [tiny_teacher(classes=3)], data, views=1)
    meta = read_json(path / "pool.json")
    write_json(path / "pool.json", {**meta, "shapes": {**meta["shapes"], "logits.npy": [199, 1, 1, 3]}})
    assert ViewPool.open(path, "key") is None  # the files are not what the key file says
    loud = tiny_teacher(classes=3)
    with torch.no_grad():
        loud[-1].weight.mul_(1e6)
    with pytest.raises(PoolOverflow, match="float16 range"):
        build(tmp_path / "loud", [loud], data, views=1)
    assert ViewPool.open(tmp_path / "loud", "key") is None
    build(tmp_path / "loud", [loud], data, views=1, exact=False)  # log-probabilities always fit


def test_spec_field_pools_by_default_and_refuses_fickle_teachers(tmp_path):
    def distill(**fields):
        return parse_spec({"distillation": fields}).distillation

    assert distill().pool_views == 1  # no augmentation: one view, the image itself
    assert distill(training={"augment": {"crop_padding": 1}}).pool_views == 8
    assert distill(training={"augment": {"crop_padding": 1}}, view_pool=16).pool_views == 9  # 9 distinct crops
    assert distill(view_pool=0).pool_views == 0
    assert parse_spec({"method": {"preset": "baseline_1"}}).distillation.pool_views == 0  # no teachers
    assert distill(teacher_noise={"logit_noise": 0.2, "swap": "top2", "swap_probability": 0.5},
                   mutual={"enabled": True}, soft_randomization={"sigma": 0.1}).pool_views == 1
    fickle = {"teachers": {"dropout": 0.3}, "distillation": {"teacher_noise": {"fickle": True}}}
    assert parse_spec(fickle).distillation.pool_views == 0  # auto: the teachers run live
    with pytest.raises(SpecError) as info:
        parse_spec({**fickle, "distillation": {"teacher_noise": {"fickle": True}, "view_pool": 4}})
    assert len(info.value.messages) == 1 and "fickle" in info.value.messages[0]
    assert "view_pool: 0" in info.value.messages[0]
    with pytest.raises(SpecError, match="cache_teacher_logits was replaced by distillation.view_pool"):
        parse_spec({"distillation": {"cache_teacher_logits": "on"}})
    spec = tmp_path / "spec.yaml"
    spec.write_text("teachers: {dropout: 0.3}\ndistillation: {view_pool: 4, teacher_noise: {fickle: true}}\n")
    for command in ("validate", "run"):
        result = CliRunner().invoke(main, [command, str(spec)])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.strip().splitlines()) == 1 and "fickle" in result.stderr


def pool_summary(run):
    return read_json(RunLayout(run).student_summary)


@pytest.mark.slow
def test_pipeline_builds_reuses_and_shares_the_pool(tmp_path):
    stages = [s for s in STAGES if s.name in ("data", "teachers", "distill")]
    augmented = {**FAST_TRAINING, "augment": {"crop_padding": 1}}
    spec = parse_spec(fast_spec(export={"onnx": False}, distillation={"training": augmented, "view_pool": 3}))
    first = tmp_path / "first"
    run_pipeline(spec, first, stages=stages)
    summary = pool_summary(first)
    assert summary["teacher_logits"] == "view pool" and summary["view_pool"]["origin"] == "built"
    assert summary["view_pool"]["views"] == 3 and summary["view_pool"]["storage"] == "logits"
    key = read_json(RunLayout(first).view_pool / "pool.json")["key"]
    assert ViewPool.open(user_cache_dir() / "view_pools" / key, key) is not None  # published for other runs

    # the stored outputs are the trained teachers' outputs on the stored views
    from compressor.checkpoint import load_classifier
    from compressor.data import prepare_data

    pool = ViewPool.open(RunLayout(first).view_pool, key)
    train = prepare_data(spec).train
    teachers = TeacherLogits([load_classifier(RunLayout(first).teacher_weights(i))[0] for i in range(2)], "cpu")
    index = torch.arange(0, len(train), 7)
    view = torch.randint(0, 3, index.shape)
    stored = torch.from_numpy(np.asarray(pool.arrays["views.npy"])[index.numpy(), view.numpy()].astype(np.int64))
    batches = ShuffledBatches(train, 8, spec.distillation.training.augment, Task.MULTICLASS, "cpu")
    exact = teachers(batches.inputs(train.images[index], Views(dy=stored[:, 0], dx=stored[:, 1])))
    assert (pool.lookup(index, view, "cpu") - exact).abs().le(exact.abs() * 2.0**-11 + 1e-5).all()

    # other distillation settings, same teachers and data: the run's own pool is read
    spec2 = parse_spec(fast_spec(export={"onnx": False}, distillation={"training": augmented, "view_pool": 3,
                                                                        "alpha": 0.5}))
    run_pipeline(spec2, first, stages=stages)
    assert pool_summary(first)["view_pool"]["origin"] == "run directory"

    # another run directory, same spec: its teachers come out bit-identical, so it reads the shared pool
    second = tmp_path / "second"
    run_pipeline(spec, second, stages=stages)
    assert pool_summary(second)["view_pool"]["origin"] == "user cache"
    assert not RunLayout(second).view_pool.exists()

    # other teachers: another key, computed again
    retrained = parse_spec(fast_spec(export={"onnx": False}, teachers={"training": {**FAST_TRAINING, "epochs": 1}},
                                     distillation={"training": augmented, "view_pool": 3}))
    run_pipeline(retrained, first, stages=stages)
    assert pool_summary(first)["view_pool"]["origin"] == "built"
    assert read_json(RunLayout(first).view_pool / "pool.json")["key"] != key

    # fickle teachers under auto: no pool, the teachers run live
    fickle = parse_spec(fast_spec(export={"onnx": False}, teachers={"dropout": 0.3},
                                  distillation={"teacher_noise": {"fickle": True}}))
    run_pipeline(fickle, tmp_path / "fickle", stages=stages)
    summary = pool_summary(tmp_path / "fickle")
    assert summary["teacher_logits"] == "live" and summary["view_pool"] is None
