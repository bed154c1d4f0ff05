"""Classifier architectures: a registry with a ``create_model`` factory, and the normalising wrapper."""

from compressor.models.classifier import NormalizedClassifier, build_classifier, count_parameters
from compressor.models.registry import create_model, list_models, register_model

__all__ = ["NormalizedClassifier", "build_classifier", "count_parameters", "create_model", "list_models",
           "register_model"]
