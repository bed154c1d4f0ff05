"""The training loop and every evaluation pass on streamed data: the batch source reads through a ``DataLoader``
with worker processes and gives the same run as in-memory data; evaluation reads stores batch by batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor.data import prepare_data
from compressor.data.stores import ArrayStore, LazyStore
from compressor.models import build_classifier
from compressor.pipeline import run_pipeline
from compressor.recipes import distill_student, train_supervised
from compressor.run_layout import RunLayout
from compressor.spec import parse_spec
from compressor.training import batch_source
from tests.synthetic import count_store_reads, fast_spec, write_npz

TRAINING = {"epochs": 2, "batch_size": 16, "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "constant"},
            "augment": {"hflip": True, "crop_padding": 2}}


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_both(spec, bundle) -> tuple[dict, dict]:
    """A teacher trained on the training split, then a student distilled from it (KD, averaging with batch-norm
    recomputation); the weights of both."""
    train, info = bundle.train, (bundle.channels, bundle.num_classes, bundle.image_size, bundle.mean, bundle.std)
    torch.manual_seed(0)
    teacher = build_classifier("tiny_cnn", *info)
    train_supervised(teacher, train, spec.teachers.training, bundle.task, "cpu", torch.Generator().manual_seed(1))
    student = build_classifier("tiny_cnn", *info)
    _, averager = distill_student(student, [teacher], train, spec.distillation, bundle.task, "cpu",
                                  torch.Generator().manual_seed(2))
    return weights(teacher), weights(averager.model)


def test_streamed_data_with_workers_trains_exactly_as_in_memory(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "d.npz", sizes=(70, 10, 10), image_size=10, channels=3)
    loaders = []

    def counted(*args, **kwargs):
        loaders.append(kwargs.get("workers"))
        yield from pixel_batches(*args, **kwargs)

    pixel_batches = batch_source.pixel_batches
    monkeypatch.setattr(batch_source, "pixel_batches", counted)
    runs = {}
    for load, workers in (("memory", 0), ("stream", 2), ("memory", 1)):
        raw = fast_spec(data={"source": "npz", "path": str(path), "load": load, "workers": workers},
                        teachers={"training": TRAINING}, distillation={"training": TRAINING, "alpha": 0.5})
        spec = parse_spec(raw)
        bundle = prepare_data(spec)
        assert isinstance(bundle.train.images, ArrayStore if load == "stream" else torch.Tensor)
        runs[load, workers] = train_both(spec, bundle)
    # one DataLoader per epoch of each training (teacher, student) of the two streamed runs, none in memory at 0
    assert loaders == [2] * 4 + [1] * 4
    reference = runs["memory", 0]
    for key, (teacher, student) in runs.items():
        for got, want in ((teacher, reference[0]), (student, reference[1])):
            assert all(torch.equal(got[name], want[name]) for name in want), key


def test_a_streamed_run_reads_every_split_in_batches_never_whole(tmp_path, monkeypatch):
    """The whole pipeline (data, teachers, distillation with the teacher-logit cache and batch-norm recomputation,
    metrics, certify, export with parity and the int8 gate, report) on splits larger than any batch."""
    path = write_npz(tmp_path / "d.npz", sizes=(600, 520, 520), image_size=8, num_classes=3)
    reads = count_store_reads(monkeypatch)
    robustness = {"enabled": True, "samples": 16, "attacks": {"linf_eps": ["2/255"], "l2_eps": [], "steps": 1},
                  "corruptions": {"names": ["jpeg"], "severities": [1]},
                  "smoothing": {"n0": 10, "n": 20, "predict_n": 0, "samples": 4, "radii": [0.0]},
                  "landscape": {"grid": 3, "samples": 8}}
    training = {**TRAINING, "epochs": 1, "batch_size": 64}
    raw = fast_spec(data={"source": "npz", "path": str(path), "load": "stream"}, robustness=robustness,
                    teachers={"training": training},
                    distillation={"training": {**training, "augment": {"hflip": False, "crop_padding": 0}},
                                  "view_pool": 1},
                    export={"quantize": {"enabled": True, "mode": "dynamic", "max_accuracy_drop": 1.0}})
    results = run_pipeline(parse_spec(raw), tmp_path / "run")
    assert {r.name: r.status for r in results}["certify"] == "ran"
    assert RunLayout(tmp_path / "run").onnx.exists() and reads
    assert max(reads) <= 512 < 520  # the largest batch of any pass (predict_logits, the teacher view pool)


@pytest.mark.parametrize("workers", [0, 2])
def test_eval_passes_read_a_store_in_order(tmp_path, workers):
    from compressor.data.batches import iterate_inputs

    path = write_npz(tmp_path / "d.npz", sizes=(50, 10, 10), image_size=8)
    bundle = prepare_data(parse_spec({"data": {"source": "npz", "path": str(path), "load": "stream",
                                               "workers": workers}}))
    store = bundle.train.images
    assert isinstance(store, LazyStore) and store.workers == workers and bundle.train.workers == workers
    assert store.subset(np.arange(5)).workers == workers
    got = torch.cat(list(iterate_inputs(store, 16, "cpu", bundle.train.window)))
    want = store.fetch(np.arange(50)).float() / 255.0
    assert torch.equal(got, want)


def test_how_the_data_is_read_retrains_nothing(tmp_path):
    """data.load and data.workers change how the pixels are read, never what a stage computes
    (``test_streamed_data_with_workers_trains_exactly_as_in_memory``): changing them retrains nothing, while a field
    that changes the data (the window) re-runs every stage. Only export (and the report after it) re-runs: the ONNX
    metadata records the hash of the whole resolved spec."""
    from compressor.pipeline import stage_keys

    path = write_npz(tmp_path / "d.npz", sizes=(20, 5, 5), image_size=8)

    def keys(**data):
        return stage_keys(parse_spec({"data": {"source": "npz", "path": str(path), **data}}))

    reference = keys()
    enabled = [name for name, key in reference.items() if key]
    assert {"data", "teachers", "distill", "export"} <= set(enabled)
    computed = [name for name in enabled if name not in ("export", "report")]
    assert {"data", "teachers", "distill", "metrics"} <= set(computed)
    for how in ({"load": "stream"}, {"load": "memory", "workers": 3}, {"workers": 1}):
        changed = keys(**how)
        assert all(changed[name] == reference[name] for name in computed), how
    changed = keys(window=[0, 200])
    assert all(changed[name] != reference[name] for name in enabled)
