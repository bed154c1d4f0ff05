"""A minimal, independent implementation of RoS-KD (and Baselines I, III, V) on digits, in plain PyTorch.

It is the "reference" arm of ``ablation_converged.py``: a few hundred lines that follow the paper's method section
directly, written without the product's training code, so that a difference between the two can be traced to one
choice. Every choice where the product differs is a field of ``Config`` whose default is the reference's own and
whose other value is the product's, so one factor at a time can be moved between the two.

Method (RoS-KD, Jaiswal et al.): K teachers, each trained with cross-entropy on its own overlapping subset of the
noisy training set; the student minimises, per batch,

    mean_i [ alpha * tau^2 * sum_m w_m KL(q_m(x_i) || p(x_i)) + (1 - alpha) * CE(S(x_i), y_i) ]

with ``w_m ~ Exp(1)`` drawn anew for every batch, ``q_m = softmax(T_m / tau)``, ``p = softmax(S / tau)``; after
``warmup`` epochs each epoch's student is folded into a running mean of the weights (Eq. 1), the final model.
Baseline I is the student alone (CE); Baseline III distils the average of K teachers trained on all the data
(equal weights 1/K); Baseline V is RoS-KD without the averaging.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Config:
    """One arm. Defaults are the reference's choices; the comment after each field gives the product's value."""

    layout: str = "random"  # product: "shared_core" (a core of p*N samples in every subset + disjoint parts)
    split: str = "80/20"  # product: "product" (its seeded, stratified 70/10/20 split: 1257 train / 360 test)
    noise: str = "exact"  # product: "bernoulli" (each label corrupted with probability r; realised rate varies);
    # "uniform": with probability r a label drawn from all classes (realised rate r (C-1)/C)
    normalize: bool = False  # product: True (per-channel mean/std of the training images); reference: pixels / 16
    teacher: str = "cnn240k"  # product: "small_cnn_wide" (conv-BN, global pooling, 210k parameters)
    student: str = "cnn150k"  # product: "small_cnn" (conv-BN, global pooling, 24k parameters)
    teacher_dropout: float = 0.0  # product models only: the product's teachers.dropout (before the classifier)
    dropout: bool = False  # True: 0.25 / 0.5 in the plain CNNs (product models: none by default)
    weight_decay: float = 5e-4  # product default: 2e-4
    weights: str = "normalised"  # the K draws divided by their sum (product); "raw": the paper's unnormalised draws
    equal_weight: float | None = None  # Baseline III's weight per teacher (None: 1/K, the average of the outputs)
    draw: str = "batch"  # alternative: "sample" (one draw per teacher and sample)
    targets: str = "all"  # "unseen": a sample's KD target only from the teachers that did not train on it
    tau: float = 4.0
    alpha: float = 0.9
    warmup: int = 10  # averaging warm-up epochs (the paper: 10)
    recompute_bn: bool = True  # recompute batch-norm statistics of the averaged student (only models with BN)
    lr: float = 0.05
    student_lr: float | None = None  # None: the teachers' lr
    epochs: int = 60
    milestones: tuple[int, ...] = (30, 45)
    batch_size: int = 64
    count: int = 5
    overlap: float = 0.4
    noise_rate: float = 0.4

    def teacher_key(self) -> tuple:
        """The fields that decide the teachers (distillation-only fields left out, so teachers can be reused)."""
        return (self.layout, self.split, self.noise, self.normalize, self.teacher, self.teacher_dropout, self.dropout,
                self.weight_decay, self.lr, self.epochs, self.milestones, self.batch_size, self.count, self.overlap,
                self.noise_rate)


# ---------------------------------------------------------------- models


class PlainCNN(nn.Module):
    """conv3x3(32) - ReLU - conv3x3(64) - ReLU - maxpool 2 - dropout - FC(hidden) - ReLU - dropout - FC(10).

    PyTorch's MNIST example network (dropout 0.25 and 0.5) on 8 x 8 inputs; ``dropout=False`` removes both.
    """

    def __init__(self, hidden: int, num_classes: int = 10, dropout: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Dropout(0.25 if dropout else 0.0), nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(64 * 16, hidden), nn.ReLU(), nn.Dropout(0.5 if dropout else 0.0),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Normalized(nn.Module):
    """``model((x - mean) / std)``: the product's input normalisation, inside the model."""

    def __init__(self, model: nn.Module, mean: float, std: float):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def build_model(name: str, dropout: bool = True, head_dropout: float = 0.0) -> nn.Module:
    """``cnn240k`` / ``cnn150k`` (the reference's plain CNNs) or any model name of the product's registry (with
    ``head_dropout`` before its classifier, the product's ``teachers.dropout``)."""
    if name == "cnn240k":
        return PlainCNN(216, dropout=dropout)  # 242k parameters
    if name == "cnn150k":
        return PlainCNN(128, dropout=dropout)  # 151k parameters
    from compressor.models.registry import create_model

    return create_model(name, 1, 10, 8, head_dropout)


