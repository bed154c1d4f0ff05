"""Label audit: rank the training labels most likely wrong from the teachers' out-of-sample predictions.

Every teacher trains on its own subset of the training split, so for a sample the teachers that never saw it give
predictions of the kind cross-validation would: they could not memorise its (possibly wrong) label. For each sample
the audit averages the probabilities of the teachers that did not see it; a sample every teacher saw falls back on
the whole ensemble (in-sample, so a teacher that memorised the noise hides it there; the CSV says which rows are
which). Confident learning (cleanlab's ``find_label_issues``, Northcutt et al. 2021) then flags the labels whose
probability is low compared with the per-class thresholds it estimates from the same probabilities: it counts the
confident joint of given and predicted labels and, with ``filter_by="prune_by_noise_rate"``, flags for every
off-diagonal cell (given i, likely j) of the joint as many samples labelled i as the cell counts, those whose
probability of j most exceeds their probability of i.

``score`` is cleanlab's label quality (self-confidence: the averaged probability of the given label; for multi-label
data the per-label self-confidences pooled by cleanlab's default, an exponential moving average that weighs the
worst labels most); low means likely wrong. Rows are ranked by it, worst first.

What distillation does with the flagged rows is ``data.label_issues``: ``report`` (nothing), ``drop`` (train without
them) or ``relabel`` (train on the suggested label, the audit's most probable class or label set).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compressor.io import atomic_path
from compressor.task import Task

FILTER_BY = "prune_by_noise_rate"  # cleanlab's default; the one filter above both quickstart targets on every seed
# measured with the random subset layout (docs/label_audit.md)
COLUMNS = ["index", "given_label", "suggested_label", "score", "out_of_sample", "given_name", "suggested_name"]


@dataclass
class LabelIssues:
    """The flagged training rows, worst first.

    Attributes:
        index: rows of the training split.
        given: their given labels (``int64 [M]`` classes, or ``[M, L]`` 0/1 rows for multi-label data).
        suggested: the audit's label for them (most probable class, or the labels with probability > 1/2).
        score: label quality in [0, 1] (low: likely wrong).
        out_of_sample: whether the probabilities came from teachers that never saw the row.
    """

    index: np.ndarray
    given: np.ndarray
    suggested: np.ndarray
    score: np.ndarray
    out_of_sample: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def out_of_sample_probabilities(probs: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per sample, the mean probabilities of the teachers that did not train on it.

    Args:
        probs: ``[K, N, C]`` probabilities of the K teachers on the N training samples.
        seen: ``[K, N]`` bool, True where teacher k trained on sample n.

    Returns:
        ``[N, C]`` probabilities (the mean over every teacher where all K saw the sample) and the ``[N]`` bool mask
        of the samples whose probabilities are out of sample.
    """
    unseen = ~np.asarray(seen, dtype=bool)
    out_of_sample = unseen.any(axis=0)
    weights = np.where(out_of_sample[None, :], unseen, True).astype(np.float64)  # every teacher where none is unseen
    mean = np.einsum("kn,knc->nc", weights, probs.astype(np.float64)) / weights.sum(axis=0)[:, None]
    return mean.astype(np.float32), out_of_sample


def seen_mask(subsets: list[np.ndarray], num_samples: int) -> np.ndarray:
    """``[K, N]`` bool: True where sample n is in teacher k's subset."""
    seen = np.zeros((len(subsets), num_samples), dtype=bool)
    for k, subset in enumerate(subsets):
        seen[k, subset] = True
    return seen


