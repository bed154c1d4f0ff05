// CPU kernel of multi_teacher_kd (contract: compressor/reference.py, DESIGN.md "The two fused ops").
//
// Parallel over rows (at::parallel_for), vectorised over classes (simd.h: 16 / 8 / 4 float lanes for the AVX-512,
// AVX2 and baseline builds of the row loop, chosen at run time). Per row b, with x = t - max(t), y = s - max(s):
//
//   student   one read of S[b] for its max, one pass: y, e = exp(y / tau), Z_s = sum e      (y, e kept in scratch)
//   teacher k one read of T[k,b] (from memory) for its max, one pass over the now cache-resident row computing
//             e1 = exp(x / tau) and e2 = exp(x) once per element (one exp when tau is 1/2, 1 or 2), the sums
//               Zq = sum e1, Zr = sum e2, Sr = sum e2 x, A = sum e1 (x - y);
//             then   H  = log Zr - Sr / Zr                               (entropy of softmax(t), temperature 1)
//                    KL = A / (tau Zq) + log Z_s - log Zq                 (KL(softmax(t / tau) || softmax(s / tau)))
//             and, when the teacher is kept with a non-zero weight, G += (w / Zq) e1 over the scratch row.
//   gradient  grad[b] = tau * (W' p - norm * G) with p = e / Z_s, written in the student's dtype.
//
// Multilabel mode has no normalisers: with x = t / tau, y = s / tau, sp(z) = log(1 + exp(z)),
//   KL_c = sp(-y) - sp(-x) + (1 - q)(y - x),   q = sigmoid(x)            (Bernoulli KL, no cancellation of logs)
//   H_c  = log1p(e) + |t| e / (1 + e),         e = exp(-|t|)              (binary entropy of sigmoid(t))
// one exp, one log1p and one division per element and temperature (shared when tau = 1).
//
// Memory: per row, S[b] and every T[k,b] are read once from memory (the second touch hits L1/L2: a row of C = 5000
// floats is 20 KB; each pass prefetches the next row), grad[b] written once; scratch is 5 rows of C
// accumulators per thread. Nothing of size [K,B,C] is allocated. The gradient w.r.t. S is written here, during the
// forward; the backward (compressor/op_registration.py) only scales it per row.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <new>
#include <tuple>

#include "../kd_common.h"
#include "simd.h"

