// CPU kernel of multi_teacher_kd (contract: compressor/reference.py; input form asserted by kd_common.h).
//
// Parallel over rows (at::parallel_for, and only above ~64K element visits: smaller calls stay on the calling thread,
// where an OpenMP region would cost more than it saves), vectorised over classes (simd.h: 16 / 8 / 4 float lanes
// for the AVX-512, AVX2 and baseline builds of the row loop, chosen at run time). Up to kLanesMaxC classes the rows
// are instead computed N at a time, one per lane ("rows in lanes", below): same formulas, no horizontal sums.
// Per row b, with x = t - max(t), y = s - max(s):
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
// forward; the backward (the autograd kernel in csrc/ops.cpp) only scales it per row.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdlib>
#include <cmath>
#include <limits>
#include <memory>
#include <new>
#include <string>
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
  const scalar_t *S_end, *T_end;  // one past the last element (tail loads may read up to there)
  const acc_t* W;     // [K, B] with strides (w_sk, w_sb); w_sb = 0 for [K] weights
  int64_t w_sk, w_sb;
  int64_t K, B, C;
  acc_t tau, inv_tau, chi;
  int pw;  // exp_pair mode
  bool multilabel, renormalize;
  bool lanes;  // few classes: rows in lanes (kd_lanes_impl), else one row at a time
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