# ---------------------------------------------------------------- data


@dataclass
class Data:
    """Train inputs with noisy labels, the noise mask, and the clean test set."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    noisy: np.ndarray
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_data(config: Config, seed: int) -> Data:
    """Digits in [0, 1], split and with symmetric noise on the training labels as ``config`` says."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    if config.split == "product":
        from compressor.data.split import split_indices

        index = split_indices(labels, 0.1, 0.2, seed)
        train, test = index["train"], index["test"]
        # the product stores 8-bit images: pixel values 0..16 scaled to 0..255 and rounded
        images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255) / 255.0
    else:
        train, test = train_test_split(np.arange(len(labels)), test_size=0.2, random_state=seed, stratify=labels)
        images = digits.images / 16.0
    x = torch.tensor(images, dtype=torch.float32)[:, None]
    y_clean = labels[train]
    if config.noise == "bernoulli":
        from compressor.data.noise import inject_noise

        y_noisy, mask = inject_noise(y_clean, 10, "symmetric", config.noise_rate, None, seed * 7919)
    elif config.noise == "uniform":  # with probability r, a label drawn from all C classes (the true one included)
        rng = np.random.default_rng(seed + 1000)
        y_noisy = np.where(rng.random(len(y_clean)) < config.noise_rate, rng.integers(0, 10, len(y_clean)), y_clean)
        mask = y_noisy != y_clean
    else:  # exactly round(r * N) labels, each moved to a uniformly drawn other class
        rng = np.random.default_rng(seed + 1000)
        mask = np.zeros(len(y_clean), bool)
        mask[rng.choice(len(y_clean), int(round(config.noise_rate * len(y_clean))), replace=False)] = True
        y_noisy = np.where(mask, (y_clean + rng.integers(1, 10, len(y_clean))) % 10, y_clean)
    return Data(x[train], torch.tensor(y_noisy), mask, x[test], torch.tensor(labels[test]))


def subsets(n: int, count: int, overlap: float, layout: str, seed: int) -> list[np.ndarray]:
    """Index arrays of the teachers' subsets.

    ``random``: a seeded permutation cut into ``count`` disjoint shares of about N/k samples; subset i is share i plus
    each other sample independently with probability ``overlap``. So ``|D_i| ~ N/k + p (N - N/k)`` and a sample
    outside share i is unseen by teacher i with probability 1 - p: every sample is seen by 1 + p (k - 1) teachers on
    average. ``shared_core``: a core of ``round(p N)`` samples in every subset plus k disjoint parts of the rest.
    """
    rng = np.random.default_rng(seed + 2000)
    order = rng.permutation(n)
    if layout == "shared_core":
        core = int(round(overlap * n))
        return [np.sort(np.concatenate([order[:core], part])) for part in np.array_split(order[core:], count)]
    shares = np.array_split(order, count)
    out = []
    for i, share in enumerate(shares):
        others = np.concatenate([s for j, s in enumerate(shares) if j != i])
        out.append(np.sort(np.concatenate([share, others[rng.random(len(others)) < overlap]])))
    return out