namespace compressor {
namespace {

using namespace simd;

template <typename scalar_t, typename acc_t>
struct KdParams {
  const scalar_t* S;  // [B, C]
  const scalar_t* T;  // [K, B, C]
  const acc_t* W;     // [K, B]
  int64_t K, B, C;
  acc_t tau, inv_tau, chi;
  int pw;  // exp_pair mode
  bool multilabel, renormalize;
  acc_t* loss;     // [B]
  bool* keep;      // [K, B]
  acc_t* entropy;  // [K, B]
  scalar_t* grad;  // [B, C]
};

// Per-thread scratch rows, each padded to whole vectors and 64-byte aligned.
template <typename acc_t>
struct Scratch {
  explicit Scratch(int64_t c) {
    constexpr int64_t N = 64 / sizeof(acc_t);  // the widest vector
    stride = (c + N - 1) / N * N;
    data.reset(new (std::align_val_t(64)) acc_t[5 * stride]);
    ys = data.get();
    ps = ys + stride;
    sps = ps + stride;
    qs = sps + stride;
    g = qs + stride;
  }
  struct Free {
    void operator()(acc_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<acc_t[], Free> data;
  int64_t stride;
  acc_t *ys, *ps, *sps, *qs, *g;
};

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE acc_t row_max(const scalar_t* x, int64_t C) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const acc_t ninf = -std::numeric_limits<acc_t>::infinity();
  V m0 = splat<V>(ninf), m1 = m0;
  int64_t c = 0;
  for (; c + 2 * N <= C; c += 2 * N) {
    m0 = vmax(m0, load<scalar_t, acc_t, W>(x + c));
    m1 = vmax(m1, load<scalar_t, acc_t, W>(x + c + N));
  }
  if (c + N <= C) {
    m0 = vmax(m0, load<scalar_t, acc_t, W>(x + c));
    c += N;
  }
  if (c < C) m1 = vmax(m1, load_partial<scalar_t, acc_t, W>(x + c, static_cast<int>(C - c), ninf));
  return hmax<N>(vmax(m0, m1));
}

// The row read after teacher k of row b (k = -1: after the student): teacher k + 1, else the next row's student
// (nullptr at the end). Rows of T[:, b] lie B * C elements apart, in other pages, where the hardware prefetcher has
// to start over; the exponential passes software-prefetch this next row, one cache line per line they consume, so
// that its first (max) pass finds it in cache.
template <typename scalar_t, typename acc_t>
CMP_INLINE const scalar_t* next_row(const KdParams<scalar_t, acc_t>& P, int64_t k, int64_t b) {
  if (k + 1 < P.K) return P.T + ((k + 1) * P.B + b) * P.C;
  if (b + 1 < P.B) return P.S + (b + 1) * P.C;
  return nullptr;
}

// Prefetch the cache lines of next[c, c + n) (nothing when next is null).
template <int n, typename scalar_t>
CMP_INLINE void prefetch_ahead(const scalar_t* next, int64_t c) {
  if (next == nullptr) return;
  const char* p = reinterpret_cast<const char*>(next + c);
  for (int off = 0; off < n * static_cast<int>(sizeof(scalar_t)); off += 64) __builtin_prefetch(p + off, 0, 3);
}

// Per-row sums over the kept teachers (loss and gradient normalisation use them), and whether the gradient
// accumulator G holds data yet.
template <typename acc_t>
struct RowAccum {
  acc_t total = 0;  // sum of kept weights
  acc_t wkl = 0;    // sum of kept weights times KL
  bool g_init = false;
};

// One teacher row's result: records entropy / keep, returns the gated weight (0 when dropped).
template <typename scalar_t, typename acc_t>
CMP_INLINE acc_t gate_teacher(const KdParams<scalar_t, acc_t>& P, int64_t k, int64_t b, acc_t H, acc_t KL,
                              RowAccum<acc_t>& R) {
  const int64_t kb = k * P.B + b;
  const bool kept = H < P.chi;
  P.entropy[kb] = H;
  P.keep[kb] = kept;
  if (!kept) return acc_t(0);
  const acc_t w = P.W[kb];
  R.total += w;
  R.wkl += w * KL;
  return w;
}

// G += coef * qs over the scratch row when G holds data (g_init), G = coef * qs otherwise.
template <typename acc_t, int W>
CMP_INLINE void accumulate_g(acc_t* g, const acc_t* qs, acc_t coef, int64_t n, bool g_init) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const V cv = splat<V>(coef);
  if (g_init) {
    for (int64_t c = 0; c < n; c += N) st<V>(g + c, ld<V>(g + c) + cv * ld<V>(qs + c));
  } else {
    for (int64_t c = 0; c < n; c += N) st<V>(g + c, cv * ld<V>(qs + c));
  }
}

// grad = a * ps - bcoef * g (g ignored when no teacher contributed), stored in the student's dtype.
template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void write_grad(scalar_t* out, const acc_t* ps, const acc_t* g, acc_t a, acc_t bcoef, bool use_g,
                           int64_t C) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const V av = splat<V>(a), bv = splat<V>(bcoef);
  int64_t c = 0;
  if (use_g) {
    for (; c + N <= C; c += N) store<scalar_t, acc_t, W>(out + c, av * ld<V>(ps + c) - bv * ld<V>(g + c));
    if (c < C) {
      store_partial<scalar_t, acc_t, W>(out + c, av * ld<V>(ps + c) - bv * ld<V>(g + c), static_cast<int>(C - c));
    }
  } else {
    for (; c + N <= C; c += N) store<scalar_t, acc_t, W>(out + c, av * ld<V>(ps + c));
    if (c < C) store_partial<scalar_t, acc_t, W>(out + c, av * ld<V>(ps + c), static_cast<int>(C - c));
  }
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void finish_row(const KdParams<scalar_t, acc_t>& P, int64_t b, const Scratch<acc_t>& scr,
                           const RowAccum<acc_t>& R, acc_t p_scale) {
  // Renormalised: w' = w / total (all zero when total <= 0, like the reference); else w' = w.
  const acc_t norm = P.renormalize ? (R.total > 0 ? acc_t(1) / R.total : acc_t(0)) : acc_t(1);
  P.loss[b] = P.tau * P.tau * norm * R.wkl;
  // d loss / d s_c = tau * (sum_k w'_k) p_c - tau * sum_k w'_k q_kc
  write_grad<scalar_t, acc_t, W>(P.grad + b * P.C, scr.ps, scr.g, P.tau * norm * R.total * p_scale, P.tau * norm,
                                 R.g_init, P.C);
}

// One teacher row, multiclass: x = t - max(t), e1 = exp(x / tau) (kept in qs), e2 = exp(x), and the vector sums
// Zq += e1, Zr += e2, Sr += e2 x, A += e1 (x - y). PW (see exp_pair) is a template parameter so that this loop, the
// kernel's hot spot, has no per-vector dispatch; two vectors per iteration give the out-of-order core independent
// exponential chains.
template <int PW, typename scalar_t, typename acc_t, int W>
CMP_INLINE void mc_teacher_pass(const scalar_t* t, const scalar_t* next, acc_t mt, int64_t nfull, int tail,
                                acc_t inv_tau, const acc_t* ys, acc_t* qs, typename Vec<acc_t, W>::type (&sums)[4]) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const V zero = splat<V>(acc_t(0));
  V zq = zero, zr = zero, sr = zero, av = zero;
  auto step = [&](const V& x, int64_t c) __attribute__((always_inline)) {
    V e1, e2;
    exp_pair<PW>(x, inv_tau, e1, e2);
    zq += e1;
    zr += e2;
    sr += e2 * x;
    av += e1 * (x - ld<V>(ys + c));
    st<V>(qs + c, e1);
  };
  int64_t c = 0;
  for (; c + 2 * N <= nfull; c += 2 * N) {
    prefetch_ahead<2 * N>(next, c);
    step(load<scalar_t, acc_t, W>(t + c) - mt, c);
    step(load<scalar_t, acc_t, W>(t + c + N) - mt, c + N);
  }
  if (c < nfull) {
    prefetch_ahead<N>(next, c);
    step(load<scalar_t, acc_t, W>(t + c) - mt, c);
  }
  if (tail) {
    const V x = load_partial<scalar_t, acc_t, W>(t + nfull, tail, mt) - mt;  // padded lanes: x = 0
    V e1, e2;
    exp_pair<PW>(x, inv_tau, e1, e2);
    const auto mask = lanes_below<acc_t, W>(tail);
    e1 = mask ? e1 : zero;
    e2 = mask ? e2 : zero;
    zq += e1;
    zr += e2;
    sr += e2 * x;
    av += e1 * (x - ld<V>(ys + nfull));
    st<V>(qs + nfull, e1);
  }
  sums[0] = zq;
  sums[1] = zr;
  sums[2] = sr;
  sums[3] = av;
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void row_multiclass(const KdParams<scalar_t, acc_t>& P, int64_t b, Scratch<acc_t>& scr) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const int64_t C = P.C, nfull = C / N * N;
  const int tail = static_cast<int>(C - nfull);
  const auto tail_mask = lanes_below<acc_t, W>(tail);
  const V zero = splat<V>(acc_t(0));
  const acc_t inv_tau = P.inv_tau;

