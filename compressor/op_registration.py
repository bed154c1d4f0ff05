"""Fake (meta) and autograd registrations of the C++ ops (placeholder; completed with the fused kernels)."""
