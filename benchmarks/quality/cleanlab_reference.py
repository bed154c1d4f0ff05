"""The simple label-audit references: cleanlab on 5-fold cross-validated probabilities of one model.

On the product's digits training split with injected symmetric noise (built by ``compressor.data.prepare_data``
exactly as ``compressor run`` builds it), get out-of-sample probabilities by 5-fold cross-validation (every sample's
probabilities come from a model that never saw it), flag label issues with ``cleanlab.filter.find_label_issues``
(default filter) and score the flags against the injected noise mask: precision, recall and seconds
(cross-validation and cleanlab together, one thread). The model (``--model``):

* ``logreg``: scikit-learn's ``LogisticRegression`` on the raw pixels (``cross_val_predict(method="predict_proba")``);
* ``small_cnn``: the product's ``small_cnn`` trained 15 epochs per fold on the noisy labels (SGD 0.05, momentum 0.9,
  weight decay 5e-4, cosine schedule, batch 64, no augmentation), the data scientist's other usual choice.

    .venv/bin/python benchmarks/quality/cleanlab_reference.py --seeds 0 1 2 3 4 --model logreg small_cnn
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def cnn_fold_probabilities(x: np.ndarray, y: np.ndarray, train: np.ndarray, held_out: np.ndarray, seed: int,
                           epochs: int = 15) -> np.ndarray:
    """Softmax probabilities on ``held_out`` of a ``small_cnn`` trained on ``train`` (``x``: ``[N, 1, H, W]``)."""
    import torch
    import torch.nn.functional as F

    from compressor.models.classifier import build_classifier

    torch.manual_seed(seed)
    xt, yt = torch.as_tensor(x[train], dtype=torch.float32), torch.as_tensor(y[train])
    model = build_classifier("small_cnn", x.shape[1], int(y.max()) + 1, x.shape[-1], [float(xt.mean())],
                             [float(xt.std())])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for b in torch.randperm(len(xt), generator=g).split(64):
            loss = F.cross_entropy(model(xt[b]), yt[b])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    with torch.no_grad():
        return torch.softmax(model.eval()(torch.as_tensor(x[held_out], dtype=torch.float32)), -1).numpy()


def audit(seed: int, rate: float, folds: int = 5, model: str = "logreg") -> dict:
    """Precision, recall, flagged count and seconds of the reference audit with ``model`` for one seed."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from compressor.data import prepare_data, to_model_input
    from compressor.spec import parse_spec

    spec = parse_spec({"seed": seed, "data": {"source": "digits"}, "noise": {"kind": "symmetric", "rate": rate}})
    train = prepare_data(spec).train
    images = to_model_input(train.images, train.window, "cpu").numpy()
    y, truth = np.asarray(train.labels), np.asarray(train.noise_mask)
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    start = time.perf_counter()
    if model == "logreg":
        x = images.reshape(len(train), -1).astype(np.float64)
        probs = cross_val_predict(LogisticRegression(max_iter=1000), x, y, method="predict_proba", cv=cv)
    else:
        probs = np.zeros((len(y), int(y.max()) + 1))
        for fold, (fit, held_out) in enumerate(cv.split(images, y)):
            probs[held_out] = cnn_fold_probabilities(images, y, fit, held_out, seed * 10 + fold)
    flagged = find_label_issues(y, probs)
    seconds = time.perf_counter() - start
    hits = int((flagged & truth).sum())
    return {"seed": seed, "model": model, "samples": len(y), "noise": float(truth.mean()),
            "flagged": int(flagged.sum()), "precision": hits / max(int(flagged.sum()), 1),
            "recall": hits / max(int(truth.sum()), 1), "seconds": seconds}


def main() -> None:
    """Print one markdown row per model and seed, and the mean per model."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rate", type=float, default=0.4)
    parser.add_argument("--model", nargs="+", choices=["logreg", "small_cnn"], default=["logreg"])
    args = parser.parse_args()
    print("| model | seed | train samples | realised noise | flagged | precision | recall | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for model in args.model:
        rows = [audit(s, args.rate, model=model) for s in args.seeds]
        for r in rows:
            print(f"| {model} | {r['seed']} | {r['samples']} | {r['noise']:.3f} | {r['flagged']} | "
                  f"{r['precision']:.3f} | {r['recall']:.3f} | {r['seconds']:.2f} |", flush=True)
        mean = {k: float(np.mean([r[k] for r in rows])) for k in ("precision", "recall", "seconds")}
        spread = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0 for k in mean}
        print(f"| {model} | mean ± std | | | | {mean['precision']:.3f} ± {spread['precision']:.3f} | "
              f"{mean['recall']:.3f} ± {spread['recall']:.3f} | {mean['seconds']:.2f} ± {spread['seconds']:.2f} |")


if __name__ == "__main__":
    main()
