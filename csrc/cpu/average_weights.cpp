// CPU kernel of average_weights_: averaged[i] += (current[i] - averaged[i]) * w, in place, over lists of tensors.
//
// All tensors are cut into chunks of at most kChunk elements and the chunks of every tensor go into ONE flat work list,
// which a single at::parallel_for shares among the threads (no per-tensor op launches, balanced across tensors of very
// different sizes). Per element: float32 and float64 compute in their own dtype, bfloat16 / float16 in float32 and
// round to nearest even (the reference's a.to(fp32) + (c.to(fp32) - a) * w, then copy_), complex tensors as their
// real view, integer / bool tensors are copied. Non-contiguous `averaged` tensors and floating types without a kernel
// path (float8) take the ATen fallback (kd_common.h); non-contiguous `current` tensors are made contiguous first.
//
// The order of operations is the reference's (subtract, multiply, add, each rounded); the baseline x86-64 ISA this
// file is compiled for has no FMA, so the compiler cannot contract them.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../kd_common.h"

namespace compressor {
namespace {

constexpr int64_t kChunk = 1 << 15;  // elements per work item (128 KB of float32 per side)

struct Item {
  void* a;
  const void* c;
  int64_t n;  // elements (bytes for kCopy)
  AvgKind kind;  // never kFallback
};

template <typename T>
void lerp_low_precision(T* a, const T* c, int64_t n, float w) {
  for (int64_t i = 0; i < n; ++i) {
    const float af = static_cast<float>(a[i]);
    const float cf = static_cast<float>(c[i]);
    a[i] = static_cast<T>(af + (cf - af) * w);
  }
}

template <typename T>
void lerp_same(T* a, const T* c, int64_t n, T w) {
  for (int64_t i = 0; i < n; ++i) a[i] = a[i] + (c[i] - a[i]) * w;
}

void run_item(const Item& it, float wf, double wd) {
  switch (it.kind) {
    case AvgKind::kFloat:
      lerp_same(static_cast<float*>(it.a), static_cast<const float*>(it.c), it.n, wf);
      break;
    case AvgKind::kDouble:
      lerp_same(static_cast<double*>(it.a), static_cast<const double*>(it.c), it.n, wd);
      break;
    case AvgKind::kBFloat16:
      lerp_low_precision(static_cast<c10::BFloat16*>(it.a), static_cast<const c10::BFloat16*>(it.c), it.n, wf);
      break;
    case AvgKind::kHalf:
      lerp_low_precision(static_cast<c10::Half*>(it.a), static_cast<const c10::Half*>(it.c), it.n, wf);
      break;
    case AvgKind::kCopy:
      if (it.a != it.c) std::memmove(it.a, it.c, static_cast<size_t>(it.n));
      break;
    case AvgKind::kFallback:  // never queued: average_fallback handles these tensors
      break;
  }
}

void average_weights_cpu(at::TensorList averaged, at::TensorList current, const at::Tensor& weight) {
  check_average_inputs(averaged, current, weight, "average_weights_ (CPU)");
  TORCH_CHECK(weight.device().is_cpu(), "average_weights_ (CPU): weight must be a CPU tensor, got ",
              weight.device());
  // Float32 tensors use the weight rounded to float32, float64 tensors the weight in float64 (as the reference does).
  const double wd = weight.to(at::kDouble).item<double>();  // a CPU read: no device synchronisation
  const float wf = static_cast<float>(wd);

  std::vector<Item> items;
  std::vector<at::Tensor> contiguous_copies;  // keeps made-contiguous `current` tensors alive during the loop
  int64_t total = 0;
  for (size_t i = 0; i < averaged.size(); ++i) {
    at::Tensor a = averaged[i];
    at::Tensor c = current[i];
    TORCH_CHECK(a.device().is_cpu(), "average_weights_ (CPU): tensor ", i, " is on ", a.device());
    if (a.numel() == 0) continue;
    if (a.is_complex()) {  // the update is linear: average real and imaginary parts
      a = at::view_as_real(a);
      c = at::view_as_real(c);
    }
    const AvgKind kind = avg_kind_of(a.scalar_type());
    if (!a.is_contiguous() || kind == AvgKind::kFallback) {  // ATen ops (same arithmetic, several passes)
      average_fallback(a, c, weight);
      continue;
    }
    const bool floating = kind != AvgKind::kCopy;
    if (!c.is_contiguous()) {
      c = c.contiguous();
      contiguous_copies.push_back(c);
    }
    const int64_t elem = floating ? static_cast<int64_t>(a.element_size()) : 1;
    const int64_t n = floating ? a.numel() : a.numel() * static_cast<int64_t>(a.element_size());
    char* pa = static_cast<char*>(a.data_ptr());
    const char* pc = static_cast<const char*>(c.const_data_ptr());
    for (int64_t off = 0; off < n; off += kChunk) {
      items.push_back({pa + off * elem, pc + off * elem, std::min(kChunk, n - off), kind});
    }
    total += n;
  }
  if (items.empty()) return;
  // One parallel loop over the flat list; a small total stays on the calling thread.
  const int64_t grain = total > kChunk ? 1 : static_cast<int64_t>(items.size());
  at::parallel_for(0, static_cast<int64_t>(items.size()), grain, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) run_item(items[static_cast<size_t>(i)], wf, wd);
  });
}

}  // namespace

TORCH_LIBRARY_IMPL(compressor, CPU, m) {
  m.impl("average_weights_", &average_weights_cpu);
}

}  // namespace compressor
