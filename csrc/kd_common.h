// Preconditions and small helpers shared by the CPU and CUDA kernels of multi_teacher_kd and average_weights_.
//
// compressor/ops.py validates the arguments of both ops before dispatch; the TORCH_CHECKs here only assert what the
// kernels rely on, so that direct torch.ops.compressor.* calls with bad input raise a RuntimeError instead of reading
// out of bounds.
#pragma once

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <utility>

namespace compressor {

// The dtype the ops compute in and return float outputs in: double for double inputs, else float.
inline at::ScalarType acc_type_for(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Code of the exponential pair e1 = exp(x / tau), e2 = exp(x) evaluated per teacher element: when tau or 1 / tau is
// 1, 2 or 4 one exponential is derived from the other by squaring (1: same; 2, 4: e1 = e2^pw; -2, -4: e2 = e1^-pw;
// 0: two exponentials). Used by the CUDA kernel's exponential pair and by simd.h's exp_pair (CPU), whose kernel treats
// +-4 as 0.
inline int exp_power(double tau) {
  if (tau == 1.0) return 1;
  if (tau == 0.5) return 2;
  if (tau == 0.25) return 4;
  if (tau == 2.0) return -2;
  if (tau == 4.0) return -4;
  return 0;
}

inline bool is_kd_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

// Preconditions of the multi_teacher_kd kernels. compressor/ops.py validates the caller's arguments and brings them
// to this form (one place, one policy: compressor/reference.py's contract); the kernels only assert it, so that a
// direct torch.ops.compressor call with other input raises a RuntimeError instead of reading out of bounds:
// student [B, C] and teacher [K >= 1, B, C] contiguous, in one of float32, float64, bfloat16, float16; weights [K]
// (the same for every row) or [K, B], any strides, in the accumulation dtype; all on one device; a finite
// temperature > 0.
inline void check_kd_inputs(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weights,
                            double temperature, const char* where) {
  TORCH_CHECK(student.dim() == 2 && teacher.dim() == 3 && teacher.size(0) >= 1 &&
                  teacher.size(1) == student.size(0) && teacher.size(2) == student.size(1),
              where, ": expected student [B, C] and teacher [K >= 1, B, C], got ", student.sizes(), " and ",
              teacher.sizes());
  TORCH_CHECK(is_kd_dtype(student.scalar_type()) && teacher.scalar_type() == student.scalar_type(), where,
              ": student and teacher must share one of float32, float64, bfloat16, float16, got ",
              student.scalar_type(), " and ", teacher.scalar_type());
  const int64_t K = teacher.size(0), B = student.size(0);
  TORCH_CHECK(((weights.dim() == 1 && weights.size(0) == K) ||
               (weights.dim() == 2 && weights.size(0) == K && weights.size(1) == B)) &&
                  weights.scalar_type() == acc_type_for(student.scalar_type()),
              where, ": weights must be [K] or [K, B] = [", K, ", ", B, "] in ", acc_type_for(student.scalar_type()),
              ", got ", weights.sizes(), " in ", weights.scalar_type());
  TORCH_CHECK(student.is_contiguous() && teacher.is_contiguous(), where, ": student and teacher must be contiguous");
  TORCH_CHECK(student.device() == teacher.device() && student.device() == weights.device(), where,
              ": all tensors must be on one device, got ", student.device(), ", ", teacher.device(), ", ",
              weights.device());
  TORCH_CHECK(std::isfinite(temperature) && temperature > 0, where, ": temperature must be finite and > 0, got ",
              temperature);
}

// Element strides of the checked weights per teacher and per row: w[k, b] = W[k * first + b * second] (a [K] tensor
// has row stride 0).
inline std::pair<int64_t, int64_t> weight_strides(const at::Tensor& weights) {
  return {weights.stride(0), weights.dim() == 2 ? weights.stride(1) : 0};
}

// The four outputs of multi_teacher_kd: loss [B] and entropy [K, B] in the accumulation dtype, keep [K, B] bool, and
// the gradient [B, C] in the student's dtype.
struct KdOutputs {
  at::Tensor loss, keep, entropy, grad;

  KdOutputs(const at::Tensor& student, int64_t K) {
    const int64_t B = student.size(0);
    const auto acc_opts = student.options().dtype(acc_type_for(student.scalar_type()));
    loss = at::empty({B}, acc_opts);
    keep = at::empty({K, B}, student.options().dtype(at::kBool));
    entropy = at::empty({K, B}, acc_opts);
    grad = at::empty_like(student);
  }

  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> result() const { return {loss, keep, entropy, grad}; }
};

// C = 0 (as the reference): KL sums are 0, the multiclass entropy is an empty sum (0), the multilabel one an empty
// mean (NaN, so never kept); loss is 0. Fills the outputs with ATen ops (asynchronous on CUDA).
inline void fill_empty_classes(at::Tensor& loss, at::Tensor& keep, at::Tensor& entropy, bool multilabel,
                               double gate_threshold) {
  loss.zero_();
  entropy.fill_(multilabel ? std::numeric_limits<double>::quiet_NaN() : 0.0);
  keep.copy_(entropy.lt(gate_threshold));
}

// Preconditions of the average_weights_ kernels (compressor/ops.py validates the caller's arguments first): equal list
// lengths, per pair equal shapes, dtypes and devices, one device; the weight is a one-element floating tensor. The
// kernels handle layouts themselves.
inline void check_average_inputs(at::TensorList averaged, at::TensorList current, const at::Tensor& weight,
                                 const char* where) {
  TORCH_CHECK(averaged.size() == current.size(), where, ": ", averaged.size(), " averaged tensors but ",
              current.size(), " current tensors");
  TORCH_CHECK(weight.numel() == 1 && at::isFloatingType(weight.scalar_type()), where,
              ": weight must be a one-element floating tensor, got ", weight.scalar_type(), " of shape ",
              weight.sizes());
  for (size_t i = 0; i < averaged.size(); ++i) {
    const at::Tensor& a = averaged[i];
    const at::Tensor& c = current[i];
    TORCH_CHECK(a.sizes() == c.sizes(), where, ": tensor ", i, " shape ", a.sizes(), " != ", c.sizes());
    TORCH_CHECK(a.scalar_type() == c.scalar_type(), where, ": tensor ", i, " dtype ", a.scalar_type(), " != ",
                c.scalar_type());
    TORCH_CHECK(a.device() == c.device(), where, ": tensor ", i, " on ", a.device(), " and ", c.device());
    TORCH_CHECK(a.device() == averaged[0].device(), where, ": all tensors must be on one device, got ",
                averaged[0].device(), " and ", a.device());
  }
}

// How average_weights_ updates one (real) tensor: its kernels take float32, float64, bfloat16 and float16 tensors in
// one flat pass and copy integer and bool tensors bytewise; other floating types (float8) take average_fallback.
enum class AvgKind : uint8_t { kFloat = 0, kDouble = 1, kBFloat16 = 2, kHalf = 3, kCopy = 4, kFallback = 5 };

inline AvgKind avg_kind_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return AvgKind::kFloat;
    case at::kDouble:
      return AvgKind::kDouble;
    case at::kBFloat16:
      return AvgKind::kBFloat16;
    case at::kHalf:
      return AvgKind::kHalf;
    default:
      return at::isFloatingType(t) ? AvgKind::kFallback : AvgKind::kCopy;
  }
}

// average_weights_ with ATen ops for a tensor the flat kernels do not take (strided, or AvgKind::kFallback): the
// reference's a + (c - a) * w in the accumulation dtype, rounded into a; integer and bool tensors are copied. `weight`
// is a 0-d tensor on a's device or the CPU; it is cast to the accumulation dtype as the kernels do.
inline void average_fallback(const at::Tensor& a, const at::Tensor& c, const at::Tensor& weight) {
  if (!at::isFloatingType(a.scalar_type())) {
    a.copy_(c);
    return;
  }
  const at::ScalarType acc = acc_type_for(a.scalar_type());
  const at::Tensor af = a.to(acc);
  a.copy_(af + (c.to(acc) - af) * weight.reshape({}).to(acc));
}

}  // namespace compressor
