"""An ONNX model as a teacher: same logits as the torch model it came from, its settings stored in the installed
copy, and one-line errors naming the file for every model a teacher cannot be."""

from __future__ import annotations

import copy
import pickle

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from compressor.checkpoint import ModelInfo
from compressor.model_files import onnx_from_file
from compressor.models import create_model
from compressor.models.onnx_teacher import (
    SETTINGS_KEY,
    OnnxTeacher,
    model_file_parts,
    read_props,
    write_onnx_teacher,
)
from compressor.models.weight_files import ModelFileError
from compressor.spec.model_files import TeacherModelSpec
from compressor.task import Task


def export(model: torch.nn.Module, path, shape=(1, 8, 8), batch: int | None = None):
    """``model`` as ONNX (TorchScript exporter, like a user's own export); a fixed batch size when ``batch``."""
    example = torch.rand(batch or 2, *shape)
    axes = None if batch else {"x": {0: "n"}, "y": {0: "n"}}
    torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                      dynamic_axes=axes)
    return path


def data_info(channels=1, size=8, classes=4, task=Task.MULTICLASS) -> ModelInfo:
    return ModelInfo("onnx", channels, classes, size, [0.3] * channels, [0.2] * channels, task, [])


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return create_model("small_cnn", 1, 4, 8).eval()


def test_logits_match_the_torch_model_with_its_normalisation(tmp_path, backbone):
    """The backbone exported without normalisation, given mean/std: the wrapper reproduces backbone((x - m) / s)."""
    path = export(backbone, tmp_path / "b.onnx")
    teacher = OnnxTeacher(path, [0.3], [0.2])
    x = torch.rand(7, 1, 8, 8)
    with torch.no_grad():
        expected = backbone((x - 0.3) / 0.2)
    out = teacher(x.requires_grad_())
    assert out.dtype == torch.float32 and not out.requires_grad
    assert torch.allclose(out, expected, atol=1e-4)
    assert list(teacher.parameters()) == []  # frozen: nothing for an optimiser
    linear = export(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)), tmp_path / "linear.onnx")
    assert OnnxTeacher(linear).parameter_count == 64 * 4 + 4  # the values of the graph's weights


def test_fixed_batch_graph_runs_in_chunks(tmp_path, backbone):
    path = export(backbone, tmp_path / "fixed.onnx", batch=3)
    teacher = OnnxTeacher(path)
    assert teacher.batch == 3
    x = torch.rand(7, 1, 8, 8)  # 3 + 3 + 1 (padded)
    with torch.no_grad():
        assert torch.allclose(teacher(x), backbone(x), atol=1e-4)


@pytest.mark.parametrize("task", [Task.MULTICLASS, Task.MULTILABEL])
def test_probability_outputs_become_logits_of_the_same_distribution(tmp_path, backbone, task):
    head = torch.nn.Sigmoid() if task.multilabel else torch.nn.Softmax(dim=1)
    path = export(torch.nn.Sequential(backbone, head), tmp_path / "p.onnx")
    teacher = OnnxTeacher(path, output="probabilities", task=task)
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        logits = backbone(x)
    got = teacher(x)
    if task.multilabel:  # log-odds of a sigmoid are the logits themselves
        assert torch.allclose(got, logits, atol=1e-3)
    else:  # log-probabilities: the logits up to a per-row constant, so the same softmax
        assert torch.allclose(torch.softmax(got, 1), torch.softmax(logits, 1), atol=1e-5)


def test_pickles_and_copies_by_reopening_the_file(tmp_path, backbone):
    teacher = OnnxTeacher(export(backbone, tmp_path / "b.onnx"), [0.5], [0.25])
    x = torch.rand(3, 1, 8, 8)
    for clone in (copy.deepcopy(teacher), pickle.loads(pickle.dumps(teacher))):
        assert torch.equal(clone(x), teacher(x))