# ---------------------------------------------------------------- training


def _optimizer(model: nn.Module, config: Config, lr: float | None = None):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr or config.lr, momentum=0.9, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(config.milestones), 0.1)
    return optimizer, schedule


def _wrap(model: nn.Module, config: Config, data: Data) -> nn.Module:
    if not config.normalize:
        return model
    return Normalized(model, float(data.x_train.mean()), float(data.x_train.std()))


def train_teacher(config: Config, data: Data, index: np.ndarray, seed: int) -> nn.Module:
    """Cross-entropy on the noisy labels of ``index``."""
    torch.manual_seed(seed)
    model = _wrap(build_model(config.teacher, config.dropout, config.teacher_dropout), config, data)
    optimizer, schedule = _optimizer(model, config)
    g = torch.Generator().manual_seed(seed)
    x, y = data.x_train[index], data.y_train[index]
    for _ in range(config.epochs):
        model.train()
        for b in torch.randperm(len(x), generator=g).split(config.batch_size):
            loss = F.cross_entropy(model(x[b]), y[b])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
    return model.eval()


@torch.no_grad()
def logits_of(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``[K, N, C]`` logits of the teachers in eval mode."""
    return torch.stack([m.eval()(x) for m in models])


def distill(config: Config, data: Data, teacher_logits: torch.Tensor | None, weighting: str, average: bool,
            seed: int, unseen: torch.Tensor | None = None) -> nn.Module:
    """Train the student; ``teacher_logits`` None = Baseline I (CE alone). Returns the final (averaged) model."""
    torch.manual_seed(seed)
    student = _wrap(build_model(config.student, config.dropout), config, data)
    optimizer, schedule = _optimizer(student, config, config.student_lr)
    g = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    averaged, count = None, 0
    for epoch in range(config.epochs):
        student.train()
        for b in torch.randperm(len(x), generator=g).split(config.batch_size):
            logits = student(x[b])
            ce = F.cross_entropy(logits, y[b], reduction="none")
            if teacher_logits is None:
                loss = ce.mean()
            else:
                t = teacher_logits[:, b]  # [K, B, C]
                k = t.shape[0]
                if weighting == "equal":
                    w = torch.full((k, 1), config.equal_weight or 1.0 / k)
                else:
                    w = torch.empty(k, len(b) if config.draw == "sample" else 1).exponential_(generator=g)
                    if unseen is not None:  # [K, N] mask; a sample seen by every teacher keeps them all
                        m = unseen[:, b].float()
                        w = w * torch.where(m.sum(0, keepdim=True) > 0, m, torch.ones_like(m))
                    if config.weights == "normalised":
                        w = w / w.sum(0, keepdim=True)
                    elif config.weights == "mean_one":  # normalised, then scaled to sum to K (mean 1 per teacher)
                        w = k * w / w.sum(0, keepdim=True)
                log_p = F.log_softmax(logits / config.tau, -1)
                log_q = F.log_softmax(t / config.tau, -1)
                kl = (log_q.exp() * (log_q - log_p)).sum(-1)  # [K, B]
                kd = config.tau**2 * (w * kl).sum(0)
                loss = (config.alpha * kd + (1 - config.alpha) * ce).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()
        if average and epoch >= config.warmup:  # Eq. 1: W_avg <- (n W_avg + W) / (n + 1)
            if averaged is None:
                averaged = copy.deepcopy(student)
            else:
                with torch.no_grad():
                    for a, c in zip(averaged.state_dict().values(), student.state_dict().values(), strict=True):
                        if a.is_floating_point():
                            a.add_((c - a) / (count + 1))
                        else:
                            a.copy_(c)
            count += 1
    final = averaged if averaged is not None else student
    if averaged is not None and config.recompute_bn and any(isinstance(m, nn.BatchNorm2d) for m in final.modules()):
        torch.optim.swa_utils.update_bn([x[i:i + 256] for i in range(0, len(x), 256)], final)
    return final.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Data) -> float:
    """Accuracy on the clean test labels."""
    return float((model.eval()(data.x_test).argmax(1) == data.y_test).float().mean())


ROWS = ("Baseline I", "Baseline III", "Baseline V", "RoS-KD")
_TEACHERS: dict[tuple, list[nn.Module]] = {}


def teachers_for(config: Config, data: Data, seed: int, all_data: bool) -> list[nn.Module]:
    """The K teachers (on the subsets, or each on all data for Baseline III), cached per teacher-relevant config."""
    key = (config.teacher_key(), seed, all_data)
    if key not in _TEACHERS:
        n = len(data.y_train)
        parts = [np.arange(n)] * config.count if all_data else \
            subsets(n, config.count, config.overlap, config.layout, seed)
        _TEACHERS[key] = [train_teacher(config, data, idx, seed * 100 + i + (50 if all_data else 0))
                          for i, idx in enumerate(parts)]
    return _TEACHERS[key]


def run(config: Config, seed: int, rows: tuple[str, ...] = ROWS) -> dict[str, float]:
    """Test accuracy of each row (and the subset teachers' mean accuracy) for one seed."""
    data = load_data(config, seed)
    out: dict[str, float] = {"train_noise": float(data.noisy.mean())}
    student_seed = seed * 100 + 99
    if "Baseline I" in rows:
        out["Baseline I"] = accuracy(distill(config, data, None, "", False, student_seed), data)
    if "Baseline III" in rows:
        full = logits_of(teachers_for(config, data, seed, True), data.x_train)
        out["Baseline III"] = accuracy(distill(config, data, full, "equal", False, student_seed), data)
    if "Baseline V" in rows or "RoS-KD" in rows:
        teachers = teachers_for(config, data, seed, False)
        out["teachers"] = float(np.mean([accuracy(t, data) for t in teachers]))
        logits = logits_of(teachers, data.x_train)
        unseen = None
        if config.targets == "unseen":
            n = len(data.y_train)
            unseen = torch.ones(config.count, n, dtype=torch.bool)
            for i, idx in enumerate(subsets(n, config.count, config.overlap, config.layout, seed)):
                unseen[i, torch.as_tensor(idx)] = False
        for row, average in (("Baseline V", False), ("RoS-KD", True)):
            if row in rows:
                out[row] = accuracy(distill(config, data, logits, "exponential", average, student_seed, unseen), data)
    return out


def product_config(**changes) -> Config:
    """The reference with every factor set to the product's value (then ``changes`` applied)."""
    base = Config(layout="shared_core", split="product", noise="bernoulli", normalize=True, teacher="small_cnn_wide",
                  student="small_cnn", dropout=False, weight_decay=2e-4, weights="normalised")
    return replace(base, **changes)


def main() -> None:
    """Command line: one arm over seeds, e.g. ``--set layout=shared_core`` or ``--product --set layout=random``."""
    import argparse
    import ast

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--product", action="store_true", help="start from the product's choices (product_config)")
    parser.add_argument("--set", dest="changes", action="append", default=[], metavar="FIELD=VALUE",
                        help="change one Config field (Python literal values, e.g. weights='raw', warmup=0)")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = parser.parse_args()
    changes = {}
    for item in args.changes:
        name, _, value = item.partition("=")
        try:
            changes[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            changes[name] = value  # a bare string such as layout=shared_core
    torch.set_num_threads(1)
    config = product_config(**changes) if args.product else replace(Config(), **changes)
    print(config)
    columns = ["train_noise", "teachers", *args.rows]
    print("| seed | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    results = []
    for seed in args.seeds:
        results.append(run(config, seed, tuple(args.rows)))
        print(f"| {seed} | " + " | ".join(f"{results[-1].get(c, float('nan')):.3f}" for c in columns) + " |",
              flush=True)
    if len(results) > 1:
        values = {c: [r[c] for r in results if c in r] for c in columns}
        cells = [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" for v in values.values()]
        print("| mean ± std | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
