"""Robustness certification: FGSM/PGD attacks, common corruptions, randomized smoothing, loss landscape and the
certificate with its gate."""

from compressor.robustness.attacks import fgsm, pgd
from compressor.robustness.certificate import GATE_EXIT_CODE, build_certificate, evaluate_gate, failure_messages
from compressor.robustness.corruptions import CORRUPTIONS, corrupt
from compressor.robustness.smoothing import ABSTAIN, certified_accuracy, certify, clopper_pearson_lower, predict

__all__ = [
    "ABSTAIN", "CORRUPTIONS", "GATE_EXIT_CODE", "build_certificate", "certified_accuracy", "certify",
    "clopper_pearson_lower", "corrupt", "evaluate_gate", "failure_messages", "fgsm", "pgd", "predict",
]