// The n < N lanes of a row's tail at p, the other lanes set to pad. Where a whole vector can be read (p + N <= end,
// the lanes past the row lying in the next row of the same tensor) that is one load and a select; only the tail of
// a tensor's last row is copied lane by lane (a partial copy costs a failed store-to-load forwarding).
template <typename scalar_t, typename acc_t, int W>
CMP_INLINE typename Vec<acc_t, W>::type load_tail(const scalar_t* p, int n, acc_t pad, const scalar_t* end) {
  using V = typename Vec<acc_t, W>::type;
  if (end - p >= Vec<acc_t, W>::N) return lanes_below<acc_t, W>(n) ? load<scalar_t, acc_t, W>(p) : splat<V>(pad);
  return load_partial<scalar_t, acc_t, W>(p, n, pad);
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE acc_t row_max(const scalar_t* x, int64_t C, const scalar_t* end) {
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
  if (c < C) m1 = vmax(m1, load_tail<scalar_t, acc_t, W>(x + c, static_cast<int>(C - c), ninf, end));
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
  const acc_t w = P.W[k * P.w_sk + b * P.w_sb];
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
CMP_INLINE void mc_teacher_pass(const scalar_t* t, const scalar_t* end, const scalar_t* next, acc_t mt, int64_t nfull,
                                int tail,
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
    const V x = load_tail<scalar_t, acc_t, W>(t + nfull, tail, mt, end) - mt;  // padded lanes: x = 0
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
  const acc_t ms = row_max<scalar_t, acc_t, W>(s, C, P.S_end);
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
    const V y = load_tail<scalar_t, acc_t, W>(s + nfull, tail, ms, P.S_end) - ms;
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
    const acc_t mt = row_max<scalar_t, acc_t, W>(t, C, P.T_end);
    V sums[4];
    switch (P.pw) {  // tau = 1/4 and 4 take the two-exponential loop too (fewer instantiations)
      case 1:
        mc_teacher_pass<1, scalar_t, acc_t, W>(t, P.T_end, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
        break;
      case 2:
        mc_teacher_pass<2, scalar_t, acc_t, W>(t, P.T_end, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
        break;
      case -2:
        mc_teacher_pass<-2, scalar_t, acc_t, W>(t, P.T_end, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
        break;
      default:
        mc_teacher_pass<0, scalar_t, acc_t, W>(t, P.T_end, next, mt, nfull, tail, inv_tau, scr.ys, scr.qs, sums);
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

// One multilabel student element (a vector of them): stores y = s / tau, sp(-y) = max(-y, 0) + log1p(exp(-|y|)) and
// p = sigmoid(y).
template <typename V, typename acc_t>
CMP_INLINE void ml_student_element(const V& sv, acc_t inv_tau, acc_t* y_out, acc_t* sp_out, acc_t* p_out) {
  const V zero = splat<V>(acc_t(0)), one = splat<V>(acc_t(1));
  const V y = sv * inv_tau;
  const V e = vexp(-vabs(y));
  const V inv = one / (one + e);
  st<V>(y_out, y);
  st<V>(sp_out, vmax(-y, zero) + vlog1p01(e));
  st<V>(p_out, y >= 0 ? inv : e * inv);
}

// One multilabel teacher element (a vector of them): with x = t / tau and y = s / tau (given, with
// sps = sp(-y)), the Bernoulli KL term sp(-y) - sp(-x) + (1 - q)(y - x), the binary entropy of sigmoid(t), and
// q = sigmoid(x). tau1: tau = 1, so one exponential serves both temperatures.
template <int W, typename V, typename acc_t>
CMP_INLINE void ml_teacher_element(const V& tv, const V& y, const V& sps, acc_t inv_tau, bool tau1, V& kl, V& h,
                                   V& q) {
  const V zero = splat<V>(acc_t(0)), one = splat<V>(acc_t(1));
  const V at = vabs(tv);
  V e1, e2;  // exp(-|t| / tau), exp(-|t|)
  if (tau1) {
    exp_pair<1>(-at, inv_tau, e1, e2);
  } else {
    exp_pair<0>(-at, inv_tau, e1, e2);
  }
  const V x = tv * inv_tau;
  const V l1 = vlog1p01(e1);
  const V inv1 = one / (one + e1);
  const auto pos = x >= 0;
  q = pos ? inv1 : e1 * inv1;
  const V omq = pos ? e1 * inv1 : inv1;
  kl = sps - (vmax(-x, zero) + l1) + omq * (y - x);
  h = tau1 ? l1 + at * e1 * inv1 : vlog1p01(e2) + at * e2 / (one + e2);
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void row_multilabel(const KdParams<scalar_t, acc_t>& P, int64_t b, Scratch<acc_t>& scr) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const int64_t C = P.C, nfull = C / N * N;
  const int tail = static_cast<int>(C - nfull);
  const auto tail_mask = lanes_below<acc_t, W>(tail);
  const V zero = splat<V>(acc_t(0));
  const acc_t inv_tau = P.inv_tau;

  // Student: y = s / tau, sp(-y) = max(-y, 0) + log1p(exp(-|y|)), p = sigmoid(y).
  const scalar_t* s = P.S + b * C;
  auto student = [&](int64_t c, const V& sv) __attribute__((always_inline)) {
    ml_student_element(sv, inv_tau, scr.ys + c, scr.sps + c, scr.ps + c);
  };
  const scalar_t* next_s = next_row(P, -1, b);
  for (int64_t c = 0; c < nfull; c += N) {
    prefetch_ahead<N>(next_s, c);
    student(c, load<scalar_t, acc_t, W>(s + c));
  }
  if (tail) student(nfull, load_tail<scalar_t, acc_t, W>(s + nfull, tail, acc_t(0), P.S_end));

  RowAccum<acc_t> R;
  for (int64_t k = 0; k < P.K; ++k) {
    const scalar_t* t = P.T + (k * P.B + b) * C;
    const scalar_t* next = next_row(P, k, b);
    V klv = zero, hv = zero;
    auto teacher = [&](int64_t c, const V& tv, bool masked) __attribute__((always_inline)) {
      V kl, h, q;
      ml_teacher_element<W>(tv, ld<V>(scr.ys + c), ld<V>(scr.sps + c), inv_tau, P.pw == 1, kl, h, q);
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
    if (tail) teacher(nfull, load_tail<scalar_t, acc_t, W>(t + nfull, tail, acc_t(0), P.T_end), true);
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

// ---------------------------------------------------------------------------------------------------------------
// Few classes: rows in lanes
// ---------------------------------------------------------------------------------------------------------------
// With few classes a row fills a fraction of a vector, and the row loop's fixed work per row (maxima and five
// horizontal sums per teacher, partial loads and stores of the tails) outweighs its arithmetic. Up to kLanesMaxC
// classes the kernel instead computes N rows at once, one row per lane: a block of N rows of S and of each T[k] is
// transposed into a [C][N] tile (scalar reads converted to the accumulation dtype), after which every per-row
// quantity (maxima, normalisers, entropy, KL, gated weights, loss) is one vector, with no horizontal sum and no tail.
// W[k], entropy[k], keep[k] and loss hold a block's rows at N consecutive addresses, so they are read and written as
// vectors; the gradient tile is transposed back into grad. The formulas are the row loop's. Padded lanes of a last,
// partial block compute on zeros and are never stored.

constexpr int64_t kLanesMaxC = 64;

// Tiles of the lane layout, [C][N] each, 64-byte aligned: ys and ps (student), sps (multilabel: sp(-y)), ts (one
// teacher's logits, overwritten by its q), g (sum over teachers of w' q, then the gradient).
template <typename acc_t>
struct LaneScratch {
  LaneScratch(int64_t c, int n) : size(c * n) {
    data.reset(new (std::align_val_t(64)) acc_t[5 * size]);
    ys = data.get();
    ps = ys + size;
    sps = ps + size;
    ts = sps + size;
    g = ts + size;
  }
  struct Free {
    void operator()(acc_t* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  std::unique_ptr<acc_t[], Free> data;
  int64_t size;
  acc_t *ys, *ps, *sps, *ts, *g;
};

// tile[c][r] = src[r][c] for the block's rows (r < rows; the other lanes are zero).
template <typename scalar_t, typename acc_t, int N>
CMP_INLINE void tile_in(acc_t* tile, const scalar_t* src, int64_t C, int rows) {
  for (int r = 0; r < rows; ++r) {
    const scalar_t* row = src + r * C;
    for (int64_t c = 0; c < C; ++c) tile[c * N + r] = static_cast<acc_t>(row[c]);
  }
  for (int r = rows; r < N; ++r) {
    for (int64_t c = 0; c < C; ++c) tile[c * N + r] = acc_t(0);
  }
}

// dst[r][c] = tile[c][r] in the output dtype (round to nearest even), rows r < rows.
template <typename scalar_t, typename acc_t, int N>
CMP_INLINE void tile_out(scalar_t* dst, const acc_t* tile, int64_t C, int rows) {
  for (int r = 0; r < rows; ++r) {
    scalar_t* row = dst + r * C;
    for (int64_t c = 0; c < C; ++c) row[c] = static_cast<scalar_t>(tile[c * N + r]);
  }
}

// The block's n consecutive per-row values (n < N: the other lanes read as 0, and are not written).
template <typename acc_t, int W>
CMP_INLINE typename Vec<acc_t, W>::type load_rows(const acc_t* p, int n) {
  return n == Vec<acc_t, W>::N ? load<acc_t, acc_t, W>(p) : load_partial<acc_t, acc_t, W>(p, n, acc_t(0));
}
template <typename acc_t, int W>
CMP_INLINE void store_rows(acc_t* p, typename Vec<acc_t, W>::type v, int n) {
  if (n == Vec<acc_t, W>::N) {
    store<acc_t, acc_t, W>(p, v);
  } else {
    store_partial<acc_t, acc_t, W>(p, v, n);
  }
}

template <typename acc_t, int W>
CMP_INLINE typename Vec<acc_t, W>::type tile_max(const acc_t* tile, int64_t C) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  V m = ld<V>(tile);
  for (int64_t c = 1; c < C; ++c) m = vmax(m, ld<V>(tile + c * N));
  return m;
}

// Per-row sums over the kept teachers, one row per lane.
template <typename V>
struct LaneAccum {
  V total, wkl;  // sum of kept weights; sum of kept weights times KL
};

// Teacher k of the block: records entropy and keep, adds the kept weight and its KL term to A, and returns the gated
// weight per lane (0 where dropped, and in padded lanes). Lane by lane: N scalar steps per teacher and block.
template <typename scalar_t, typename acc_t, int W>
CMP_INLINE typename Vec<acc_t, W>::type gate_lanes(const KdParams<scalar_t, acc_t>& P, int64_t k, int64_t b0, int rows,
                                                   typename Vec<acc_t, W>::type H, typename Vec<acc_t, W>::type KL,
                                                   LaneAccum<typename Vec<acc_t, W>::type>& A) {
  using V = typename Vec<acc_t, W>::type;
  const int64_t kb = k * P.B + b0;
  V w = splat<V>(acc_t(0)), wkl = w;
  for (int r = 0; r < rows; ++r) {
    const bool kept = H[r] < P.chi;
    P.entropy[kb + r] = H[r];
    P.keep[kb + r] = kept;
    if (kept) {  // a dropped teacher adds nothing, even where its KL is not finite
      w[r] = P.W[k * P.w_sk + (b0 + r) * P.w_sb];
      wkl[r] = w[r] * KL[r];
    }
  }
  A.total += w;
  A.wkl += wkl;
  return w;
}

// g = coef * q (first teacher) or g += coef * q, over the tile.
template <typename acc_t, int W>
CMP_INLINE void accumulate_tile(acc_t* g, const acc_t* q, typename Vec<acc_t, W>::type coef, int64_t C, bool first) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  for (int64_t c = 0; c < C; ++c) {
    const V v = coef * ld<V>(q + c * N);
    st<V>(g + c * N, first ? v : ld<V>(g + c * N) + v);
  }
}

// loss and gradient of the block: loss = tau^2 norm sum_k w_k KL_k, grad = tau norm (W' p_scale ps - g).
template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void finish_lanes(const KdParams<scalar_t, acc_t>& P, int64_t b0, int rows, LaneScratch<acc_t>& scr,
                             const LaneAccum<typename Vec<acc_t, W>::type>& A, typename Vec<acc_t, W>::type p_scale) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const V zero = splat<V>(acc_t(0)), one = splat<V>(acc_t(1));
  const V norm = P.renormalize ? (A.total > 0 ? one / A.total : zero) : one;
  store_rows<acc_t, W>(P.loss + b0, P.tau * P.tau * norm * A.wkl, rows);
  const V a = P.tau * norm * A.total * p_scale, bc = P.tau * norm;
  for (int64_t c = 0; c < P.C; ++c) st<V>(scr.g + c * N, a * ld<V>(scr.ps + c * N) - bc * ld<V>(scr.g + c * N));
  tile_out<scalar_t, acc_t, N>(P.grad + b0 * P.C, scr.g, P.C, rows);
}

// Multiclass teacher tile: x = t - max(t) per lane, e1 = exp(x / tau) (overwrites the tile), e2 = exp(x), and the
// sums Zq, Zr, Sr, A of the row loop (mc_teacher_pass).
template <int PW, typename acc_t, int W>
CMP_INLINE void mc_lane_teacher(acc_t* ts, const acc_t* ys, int64_t C, acc_t inv_tau,
                                typename Vec<acc_t, W>::type (&sums)[4]) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const V mt = tile_max<acc_t, W>(ts, C);
  V zq = splat<V>(acc_t(0)), zr = zq, sr = zq, av = zq;
  for (int64_t c = 0; c < C; ++c) {
    const V x = ld<V>(ts + c * N) - mt;
    V e1, e2;
    exp_pair<PW>(x, inv_tau, e1, e2);
    zq += e1;
    zr += e2;
    sr += e2 * x;
    av += e1 * (x - ld<V>(ys + c * N));
    st<V>(ts + c * N, e1);
  }
  sums[0] = zq;
  sums[1] = zr;
  sums[2] = sr;
  sums[3] = av;
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void block_multiclass(const KdParams<scalar_t, acc_t>& P, int64_t b0, int rows, LaneScratch<acc_t>& scr) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const int64_t C = P.C;
  const acc_t inv_tau = P.inv_tau;

  // Student: y = s - max(s), e = exp(y / tau), Z_s.
  tile_in<scalar_t, acc_t, N>(scr.ys, P.S + b0 * C, C, rows);
  const V ms = tile_max<acc_t, W>(scr.ys, C);
  V zs = splat<V>(acc_t(0));
  for (int64_t c = 0; c < C; ++c) {
    const V y = ld<V>(scr.ys + c * N) - ms;
    const V e = vexp(y * inv_tau);
    st<V>(scr.ys + c * N, y);
    st<V>(scr.ps + c * N, e);
    zs += e;
  }
  const V log_zs = vlog(zs);

  LaneAccum<V> A{splat<V>(acc_t(0)), splat<V>(acc_t(0))};
  for (int64_t k = 0; k < P.K; ++k) {
    tile_in<scalar_t, acc_t, N>(scr.ts, P.T + (k * P.B + b0) * C, C, rows);
    V sums[4];
    switch (P.pw) {
      case 1:
        mc_lane_teacher<1, acc_t, W>(scr.ts, scr.ys, C, inv_tau, sums);
        break;
      case 2:
        mc_lane_teacher<2, acc_t, W>(scr.ts, scr.ys, C, inv_tau, sums);
        break;
      case -2:
        mc_lane_teacher<-2, acc_t, W>(scr.ts, scr.ys, C, inv_tau, sums);
        break;
      default:
        mc_lane_teacher<0, acc_t, W>(scr.ts, scr.ys, C, inv_tau, sums);
    }
    const V H = vlog(sums[1]) - sums[2] / sums[1];
    const V KL = sums[3] / sums[0] * inv_tau + log_zs - vlog(sums[0]);
    const V w = gate_lanes<scalar_t, acc_t, W>(P, k, b0, rows, H, KL, A);
    accumulate_tile<acc_t, W>(scr.g, scr.ts, w / sums[0], C, k == 0);
  }
  finish_lanes<scalar_t, acc_t, W>(P, b0, rows, scr, A, splat<V>(acc_t(1)) / zs);
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void block_multilabel(const KdParams<scalar_t, acc_t>& P, int64_t b0, int rows, LaneScratch<acc_t>& scr) {
  using V = typename Vec<acc_t, W>::type;
  constexpr int N = Vec<acc_t, W>::N;
  const int64_t C = P.C;
  const acc_t inv_tau = P.inv_tau;

  tile_in<scalar_t, acc_t, N>(scr.ys, P.S + b0 * C, C, rows);
  for (int64_t c = 0; c < C; ++c) {
    ml_student_element(ld<V>(scr.ys + c * N), inv_tau, scr.ys + c * N, scr.sps + c * N, scr.ps + c * N);
  }

  LaneAccum<V> A{splat<V>(acc_t(0)), splat<V>(acc_t(0))};
  const bool tau1 = P.pw == 1;
  for (int64_t k = 0; k < P.K; ++k) {
    tile_in<scalar_t, acc_t, N>(scr.ts, P.T + (k * P.B + b0) * C, C, rows);
    V klv = splat<V>(acc_t(0)), hv = klv;
    for (int64_t c = 0; c < C; ++c) {
      V kl, h, q;
      ml_teacher_element<W>(ld<V>(scr.ts + c * N), ld<V>(scr.ys + c * N), ld<V>(scr.sps + c * N), inv_tau, tau1, kl,
                            h, q);
      klv += kl;
      hv += h;
      st<V>(scr.ts + c * N, q);
    }
    const V w = gate_lanes<scalar_t, acc_t, W>(P, k, b0, rows, hv / static_cast<acc_t>(C), klv, A);
    accumulate_tile<acc_t, W>(scr.g, scr.ts, w, C, k == 0);
  }
  finish_lanes<scalar_t, acc_t, W>(P, b0, rows, scr, A, splat<V>(acc_t(1)));
}

// Rows [b0, b1) in blocks of N (the last one partial).
template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void kd_lanes_impl(const KdParams<scalar_t, acc_t>& P, int64_t b0, int64_t b1) {
  constexpr int N = Vec<acc_t, W>::N;
  LaneScratch<acc_t> scr(P.C, N);
  for (int64_t b = b0; b < b1; b += N) {
    const int rows = static_cast<int>(std::min<int64_t>(N, b1 - b));
    if (P.multilabel) {
      block_multilabel<scalar_t, acc_t, W>(P, b, rows, scr);
    } else {
      block_multiclass<scalar_t, acc_t, W>(P, b, rows, scr);
    }
  }
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void kd_rows_impl(const KdParams<scalar_t, acc_t>& P, int64_t b0, int64_t b1) {
  if (P.lanes) {
    kd_lanes_impl<scalar_t, acc_t, W>(P, b0, b1);
    return;
  }
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
  // About 64K element-visits per task before a range of rows is worth a thread. The lane layout splits at multiples
  // of 16 rows (a whole number of blocks at every vector width).
  const int64_t per_row = std::max<int64_t>((P.K + 1) * P.C, 1);
  const int64_t grain = std::max<int64_t>(1, 65536 / per_row);
  if (P.lanes) {
    constexpr int64_t kRows = 16;
    at::parallel_for(0, (P.B + kRows - 1) / kRows, (grain + kRows - 1) / kRows, [&](int64_t i0, int64_t i1) {
      fn(P, i0 * kRows, std::min(P.B, i1 * kRows));
    });
  } else {
    at::parallel_for(0, P.B, grain, [&](int64_t b0, int64_t b1) { fn(P, b0, b1); });
  }
}

// Rows in lanes for C <= kLanesMaxC; $COMPRESSOR_KD_CPU_LAYOUT = rows | lanes forces one layout (tests run both on
// every shape), read on every call like $COMPRESSOR_CPU_CAPABILITY.
inline bool use_lanes(int64_t C) {
  const char* env = std::getenv("COMPRESSOR_KD_CPU_LAYOUT");
  if (env != nullptr && std::string(env) == "rows") return false;
  if (env != nullptr && std::string(env) == "lanes") return true;
  return C <= kLanesMaxC;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multi_teacher_kd_cpu(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weights, double temperature,
    double gate_threshold, bool multilabel, bool renormalize) {
  check_kd_inputs(student, teacher, weights, temperature, "multi_teacher_kd (CPU)");
  TORCH_CHECK(student.device().is_cpu(), "multi_teacher_kd (CPU): tensors must be on the CPU");
  const int64_t K = teacher.size(0), B = student.size(0), C = student.size(1);
  KdOutputs out(student, K);
  if (C == 0) {
    fill_empty_classes(out.loss, out.keep, out.entropy, multilabel, gate_threshold);
    return out.result();
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, student.scalar_type(), "multi_teacher_kd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    KdParams<scalar_t, acc_t> P;
    P.S = student.const_data_ptr<scalar_t>();
    P.T = teacher.const_data_ptr<scalar_t>();
    P.S_end = P.S + B * C;
    P.T_end = P.T + K * B * C;
    P.W = weights.const_data_ptr<acc_t>();
    std::tie(P.w_sk, P.w_sb) = weight_strides(weights);
    P.K = K;
    P.B = B;
    P.C = C;
    P.tau = static_cast<acc_t>(temperature);
    P.inv_tau = static_cast<acc_t>(1.0 / temperature);
    P.chi = static_cast<acc_t>(gate_threshold);
    P.pw = exp_power(temperature);
    P.multilabel = multilabel;
    P.renormalize = renormalize;
    P.lanes = use_lanes(C);
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
