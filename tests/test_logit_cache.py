"""Teacher-logit cache: float16 contents, the same student as running the teachers (up to that rounding), the
validity rule, and caches that must not be trusted (stale key, interrupted build, overflow)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from compressor.checkpoint import load_classifier
from compressor.data.batches import to_float
from compressor.io import read_json, write_json
from compressor.pipeline import run_pipeline
from compressor.pipeline.runner import STAGES
from compressor.recipes import distill_student
from compressor.run_layout import RunLayout
from compressor.spec import SpecError, parse_spec
from compressor.task import Task
from compressor.training.logit_cache import CacheOverflow, TeacherLogitCache
from compressor.training.teacher_logits import CachedTeacherLogits, TeacherLogits
from tests.method_cases import one_thread, tiny_teacher, toy_split  # noqa: F401  (fixture)
from tests.synthetic import FAST_TRAINING, fast_spec


def teachers():
    return [tiny_teacher(classes=3, seed=1), tiny_teacher(classes=3, seed=2)]


def test_cache_holds_every_teachers_logits_rounded_to_float16(tmp_path):
    data = toy_split(300)
    models = teachers()
    cache = TeacherLogitCache.build(tmp_path / "c.npy", "key", models, data.images, "cpu", batch_size=64)
    assert cache.shape == (2, 300, 3) and cache.logits.dtype == np.float16
    assert isinstance(cache.logits, np.memmap)  # memory-mapped, not loaded
    with torch.no_grad():
        exact = torch.stack([m(to_float(data.images, "cpu")) for m in models])  # [K, N, C] float32
    index = torch.tensor([299, 0, 17, 17, 64])
    got = cache.lookup(index, "cpu")
    assert got.dtype == torch.float32 and got.shape == (2, 5, 3)
    # float16 keeps 11 significant bits: rounding to nearest moves a value by at most half a unit, 2^-11 relative
    bound = exact[:, index].abs() * 2.0**-11 + 2.0**-24
    assert ((got - exact[:, index]).abs() <= bound).all()
    assert torch.equal(got, exact[:, index].half().float())  # it is exactly the float16 rounding


def test_cached_distillation_equals_running_teachers_rounded_to_float16(tmp_path):
    """The cache changes nothing but the float16 rounding of the teacher logits: the students are bit-identical."""
    data = toy_split(200)
    spec = parse_spec({"distillation": {
        "weighting": "exponential", "teacher_noise": {"logit_noise": 0.1}, "soft_randomization": {"sigma": 0.1},
        "messy": {"rate": 0.1}, "averaging": {"warmup_epochs": 0}, "training": {**FAST_TRAINING, "epochs": 2}},
    }).distillation
    cache = TeacherLogitCache.build(tmp_path / "c.npy", "key", teachers(), data.images, "cpu")
    live = TeacherLogits(teachers(), "cpu")

    def rounded(x, index):
        return live(x, index).half().float()

    results = {}
    for name, source in (("cache", CachedTeacherLogits(cache, "cpu")), ("rounded", rounded), ("float32", None)):
        torch.manual_seed(5)
        student = tiny_teacher(classes=3, seed=5).train()
        _, averager = distill_student(student, teachers(), data, spec, Task.MULTICLASS, "cpu",
                                      torch.Generator().manual_seed(0), teacher_source=source)
        results[name] = {k: v.clone() for k, v in averager.model.state_dict().items()}
    for key, value in results["cache"].items():
        assert torch.equal(value, results["rounded"][key]), key
        # against float32 teacher logits: only the rounding differs, so the weights stay close
        assert torch.allclose(value.float(), results["float32"][key].float(), atol=1e-3), key


def test_validity_rule_of_the_cache():
    def distill(**fields):
        return parse_spec({"distillation": fields}).distillation

    assert distill().uses_logit_cache  # auto, deterministic teachers
    compatible = distill(teacher_noise={"logit_noise": 0.2, "swap": "top2", "swap_probability": 0.5},
                         soft_randomization={"sigma": 0.1}, messy={"rate": 0.2}, weight_draw="sample",
                         cache_teacher_logits="on")
    assert compatible.uses_logit_cache  # noise after the teachers or on the student's input only
    assert not distill(training={"augment": {"hflip": True}}).uses_logit_cache
    assert not distill(training={"augment": {"crop_padding": 2}}).uses_logit_cache
    assert not distill(cache_teacher_logits="off").uses_logit_cache
    fickle = parse_spec({"teachers": {"dropout": 0.3}, "distillation": {"teacher_noise": {"fickle": True}}})
    assert not fickle.distillation.uses_logit_cache
    assert not parse_spec({"method": {"preset": "baseline_1"}}).distillation.uses_logit_cache  # no teachers
    with pytest.raises(SpecError, match="cache_teacher_logits is 'on'.*training.augment"):
        parse_spec({"distillation": {"cache_teacher_logits": "on", "training": {"augment": {"hflip": True}}}})
    with pytest.raises(SpecError, match="fickle"):
        parse_spec({"teachers": {"dropout": 0.3},
                    "distillation": {"cache_teacher_logits": "on", "teacher_noise": {"fickle": True}}})


class Failing(torch.nn.Module):
    """A teacher that fails on its third batch (a run killed while building the cache)."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = tiny_teacher(classes=3), 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("killed")
        return self.inner(x)


