"""The methods of the four papers, one job per module; the training loops call them through small hooks.

* ``presets``: RoS-KD's baselines I-V and RoS-KD as spec presets.
* ``adaptive``: Baseline IV's per-sample teacher weights (stand-in for the paper's RL selector).
* ``teacher_noise``: fickle teacher, signal-dependent logit noise, random swapping of softened outputs.
* ``messy``: messy collaboration (per-batch target corruption, MC-T / MC-S / MC-TS).
* ``soft_randomization``: Gaussian input noise for the student only.
* ``cmd``: CMD's entropy-gate schedule ``chi`` and the mutual-distillation exchange.
* ``self_kd``: CE, label smoothing, confidence penalty, Boot-soft, ProSelfLC and Mconf targets.
* ``group_dro``: GroupDistil's exponentiated-gradient group weights.
* ``group_metrics``: per-group and worst-group accuracy.
* ``consistency``: checks across spec sections (e.g. a fickle teacher needs dropout).

Nothing is imported here, so reading a spec does not load torch.
"""