def test_installed_copy_carries_its_settings(tmp_path, backbone):
    """``write_onnx_teacher`` keeps the graph and adds the settings; ``from_file`` reads them back."""
    source = export(backbone, tmp_path / "b.onnx")
    target = tmp_path / "run" / "teacher_0.onnx"
    write_onnx_teacher(source, target, {"mean": [0.3], "std": [0.2], "output": "logits", "task": "multiclass"})
    assert "mean" in read_props(target)[SETTINGS_KEY]
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(OnnxTeacher.from_file(target)(x), OnnxTeacher(source, [0.3], [0.2])(x))


def test_installed_copy_of_a_model_with_external_weights(tmp_path, backbone):
    source = export(backbone, tmp_path / "big.onnx")
    proto = onnx.load(str(source))
    onnx.save_model(proto, str(tmp_path / "ext.onnx"), save_as_external_data=True, location="ext.bin",
                    size_threshold=0)
    target = tmp_path / "run" / "teacher_0.onnx"
    write_onnx_teacher(tmp_path / "ext.onnx", target, {"output": "logits"})
    assert (tmp_path / "run" / "teacher_0.onnx.data").is_file()
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(OnnxTeacher.from_file(target)(x), OnnxTeacher(source)(x), atol=1e-6)
    # every file the weights are in, for the keys that must change with them
    assert model_file_parts(tmp_path / "ext.onnx") == [tmp_path / "ext.onnx", tmp_path / "ext.bin"]
    assert model_file_parts(target) == [target, tmp_path / "run" / "teacher_0.onnx.data"]
    assert model_file_parts(source) == [source]


def entry(path, **fields) -> TeacherModelSpec:
    return TeacherModelSpec(path=path, **fields)


def test_checked_against_the_data_and_normalised_as_asked(tmp_path, backbone):
    path = export(backbone, tmp_path / "b.onnx")
    probe = torch.rand(4, 1, 8, 8)
    teacher, settings = onnx_from_file(entry(path), data_info(), probe)
    assert settings["normalization"] == "none" and settings["mean"] == [0.0]  # auto: [0, 1] pixels
    _, settings = onnx_from_file(entry(path, normalization="data"), data_info(), probe)
    assert settings["mean"] == [0.3] and settings["std"] == [0.2]
    _, settings = onnx_from_file(entry(path, normalization="imagenet"), data_info(), probe)
    assert settings["mean"] == [pytest.approx(0.449)]  # RGB average for a grey image


def two_inputs(path):
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 1, 8, 8]) for n in ("a", "b"))
    out = helper.make_tensor_value_info("s", TensorProto.FLOAT, ["n", 1, 8, 8])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["s"])], "g", [x, y], [out])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def image_out(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 8, 8])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [out])
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("make, info, expected", [
    (lambda p, b: p / "missing.onnx", data_info(), "missing.onnx: ONNX model not found"),
    (lambda p, b: (p / "text.onnx").write_text("not a model") and p / "text.onnx", data_info(),
     "text.onnx: onnxruntime cannot load this model"),
    (lambda p, b: two_inputs(p / "two.onnx"), data_info(), "two.onnx: the model has 2 inputs (a, b)"),
    (lambda p, b: image_out(p / "img.onnx"), data_info(), "img.onnx: output 'y' has shape"),
    (lambda p, b: export(b, p / "b.onnx"), data_info(channels=3), "b.onnx: the model takes 1-channel images, the "
     "data has 3 (set data.channels: 1"),
    (lambda p, b: export(b, p / "b.onnx", batch=2), data_info(size=12), "b.onnx: the model takes 8x8 images, the "
     "data has 12x12 (set data.image_size: 8)"),
    (lambda p, b: export(b, p / "b.onnx"), data_info(classes=3), "b.onnx: the model has 4 outputs, the data has 3 "
     "classes"),
])
def test_unusable_models_are_one_line_errors_naming_the_file(tmp_path, backbone, make, info, expected):
    path = make(tmp_path, backbone)
    probe = torch.rand(4, info.in_channels, info.image_size, info.image_size)
    with pytest.raises(ModelFileError) as error:
        onnx_from_file(entry(path), info, probe)
    message = str(error.value)
    assert message.startswith(str(tmp_path)) and expected in message and "\n" not in message