def find_issues(labels: np.ndarray, probs: np.ndarray, out_of_sample: np.ndarray, task: Task) -> LabelIssues:
    """Flag and rank the likely wrong labels with cleanlab's confident learning.

    Args:
        labels: the given training labels (``int64 [N]`` or ``[N, L]`` 0/1 rows).
        probs: ``[N, C]`` out-of-sample probabilities (softmax, or a sigmoid per label).
        out_of_sample: ``[N]`` bool from ``out_of_sample_probabilities``.
        task: multiclass or multilabel (cleanlab's multi-label filter and scores).

    Returns:
        The flagged rows, lowest label quality first.
    """
    probs = np.asarray(probs, dtype=np.float64)
    # n_jobs=1: cleanlab's process pool hands its workers module globals that only a fork inherits, so in a
    # spawned process (a worker of a spawn-started pool) they fail with NameError; one process is plenty here
    if task.multilabel:
        from cleanlab.multilabel_classification.filter import find_label_issues
        from cleanlab.multilabel_classification.rank import get_label_quality_scores

        given_lists = [list(np.flatnonzero(row > 0.5)) for row in labels]
        flagged = find_label_issues(given_lists, probs, filter_by=FILTER_BY, n_jobs=1)
        scores = get_label_quality_scores(given_lists, probs)
        suggested = (probs > 0.5).astype(np.float32)
    else:
        from cleanlab.filter import find_label_issues
        from cleanlab.rank import get_label_quality_scores

        labels = np.asarray(labels, dtype=np.int64)
        flagged = find_label_issues(labels, probs, filter_by=FILTER_BY, n_jobs=1)
        scores = get_label_quality_scores(labels, probs, method="self_confidence")
        suggested = probs.argmax(axis=1)
    index = np.flatnonzero(flagged)
    index = index[np.argsort(scores[index], kind="stable")]
    return LabelIssues(index=index, given=np.asarray(labels)[index], suggested=np.asarray(suggested)[index],
                       score=np.asarray(scores, dtype=np.float64)[index], out_of_sample=out_of_sample[index])


def _label_text(label, task: Task, classes: list[str] | None = None) -> str:
    """A class index or ``;``-separated label set, as indices or (given ``classes``) as names."""
    indices = np.flatnonzero(label > 0.5) if task.multilabel else [label]
    return ";".join(str(int(i)) if classes is None else classes[int(i)] for i in indices)


def write_issues_csv(path: str | Path, issues: LabelIssues, task: Task, classes: list[str]) -> None:
    """Atomically write the issues as CSV (columns ``COLUMNS``; multi-label sets as ``;``-separated indices)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            for i in range(len(issues)):
                given, suggested = issues.given[i], issues.suggested[i]
                writer.writerow([int(issues.index[i]), _label_text(given, task), _label_text(suggested, task),
                                 f"{issues.score[i]:.6f}", int(bool(issues.out_of_sample[i])),
                                 _label_text(given, task, classes), _label_text(suggested, task, classes)])


def read_issues_csv(path: str | Path, task: Task, num_classes: int) -> LabelIssues:
    """The issues written by ``write_issues_csv`` (labels as class indices or 0/1 rows of ``num_classes``)."""

    def parse(text: str):
        if not task.multilabel:
            return int(text)
        row = np.zeros(num_classes, dtype=np.float32)
        row[[int(i) for i in text.split(";") if i != ""]] = 1.0
        return row

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    shape = (0, num_classes) if task.multilabel else (0,)
    dtype = np.float32 if task.multilabel else np.int64
    stack = lambda values: np.array(values, dtype=dtype) if values else np.zeros(shape, dtype)  # noqa: E731
    return LabelIssues(
        index=np.array([int(r["index"]) for r in rows], dtype=np.int64),
        given=stack([parse(r["given_label"]) for r in rows]),
        suggested=stack([parse(r["suggested_label"]) for r in rows]),
        score=np.array([float(r["score"]) for r in rows], dtype=np.float64),
        out_of_sample=np.array([r["out_of_sample"] == "1" for r in rows], dtype=bool),
    )


def apply_issues(labels: np.ndarray, issues: LabelIssues, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """The training rows and labels distillation uses under ``data.label_issues``.

    Args:
        labels: the given training labels.
        issues: the audit's flagged rows.
        mode: ``report`` (everything as given), ``drop`` (the flagged rows left out) or ``relabel`` (their labels
            replaced by the suggested ones).

    Returns:
        The kept row indices into the training split and their labels.
    """
    rows = np.arange(len(labels))
    if mode == "report" or len(issues) == 0:
        return rows, labels
    if mode == "drop":
        keep = np.setdiff1d(rows, issues.index)
        return keep, labels[keep]
    relabelled = np.array(labels, copy=True)  # relabel: the spec's Literal admits no other mode
    relabelled[issues.index] = issues.suggested.astype(relabelled.dtype)
    return rows, relabelled