def test_stale_interrupted_or_overflowing_caches_are_not_trusted(tmp_path):
    data = toy_split(200)
    path = tmp_path / "c.npy"
    TeacherLogitCache.build(path, "old", teachers(), data.images, "cpu")
    assert TeacherLogitCache.open(path, "old") is not None
    assert TeacherLogitCache.open(path, "new") is None  # stale: computed for other inputs
    with pytest.raises(RuntimeError, match="killed"):  # a rebuild that dies half way...
        TeacherLogitCache.build(path, "new", [Failing()], data.images, "cpu", batch_size=64)
    assert TeacherLogitCache.open(path, "new") is None and TeacherLogitCache.open(path, "old") is None  # ...no key
    assert not list(tmp_path.glob("*.tmp"))
    TeacherLogitCache.build(path, "new", teachers(), data.images, "cpu")
    meta = read_json(path.with_suffix(".json"))
    write_json(path.with_suffix(".json"), {**meta, "shape": [2, 199, 3]})  # a file that is not what the key says
    assert TeacherLogitCache.open(path, "new") is None
    loud = tiny_teacher(classes=3)
    with torch.no_grad():
        loud[-1].weight.mul_(1e6)
    with pytest.raises(CacheOverflow, match="float16 range"):
        TeacherLogitCache.build(tmp_path / "o.npy", "k", [loud], data.images, "cpu")
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.slow
def test_pipeline_uses_rebuilds_and_skips_the_cache(tmp_path):
    stages = [s for s in STAGES if s.name in ("data", "teachers", "distill")]
    run = tmp_path / "run"
    spec = parse_spec(fast_spec(export={"onnx": False}))
    run_pipeline(spec, run, stages=stages)
    assert read_json(run / "student" / "summary.json")["teacher_logits"] == "cache"
    first_key = read_json(cache_path_of(run).with_suffix(".json"))["key"]
    assert_cache_matches_teachers(run, spec)

    # other teachers: the cache's key no longer matches and it is computed again from the new teachers
    retrained = parse_spec(fast_spec(export={"onnx": False}, teachers={"training": {**FAST_TRAINING, "epochs": 1}}))
    run_pipeline(retrained, run, stages=stages)
    assert read_json(cache_path_of(run).with_suffix(".json"))["key"] != first_key
    assert_cache_matches_teachers(run, retrained)

    # distillation-time augmentation: the teachers run per batch and the student differs from the cached run
    before = load_file(run / "student.safetensors")
    augmented = parse_spec(fast_spec(export={"onnx": False}, teachers={"training": {**FAST_TRAINING, "epochs": 1}},
                                     distillation={"training": {**FAST_TRAINING, "augment": {"hflip": True}}}))
    run_pipeline(augmented, run, stages=stages)
    assert read_json(run / "student" / "summary.json")["teacher_logits"] == "per batch"
    after = load_file(run / "student.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def cache_path_of(run):
    return RunLayout(run).teacher_logit_cache


def assert_cache_matches_teachers(run, spec):
    from compressor.data import prepare_data

    train = prepare_data(spec).train
    cache = np.load(cache_path_of(run), mmap_mode="r")
    for i in range(spec.subsets.count):
        model, _ = load_classifier(run / "teachers" / f"teacher_{i}.safetensors")
        with torch.no_grad():
            expected = model(to_float(train.images, "cpu")).half().numpy()
        assert np.array_equal(cache[i], expected)

