"""The methods of the four papers (RoS-KD, noise in KD, CMD, GroupDistil) as hooks of the one training loop.

One module per method; each registers a factory of its hook (``registry.register_method``) that reads its own spec
field, so adding a method is a module here (imported below) plus its spec field. A method of one's own, without
changing the package: register it from Python and list it, with its parameters, in the spec's
``teachers.training.methods`` or ``distillation.training.methods``::

    from compressor.methods import Hook, register_method

    @register_method("logit_penalty")
    def logit_penalty(ctx, params):  # ctx: a MethodContext (the loop being built)
        return LogitPenalty(params["weight"]) if ctx.role == "student" else None  # a Hook subclass

Importing this package loads torch; the spec (``compressor.spec``) never imports it.
"""

from compressor.methods import (  # noqa: F401  (each module registers its built-in method)
    averaging,
    cmd,
    group_dro,
    kd,
    messy,
    soft_randomization,
    teacher_noise,
    weighting,
)
from compressor.methods.registry import MethodContext, build_hooks, register_method
from compressor.training.hooks import Batch, Hook, Knowledge

__all__ = ["Batch", "Hook", "Knowledge", "MethodContext", "build_hooks", "register_method"]
