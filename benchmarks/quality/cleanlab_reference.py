"""The simple label-audit reference: cleanlab on 5-fold cross-validated logistic-regression probabilities.

On the product's digits training split with injected symmetric noise (built by ``compressor.data.prepare_data``
exactly as ``compressor run`` builds it), fit scikit-learn's ``LogisticRegression`` on the raw pixels in 5-fold
cross-validation (``cross_val_predict(method="predict_proba")``: every sample's probabilities come from a model that
never saw it), flag label issues with ``cleanlab.filter.find_label_issues`` and score the flags against the injected
noise mask: precision, recall and seconds (cross-validation and cleanlab together, one thread).

    .venv/bin/python benchmarks/quality/cleanlab_reference.py --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402


def audit(seed: int, rate: float, folds: int = 5) -> dict:
    """Precision, recall, flagged count and seconds of the reference audit for one seed."""
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from compressor.data import prepare_data, to_model_input
    from compressor.spec import parse_spec

    spec = parse_spec({"seed": seed, "data": {"source": "digits"}, "noise": {"kind": "symmetric", "rate": rate}})
    train = prepare_data(spec).train
    x = to_model_input(train.images, train.window, "cpu").reshape(len(train), -1).numpy().astype(np.float64)
    y, truth = np.asarray(train.labels), np.asarray(train.noise_mask)
    start = time.perf_counter()
    probs = cross_val_predict(LogisticRegression(max_iter=1000), x, y, method="predict_proba",
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
    flagged = find_label_issues(y, probs)
    seconds = time.perf_counter() - start
    hits = int((flagged & truth).sum())
    return {"seed": seed, "samples": len(y), "noise": float(truth.mean()), "flagged": int(flagged.sum()),
            "precision": hits / max(int(flagged.sum()), 1), "recall": hits / max(int(truth.sum()), 1),
            "seconds": seconds}


def main() -> None:
    """Print one markdown row per seed and the mean."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--rate", type=float, default=0.4)
    args = parser.parse_args()
    rows = [audit(s, args.rate) for s in args.seeds]
    print("| seed | train samples | realised noise | flagged | precision | recall | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['samples']} | {r['noise']:.3f} | {r['flagged']} | {r['precision']:.3f} | "
              f"{r['recall']:.3f} | {r['seconds']:.2f} |")
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("precision", "recall", "seconds")}
    spread = {k: float(np.std([r[k] for r in rows], ddof=1)) if len(rows) > 1 else 0.0 for k in mean}
    print(f"| mean ± std | | | | {mean['precision']:.3f} ± {spread['precision']:.3f} | "
          f"{mean['recall']:.3f} ± {spread['recall']:.3f} | {mean['seconds']:.2f} ± {spread['seconds']:.2f} |")


if __name__ == "__main__":
    main()
