"""Robustness certification: FGSM/PGD attacks, common corruptions, randomized smoothing, loss landscape and the
certificate with its gate."""