  // Student: y = s - max(s), e = exp(y / tau), Z_s.
  const scalar_t* s = P.S + b * C;
  const acc_t ms = row_max<scalar_t, acc_t, W>(s, C);
  const scalar_t* next_s = next_row(P, -1, b);
  V zs = zero;
  for (int64_t c = 0; c < nfull; c += N) {
    prefetch_ahead<N>(next_s, c);
    const V y = load<scalar_t, acc_t, W>(s + c) - ms;
    const V e = vexp(y * inv_tau);
    st<V>(scr.ys + c, y);
    st<V>(scr.ps + c, e);
    zs += e;
  }
  if (tail) {
    const V y = load_partial<scalar_t, acc_t, W>(s + nfull, tail, ms) - ms;
    const V e = tail_mask ? vexp(y * inv_tau) : zero;
    st<V>(scr.ys + nfull, y);
    st<V>(scr.ps + nfull, e);
    zs += e;
  }
  const acc_t Zs = hsum<N>(zs), log_zs = std::log(Zs);

  RowAccum<acc_t> R;
  for (int64_t k = 0; k < P.K; ++k) {
    const scalar_t* t = P.T + (k * P.B + b) * C;
    const scalar_t* next = next_row(P, k, b);
    const acc_t mt = row_max<scalar_t, acc_t, W>(t, C);
    V sums[4];
    switch (P.pw) {  // tau = 1/4 and 4 take the two-exponential loop too (fewer instantiations)
      case 1:
        mc_teacher_pass<1, scalar_t, acc_t, W>(t, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
        break;
      case 2:
        mc_teacher_pass<2, scalar_t, acc_t, W>(t, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
        break;
      case -2:
        mc_teacher_pass<-2, scalar_t, acc_t, W>(t, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
        break;
      default:
        mc_teacher_pass<0, scalar_t, acc_t, W>(t, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
    }
    const acc_t Zq = hsum<N>(sums[0]), Zr = hsum<N>(sums[1]), Sr = hsum<N>(sums[2]), A = hsum<N>(sums[3]);
    const acc_t H = std::log(Zr) - Sr / Zr;
    const acc_t KL = A / Zq * inv_tau + log_zs - std::log(Zq);
    const acc_t w = gate_teacher(P, k, b, H, KL, R);
    if (w != 0) {
      accumulate_g<acc_t, W>(scr.g, scr.qs, w / Zq, scr.stride, R.g_init);
      R.g_init = true;
    }
  }
  finish_row<scalar_t, acc_t, W>(P, b, scr, R, acc_t(1) / Zs);
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void row_multilabel(const KdParams<scalar_t, acc_t>& P, int64_t b, Scratch<acc_t>& scr) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const int64_t C = P.C, nfull = C / N * N;
  const int tail = static_cast<int>(C - nfull);
  const auto tail_mask = lanes_below<acc_t, W>(tail);
  const V zero = splat<V>(acc_t(0)), one = splat<V>(acc_t(1));
  const acc_t inv_tau = P.inv_tau;

  // Student: y = s / tau, sp(-y) = max(-y, 0) + log1p(exp(-|y|)), p = sigmoid(y).
  const scalar_t* s = P.S + b * C;
  auto student = [&](int64_t c, const V& sv) __attribute__((always_inline)) {
    const V y = sv * inv_tau;
    const V e = vexp(-vabs(y));
    const V inv = one / (one + e);
    st<V>(scr.ys + c, y);
    st<V>(scr.sps + c, vmax(-y, zero) + vlog1p01(e));
    st<V>(scr.ps + c, y >= 0 ? inv : e * inv);
  };
  const scalar_t* next_s = next_row(P, -1, b);
  for (int64_t c = 0; c < nfull; c += N) {
    prefetch_ahead<N>(next_s, c);
    student(c, load<scalar_t, acc_t, W>(s + c));
  }
  if (tail) student(nfull, load_partial<scalar_t, acc_t, W>(s + nfull, tail, acc_t(0)));

  RowAccum<acc_t> R;
  for (int64_t k = 0; k < P.K; ++k) {
    const scalar_t* t = P.T + (k * P.B + b) * C;
    const scalar_t* next = next_row(P, k, b);
    V klv = zero, hv = zero;
    auto teacher = [&](int64_t c, const V& tv, bool masked) __attribute__((always_inline)) {
      const V at = vabs(tv);
      V e1, e2;  // exp(-|t| / tau), exp(-|t|)
      if (P.pw == 1) {
        exp_pair<1>(-at, inv_tau, e1, e2);
      } else {
        exp_pair<0>(-at, inv_tau, e1, e2);
      }
      const V x = tv * inv_tau;
      const V l1 = vlog1p01(e1);
      const V inv1 = one / (one + e1);
      const auto pos = x >= 0;
      const V q = pos ? inv1 : e1 * inv1;
      const V omq = pos ? e1 * inv1 : inv1;
      V kl = ld<V>(scr.sps + c) - (vmax(-x, zero) + l1) + omq * (ld<V>(scr.ys + c) - x);
      V h;
      if (P.pw == 1) {
        h = l1 + at * e1 * inv1;
      } else {
        h = vlog1p01(e2) + at * e2 / (one + e2);
      }
      if (masked) {
        kl = tail_mask ? kl : zero;
        h = tail_mask ? h : zero;
      }
      klv += kl;
      hv += h;
      st<V>(scr.qs + c, q);
    };
    for (int64_t c = 0; c < nfull; c += N) {
      prefetch_ahead<N>(next, c);
      teacher(c, load<scalar_t, acc_t, W>(t + c), false);
    }
    if (tail) teacher(nfull, load_partial<scalar_t, acc_t, W>(t + nfull, tail, acc_t(0)), true);
    const acc_t H = hsum<N>(hv) / static_cast<acc_t>(C);
    const acc_t KL = hsum<N>(klv);
    const acc_t w = gate_teacher(P, k, b, H, KL, R);
    if (w != 0) {
      accumulate_g<acc_t, W>(scr.g, scr.qs, w, scr.stride, R.g_init);
      R.g_init = true;
    }
  }
  finish_row<scalar_t, acc_t, W>(P, b, scr, R, acc_t(1));
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void kd_rows_impl(const KdParams<scalar_t, acc_t>& P, int64_t b0, int64_t b1) {
  Scratch<acc_t> scr(P.C);
  for (int64_t b = b0; b < b1; ++b) {
    if (P.multilabel) {
      row_multilabel<scalar_t, acc_t, W>(P, b, scr);
    } else {
      row_multiclass<scalar_t, acc_t, W>(P, b, scr);
    }
  }
}

template <typename scalar_t, typename acc_t>
void kd_rows_baseline(const KdParams<scalar_t, acc_t>& P, int64_t b0, int64_t b1) {
  kd_rows_impl<scalar_t, acc_t, 16>(P, b0, b1);
}
#if CMP_HAVE_X86_TARGETS
template <typename scalar_t, typename acc_t>
CMP_TARGET_AVX2 void kd_rows_avx2(const KdParams<scalar_t, acc_t>& P, int64_t b0, int64_t b1) {
  kd_rows_impl<scalar_t, acc_t, 32>(P, b0, b1);
}
template <typename scalar_t, typename acc_t>
CMP_TARGET_AVX512 void kd_rows_avx512(const KdParams<scalar_t, acc_t>& P, int64_t b0, int64_t b1) {
  kd_rows_impl<scalar_t, acc_t, 64>(P, b0, b1);
}
#endif

template <typename scalar_t, typename acc_t>
void run_kd(const KdParams<scalar_t, acc_t>& P) {
  using Fn = void (*)(const KdParams<scalar_t, acc_t>&, int64_t, int64_t);
  Fn fn = &kd_rows_baseline<scalar_t, acc_t>;
#if CMP_HAVE_X86_TARGETS
  switch (cpu_isa()) {
    case Isa::kAvx512:
      fn = &kd_rows_avx512<scalar_t, acc_t>;
      break;
    case Isa::kAvx2:
      fn = &kd_rows_avx2<scalar_t, acc_t>;
      break;
    default:
      break;
  }
#endif
  // About 64K element-visits per task before a row range is worth a thread.
  const int64_t per_row = (P.K + 1) * P.C;
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(per_row, 1));
  at::parallel_for(0, P.B, grain, [&](int64_t b0, int64_t b1) { fn(P, b0, b1); });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multi_teacher_kd_cpu(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weights, double temperature,
    double gate_threshold, bool multilabel, bool renormalize) {
  KdInputs in = prepare_kd_inputs(student, teacher, weights, temperature, "multi_teacher_kd (CPU)");
  TORCH_CHECK(in.student.device().is_cpu(), "multi_teacher_kd (CPU): tensors must be on the CPU");
  const int64_t K = in.teacher.size(0), B = in.student.size(0), C = in.student.size(1);
  KdOutputs out(in, student.scalar_type());
  if (C == 0) {
    fill_empty_classes(out.loss, out.keep, out.entropy, multilabel, gate_threshold);
    return out.result();
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, in.student.scalar_type(), "multi_teacher_kd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    KdParams<scalar_t, acc_t> P;
    P.S = in.student.const_data_ptr<scalar_t>();
    P.T = in.teacher.const_data_ptr<scalar_t>();
    P.W = in.weights.const_data_ptr<acc_t>();
    P.K = K;
    P.B = B;
    P.C = C;
    P.tau = static_cast<acc_t>(temperature);
    P.inv_tau = static_cast<acc_t>(1.0 / temperature);
    P.chi = static_cast<acc_t>(gate_threshold);
    P.pw = exp_power(temperature);
    P.multilabel = multilabel;
    P.renormalize = renormalize;
    P.loss = out.loss.mutable_data_ptr<acc_t>();
    P.keep = out.keep.mutable_data_ptr<bool>();
    P.entropy = out.entropy.mutable_data_ptr<acc_t>();
    P.grad = out.grad.mutable_data_ptr<scalar_t>();
    run_kd(P);
  });
  return out.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(compressor, CPU, m) {
  m.impl("multi_teacher_kd", &multi_teacher_kd_cpu);
}

}  // namespace compressor
