// CUDA kernel of multi_teacher_kd (contract: compressor/reference.py; input form asserted by kd_common.h).
//
// One CTA per row b (grid = B), blockDim in {32, ..., 512}; each thread owns the columns
// [i * VEC, i * VEC + VEC) for i = threadIdx.x, threadIdx.x + blockDim.x, ... and reads them with 16-byte loads
// (VEC = 16 / sizeof(input); a scalar instantiation with VEC = 1 serves rows whose length or base pointers are not
// 16-byte aligned). Accumulation is float for float32 / bfloat16 / float16 inputs and double for float64.
//
// Sweep 1 (statistics), teachers in groups of KG (8 for float32 inputs with K > 4, else 4): per column pack, each
// thread loads
// S[b, cols] and T[k, b, cols] for every teacher of the group (KG + 1 independent 16-byte loads in flight) and updates
// per-thread online statistics (multiclass, x = t - m with m the running max, rescaled whenever the max grows):
//   student  m_s, Z_s = sum exp((s - m_s) / tau)                                               (group 0 only)
//   teacher  m, Zq = sum exp((t - m) / tau), Zr = sum exp(t - m), Sr = sum exp(t - m) (t - m),
//            A = sum exp((t - m) / tau) (t - s)            -- so the KL needs no second read of q
// multilabel: KLsum = sum_c [sp(-y) - sp(-x) + (1 - q)(y - x)] and Hsum = sum_c [log1p(e) + |t| e / (1 + e)] with
// x = t / tau, y = s / tau, sp(z) = log(1 + exp(z)), e = exp(-|t|) (no normaliser, no max).
// Warp shuffles merge the per-thread states (max-aware merge), then warp 0 merges the per-warp states and thread 0
// finalises each teacher:
//   H  = log Zr - Sr / Zr   (multilabel: Hsum / C),   keep = H < chi,
//   KL = A / (tau Zq) + (m_s - m) / tau + log Z_s - log Zq   (multilabel: KLsum)
// and, after all groups, the gated (and optionally renormalised) weights, loss[b] = tau^2 sum_k w'_k KL_k, and the
// gradient coefficients.
//
// Sweep 2 (gradient): grad[b, c] = tau * (W' p_c - sum_k w'_k q_kc) needs the final normalisers, so the row is read a
// second time, last packs first: S and only the teachers with a non-zero gated weight (a row whose gate dropped
// everything writes zeros without reading). Written with 16-byte stores in the student's dtype (round to nearest
// even). The gradient is d loss[b] / d S[b, :]; the backward (csrc/ops.cpp) scales it per row.
//
// Bytes per row, E = element size, Kk = teachers kept with a non-zero weight:
//   rows cached in shared memory when (K + 1) C E plus 4 K accumulators fit in kRowCacheBytes = 40 KB (K = 4: C up
//   to ~2000 in fp32, ~4000 in bf16; the CPU benchmark's C = 1000, K = 5 fp32 is 24 KB):
//     reads (K + 1) C E from HBM / L2 once and writes C E; sweep 2 reads shared memory.
//   otherwise (large vocabularies: C = 131072 bf16, K = 4 is 1.25 MB per row): reads (K + 1) C E in sweep 1 and
//     (1 + Kk) C E in sweep 2, writes C E. The re-read comes from L2 only while the row is still resident: with
//     hundreds of 1.25 MB rows in flight (far more than the 50 MB of L2) it mostly comes from HBM, i.e. up to
//     (2K + 3) / (K + 2) = 1.83x (K = 4) the minimal traffic (sweep 2 starts with the packs read last, the likeliest
//     still in L2). Holding the row in the distributed shared memory of a cluster of CTAs (sm_90) would remove the
//     re-read; not done here.
// Nothing of size [K, B, C] is allocated; everything runs on the current stream with no host synchronisation.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>  // the current stream (at::cuda::getCurrentCUDAStream is this function; ATen/cuda/
                                  // CUDAContext.h is avoided: it pulls cuBLAS/cuSPARSE headers a bare toolkit may lack)
#include <torch/library.h>

#include <cstdint>
#include <limits>
#include <tuple>
#include <type_traits>

#include "../kd_common.h"

namespace compressor {
namespace {

constexpr int kMaxThreads = 512;
constexpr int kMaxWarps = kMaxThreads / 32;
constexpr int kMaxTeachers = 1024;               // bounds the per-teacher shared-memory arrays (4 K acc values)
constexpr int64_t kRowCacheBytes = 40 * 1024;    // dynamic shared memory for cached rows + per-teacher arrays
constexpr unsigned kFullMask = 0xffffffffu;

// ------------------------------------------------------------------------------------------------------------------
// Device math. Every exponential is exp(x * k) with a multiplier k prepared on the host: exp(x / tau) and exp(x).
// Float: exp2f(x * k) with log2(e) folded into k, a single MUFU ex2 under --use_fast_math. Double: exp(x * k).
// ------------------------------------------------------------------------------------------------------------------

__device__ __forceinline__ float exp_k(float x, float k) { return exp2f(x * k); }
__device__ __forceinline__ double exp_k(double x, double k) { return exp(x * k); }
__device__ __forceinline__ float dlog(float x) { return logf(x); }
__device__ __forceinline__ double dlog(double x) { return log(x); }
__device__ __forceinline__ float dlog1p(float x) { return log1pf(x); }
__device__ __forceinline__ double dlog1p(double x) { return log1p(x); }

template <typename acc_t>
__device__ __forceinline__ acc_t neg_inf() {
  return -std::numeric_limits<acc_t>::infinity();
}

// Multipliers: exp(x / tau) = exp_k(x, k_tau), exp(x) = exp_k(x, k_one).
template <typename acc_t>
struct ExpK {
  acc_t k_tau, k_one;
  int pw;  // compressor::exp_power(tau): 1 (tau = 1), 2 / 4 (tau = 1/2, 1/4), -2 / -4 (tau = 2, 4), 0 (other)
};

// e1[v] = exp(x[v] / tau), e2[v] = exp(x[v]) for n values; the pw switch is taken once per call (it is uniform
// across the grid), and one exponential is derived from the other by squaring when tau or 1 / tau is 1, 2 or 4.
template <typename acc_t, int n>
__device__ __forceinline__ void exp_pair(const acc_t (&x)[n], const ExpK<acc_t>& k, acc_t (&e1)[n], acc_t (&e2)[n]) {
  switch (k.pw) {
    case 1:
#pragma unroll
      for (int v = 0; v < n; ++v) e1[v] = e2[v] = exp_k(x[v], k.k_one);
      break;
    case 2:
#pragma unroll
      for (int v = 0; v < n; ++v) {
        e2[v] = exp_k(x[v], k.k_one);
        e1[v] = e2[v] * e2[v];
      }
      break;
    case 4:
#pragma unroll
      for (int v = 0; v < n; ++v) {
        e2[v] = exp_k(x[v], k.k_one);
        e1[v] = e2[v] * e2[v];
        e1[v] = e1[v] * e1[v];
      }
      break;
    case -2:
#pragma unroll
      for (int v = 0; v < n; ++v) {
        e1[v] = exp_k(x[v], k.k_tau);
        e2[v] = e1[v] * e1[v];
      }
      break;
    case -4:
#pragma unroll
      for (int v = 0; v < n; ++v) {
        e1[v] = exp_k(x[v], k.k_tau);
        e2[v] = e1[v] * e1[v];
        e2[v] = e2[v] * e2[v];
      }
      break;
    default:
#pragma unroll
      for (int v = 0; v < n; ++v) {
        e1[v] = exp_k(x[v], k.k_tau);
        e2[v] = exp_k(x[v], k.k_one);
      }
  }
}

template <typename acc_t>
__device__ __forceinline__ void exp_pair1(acc_t x, const ExpK<acc_t>& k, acc_t& e1, acc_t& e2) {
  const acc_t xs[1] = {x};
  acc_t a[1], b[1];
  exp_pair<acc_t, 1>(xs, k, a, b);
  e1 = a[0];
  e2 = b[0];
}

// sigmoid(u / tau) without overflow: e = exp(-|u| / tau), 1 / (1 + e) or e / (1 + e).
template <typename acc_t>
__device__ __forceinline__ acc_t sigmoid_tau(acc_t u, const ExpK<acc_t>& k) {
  const acc_t e = exp_k(-fabs(u), k.k_tau);
  const acc_t r = acc_t(1) / (acc_t(1) + e);
  return u >= acc_t(0) ? r : e * r;
}

// ------------------------------------------------------------------------------------------------------------------
// 16-byte packs
// ------------------------------------------------------------------------------------------------------------------

template <typename scalar_t, int VEC>
struct alignas(sizeof(scalar_t) * VEC) Pack {
  scalar_t v[VEC];
};

template <typename scalar_t, int VEC>
__device__ __forceinline__ Pack<scalar_t, VEC> load_pack(const scalar_t* p) {
  return *reinterpret_cast<const Pack<scalar_t, VEC>*>(p);
}
template <typename scalar_t, int VEC>
__device__ __forceinline__ void store_pack(scalar_t* p, const Pack<scalar_t, VEC>& v) {
  *reinterpret_cast<Pack<scalar_t, VEC>*>(p) = v;
}

// ------------------------------------------------------------------------------------------------------------------
// Online statistics and their merge
// ------------------------------------------------------------------------------------------------------------------

// Multiclass teacher statistics relative to the running max m (m = -inf: empty).
template <typename acc_t>
struct McStat {
  acc_t m, zq, zr, sr, a;
};

// Rescale a state from max m to max m_new >= m (m finite): factors f = exp(d), g = exp(d / tau), d = m - m_new.
template <typename acc_t>
__device__ __forceinline__ void rescale(McStat<acc_t>& s, acc_t m_new, const ExpK<acc_t>& ek) {
  const acc_t d = s.m - m_new;
  acc_t g, f;
  exp_pair1(d, ek, g, f);
  s.zq *= g;
  s.a *= g;
  s.sr = f * (s.sr + d * s.zr);  // sum e^(t-m') (t-m') = e^d sum e^(t-m) ((t-m) + d)
  s.zr *= f;
  s.m = m_new;
}

template <typename acc_t>
__device__ __forceinline__ void merge(McStat<acc_t>& x, const McStat<acc_t>& y, const ExpK<acc_t>& ek) {
  if (y.m == neg_inf<acc_t>()) return;
  if (x.m == neg_inf<acc_t>()) {
    x = y;
    return;
  }
  McStat<acc_t> yy = y;
  if (x.m < yy.m) {
    rescale(x, yy.m, ek);
  } else if (yy.m < x.m) {
    rescale(yy, x.m, ek);
  }
  x.zq += yy.zq;
  x.zr += yy.zr;
  x.sr += yy.sr;
  x.a += yy.a;
}

template <typename acc_t>
__device__ __forceinline__ McStat<acc_t> shfl_xor(const McStat<acc_t>& s, int off) {
  return {__shfl_xor_sync(kFullMask, s.m, off), __shfl_xor_sync(kFullMask, s.zq, off),
          __shfl_xor_sync(kFullMask, s.zr, off), __shfl_xor_sync(kFullMask, s.sr, off),
          __shfl_xor_sync(kFullMask, s.a, off)};
}

// Tempered softmax normaliser of the student: max m and Z = sum exp((s - m) / tau).
template <typename acc_t>
__device__ __forceinline__ void merge_softmax(acc_t& m, acc_t& z, acc_t m2, acc_t z2, const ExpK<acc_t>& ek) {
  if (m2 == neg_inf<acc_t>()) return;
  if (m == neg_inf<acc_t>()) {
    m = m2;
    z = z2;
    return;
  }
  const acc_t mm = m > m2 ? m : m2;
  z = z * exp_k(m - mm, ek.k_tau) + z2 * exp_k(m2 - mm, ek.k_tau);
  m = mm;
}

// ------------------------------------------------------------------------------------------------------------------
// Kernel
// ------------------------------------------------------------------------------------------------------------------

template <typename scalar_t, typename acc_t>
struct KdArgs {
  const scalar_t* __restrict__ S;  // [B, C]
  const scalar_t* __restrict__ T;  // [K, B, C]
  const acc_t* __restrict__ W;     // [K, B] with strides (w_sk, w_sb); w_sb = 0 for [K] weights
  acc_t* __restrict__ loss;        // [B]
  bool* __restrict__ keep;         // [K, B]
  acc_t* __restrict__ entropy;     // [K, B]
  scalar_t* __restrict__ grad;     // [B, C]
  int64_t B, C;
  int64_t w_sk, w_sb;
  int K;
  acc_t tau, inv_tau, chi;
  ExpK<acc_t> ek;
  bool renormalize;
  bool cache_rows;      // keep S[b] and T[:, b] in shared memory between the sweeps
  int cache_offset;     // byte offset of the row cache in dynamic shared memory (after the per-teacher arrays)
};

template <typename scalar_t, typename acc_t, int KG, int VEC, bool ML>
__global__ void __launch_bounds__(kMaxThreads) multi_teacher_kd_kernel(const KdArgs<scalar_t, acc_t> p) {
  using PackT = Pack<scalar_t, VEC>;
  constexpr int NF = ML ? 2 * KG : 5 * KG + 2;  // reduced fields per group
  __shared__ acc_t red[kMaxWarps][NF];
  __shared__ acc_t row_stat[4];  // m_s, Z_s, student gradient coefficient, "anything to add" flag
  extern __shared__ __align__(16) unsigned char smem[];

  const int K = p.K;
  const int64_t B = p.B, C = p.C;
  const int64_t b = blockIdx.x;
  const int nvec = static_cast<int>(C / VEC);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  const acc_t inv_tau = p.inv_tau;
  const ExpK<acc_t> ek = p.ek;
  const acc_t ninf = neg_inf<acc_t>();

  // Per-teacher results (dynamic shared memory): max, gated weight -> gradient coefficient, KL, 1 / Zq.
  acc_t* t_m = reinterpret_cast<acc_t*>(smem);
  acc_t* t_w = t_m + K;
  acc_t* t_kl = t_w + K;
  acc_t* t_iz = t_kl + K;
  scalar_t* cache = reinterpret_cast<scalar_t*>(smem + p.cache_offset);  // [K + 1][C]: student row, teacher rows
  const scalar_t* s_row = p.S + b * C;

  // ---------------------------------------------------------------- sweep 1: statistics, KG teachers at a time
  acc_t ms = ninf, zs = acc_t(0);  // student (multiclass, group 0)
  for (int g0 = 0; g0 < K; g0 += KG) {
    McStat<acc_t> st[ML ? 1 : KG];
    acc_t klsum[ML ? KG : 1], hsum[ML ? KG : 1];
#pragma unroll
    for (int j = 0; j < KG; ++j) {
      if constexpr (ML) {
        klsum[j] = acc_t(0);
        hsum[j] = acc_t(0);
      } else {
        st[j] = {ninf, acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
      }
    }

    for (int i = threadIdx.x; i < nvec; i += blockDim.x) {
      const int64_t col = static_cast<int64_t>(i) * VEC;
      PackT sp;
      if (p.cache_rows && g0 > 0) {
        sp = load_pack<scalar_t, VEC>(cache + col);  // written by this same thread in group 0
      } else {
        sp = load_pack<scalar_t, VEC>(s_row + col);
        if (p.cache_rows) store_pack<scalar_t, VEC>(cache + col, sp);
      }
      PackT tp[KG];
#pragma unroll
      for (int j = 0; j < KG; ++j) {
        const int k = g0 + j;
        if (k < K) {
          tp[j] = load_pack<scalar_t, VEC>(p.T + (static_cast<int64_t>(k) * B + b) * C + col);
          if (p.cache_rows) store_pack<scalar_t, VEC>(cache + static_cast<int64_t>(k + 1) * C + col, tp[j]);
        }
      }
      acc_t s[VEC];
#pragma unroll
      for (int v = 0; v < VEC; ++v) s[v] = static_cast<acc_t>(sp.v[v]);

      if constexpr (ML) {
        acc_t y[VEC], spy[VEC];  // y = s / tau, sp(-y) = max(-y, 0) + log1p(exp(-|y|))
#pragma unroll
        for (int v = 0; v < VEC; ++v) {
          y[v] = s[v] * inv_tau;
          spy[v] = fmax(-y[v], acc_t(0)) + dlog1p(exp_k(-fabs(s[v]), ek.k_tau));
        }
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          if (g0 + j < K) {
            acc_t nat[VEC], e1[VEC], e2[VEC];  // -|t|, exp(-|t| / tau), exp(-|t|)
#pragma unroll
            for (int v = 0; v < VEC; ++v) nat[v] = -fabs(static_cast<acc_t>(tp[j].v[v]));
            exp_pair<acc_t, VEC>(nat, ek, e1, e2);
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
              const acc_t t = static_cast<acc_t>(tp[j].v[v]);
              const acc_t at = -nat[v];
              const acc_t x = t * inv_tau;
              const acc_t l1 = dlog1p(e1[v]);
              const acc_t inv1 = acc_t(1) / (acc_t(1) + e1[v]);
              const acc_t omq = x >= acc_t(0) ? e1[v] * inv1 : inv1;  // 1 - sigmoid(x)
              klsum[j] += spy[v] - (fmax(-x, acc_t(0)) + l1) + omq * (y[v] - x);
              if (ek.pw == 1) {  // e2 == e1
                hsum[j] += l1 + at * e1[v] * inv1;
              } else {
                hsum[j] += dlog1p(e2[v]) + at * e2[v] / (acc_t(1) + e2[v]);
              }
            }
          }
        }
      } else {
        if (g0 == 0) {
          acc_t vm = s[0];
#pragma unroll
          for (int v = 1; v < VEC; ++v) vm = s[v] > vm ? s[v] : vm;
          if (vm > ms) {
            if (ms != ninf) zs *= exp_k(ms - vm, ek.k_tau);
            ms = vm;
          }
#pragma unroll
          for (int v = 0; v < VEC; ++v) zs += exp_k(s[v] - ms, ek.k_tau);
        }
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          if (g0 + j < K) {
            acc_t t[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) t[v] = static_cast<acc_t>(tp[j].v[v]);
            acc_t vm = t[0];
#pragma unroll
            for (int v = 1; v < VEC; ++v) vm = t[v] > vm ? t[v] : vm;
            if (vm > st[j].m) {
              if (st[j].m != ninf) {
                rescale(st[j], vm, ek);
              } else {
                st[j].m = vm;
              }
            }
            acc_t x[VEC], e1[VEC], e2[VEC];
#pragma unroll
            for (int v = 0; v < VEC; ++v) x[v] = t[v] - st[j].m;
            exp_pair<acc_t, VEC>(x, ek, e1, e2);
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
              st[j].zq += e1[v];
              st[j].zr += e2[v];
              st[j].sr += e2[v] * x[v];
              st[j].a += e1[v] * (t[v] - s[v]);
            }
          }
        }
      }
    }

    // Block reduction: butterfly within each warp, per-warp states through shared memory, butterfly in warp 0.
    if constexpr (ML) {
#pragma unroll
      for (int j = 0; j < KG; ++j) {
        for (int off = 16; off > 0; off >>= 1) {
          klsum[j] += __shfl_xor_sync(kFullMask, klsum[j], off);
          hsum[j] += __shfl_xor_sync(kFullMask, hsum[j], off);
        }
      }
      if (lane == 0) {
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          red[warp][2 * j] = klsum[j];
          red[warp][2 * j + 1] = hsum[j];
        }
      }
      __syncthreads();
      if (warp == 0) {
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          acc_t kl = lane < nwarps ? red[lane][2 * j] : acc_t(0);
          acc_t h = lane < nwarps ? red[lane][2 * j + 1] : acc_t(0);
          for (int off = 16; off > 0; off >>= 1) {
            kl += __shfl_xor_sync(kFullMask, kl, off);
            h += __shfl_xor_sync(kFullMask, h, off);
          }
          klsum[j] = kl;
          hsum[j] = h;
        }
      }
    } else {
#pragma unroll
      for (int j = 0; j < KG; ++j) {
        for (int off = 16; off > 0; off >>= 1) merge(st[j], shfl_xor(st[j], off), ek);
      }
      if (g0 == 0) {
        for (int off = 16; off > 0; off >>= 1) {
          merge_softmax(ms, zs, __shfl_xor_sync(kFullMask, ms, off), __shfl_xor_sync(kFullMask, zs, off), ek);
        }
      }
      if (lane == 0) {
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          red[warp][5 * j + 0] = st[j].m;
          red[warp][5 * j + 1] = st[j].zq;
          red[warp][5 * j + 2] = st[j].zr;
          red[warp][5 * j + 3] = st[j].sr;
          red[warp][5 * j + 4] = st[j].a;
        }
        red[warp][5 * KG] = ms;
        red[warp][5 * KG + 1] = zs;
      }
      __syncthreads();
      if (warp == 0) {
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          McStat<acc_t> x = {ninf, acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
          if (lane < nwarps) x = {red[lane][5 * j], red[lane][5 * j + 1], red[lane][5 * j + 2], red[lane][5 * j + 3],
                                  red[lane][5 * j + 4]};
          for (int off = 16; off > 0; off >>= 1) merge(x, shfl_xor(x, off), ek);
          st[j] = x;
        }
        if (g0 == 0) {
          acc_t m = lane < nwarps ? red[lane][5 * KG] : ninf;
          acc_t z = lane < nwarps ? red[lane][5 * KG + 1] : acc_t(0);
          for (int off = 16; off > 0; off >>= 1) {
            merge_softmax(m, z, __shfl_xor_sync(kFullMask, m, off), __shfl_xor_sync(kFullMask, z, off), ek);
          }
          if (lane == 0) {
            row_stat[0] = m;
            row_stat[1] = z;
          }
        }
      }
    }

    // Thread 0 finalises the group's teachers (entropy, gate, KL) from the block totals.
    if (threadIdx.x == 0) {
      const acc_t m_s = ML ? acc_t(0) : row_stat[0];
      const acc_t log_zs = ML ? acc_t(0) : dlog(row_stat[1]);
#pragma unroll
      for (int j = 0; j < KG; ++j) {
        const int k = g0 + j;
        if (k < K) {
          acc_t H, KL;
          if constexpr (ML) {
            H = hsum[j] / static_cast<acc_t>(C);
            KL = klsum[j];
            t_m[k] = acc_t(0);
            t_iz[k] = acc_t(1);
          } else {
            H = dlog(st[j].zr) - st[j].sr / st[j].zr;
            KL = st[j].a / st[j].zq * inv_tau + (m_s - st[j].m) * inv_tau + log_zs - dlog(st[j].zq);
            t_m[k] = st[j].m;
            t_iz[k] = acc_t(1) / st[j].zq;
          }
          const int64_t kb = static_cast<int64_t>(k) * B + b;
          const bool kept = H < p.chi;
          p.entropy[kb] = H;
          p.keep[kb] = kept;
          t_w[k] = kept ? p.W[static_cast<int64_t>(k) * p.w_sk + b * p.w_sb] : acc_t(0);
          t_kl[k] = KL;
        }
      }
    }
    __syncthreads();  // red[] is reused by the next group; t_* and row_stat are read below
  }

  // ---------------------------------------------------------------- gated weights, loss, gradient coefficients
  if (threadIdx.x == 0) {
    acc_t total = 0, wkl = 0;
    for (int k = 0; k < K; ++k) {
      if (t_w[k] != acc_t(0)) {
        total += t_w[k];
        wkl += t_w[k] * t_kl[k];
      }
    }
    const acc_t norm = p.renormalize ? (total > acc_t(0) ? acc_t(1) / total : acc_t(0)) : acc_t(1);
    p.loss[b] = p.tau * p.tau * norm * wkl;
    bool any = false;
    for (int k = 0; k < K; ++k) {
      t_w[k] = p.tau * norm * t_w[k] * t_iz[k];  // multiclass: times 1 / Zq since q = exp((t - m) / tau) / Zq
      any = any || t_w[k] != acc_t(0);
    }
    const acc_t cs = p.tau * norm * total / (ML ? acc_t(1) : row_stat[1]);
    row_stat[2] = cs;
    row_stat[3] = (any || cs != acc_t(0)) ? acc_t(1) : acc_t(0);
  }
  __syncthreads();

  // ---------------------------------------------------------------- sweep 2: grad = cs * p - sum_k coef_k * q_k
  const acc_t cs = row_stat[2];
  const bool any = row_stat[3] != acc_t(0);
  const acc_t m_s = ML ? acc_t(0) : row_stat[0];
  scalar_t* g_row = p.grad + b * C;
  // Backwards over the row: the packs sweep 1 read last (the likeliest to still be in L2) come first. Each thread
  // visits the same packs as in sweep 1, so the shared-memory row cache needs no synchronisation.
  const int tid = static_cast<int>(threadIdx.x), nthreads = static_cast<int>(blockDim.x);
  const int i_last = tid < nvec ? tid + (nvec - 1 - tid) / nthreads * nthreads : -1;
  for (int i = i_last; i >= 0; i -= nthreads) {
    const int64_t col = static_cast<int64_t>(i) * VEC;
    acc_t g[VEC];
    if (!any) {
#pragma unroll
      for (int v = 0; v < VEC; ++v) g[v] = acc_t(0);
    } else {
      const PackT sp = p.cache_rows ? load_pack<scalar_t, VEC>(cache + col) : load_pack<scalar_t, VEC>(s_row + col);
#pragma unroll
      for (int v = 0; v < VEC; ++v) {
        const acc_t s = static_cast<acc_t>(sp.v[v]);
        g[v] = cs * (ML ? sigmoid_tau(s, ek) : exp_k(s - m_s, ek.k_tau));
      }
      for (int g0 = 0; g0 < K; g0 += KG) {
        PackT tp[KG];
        acc_t ck[KG];
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          const int k = g0 + j;
          ck[j] = k < K ? t_w[k] : acc_t(0);
          if (ck[j] != acc_t(0)) {
            tp[j] = p.cache_rows ? load_pack<scalar_t, VEC>(cache + static_cast<int64_t>(k + 1) * C + col)
                                 : load_pack<scalar_t, VEC>(p.T + (static_cast<int64_t>(k) * B + b) * C + col);
          }
        }
#pragma unroll
        for (int j = 0; j < KG; ++j) {
          if (ck[j] != acc_t(0)) {
            const acc_t mk = t_m[g0 + j];
#pragma unroll
            for (int v = 0; v < VEC; ++v) {
              const acc_t t = static_cast<acc_t>(tp[j].v[v]);
              g[v] -= ck[j] * (ML ? sigmoid_tau(t, ek) : exp_k(t - mk, ek.k_tau));
            }
          }
        }
      }
    }
    PackT out;
#pragma unroll
    for (int v = 0; v < VEC; ++v) out.v[v] = static_cast<scalar_t>(g[v]);
    store_pack<scalar_t, VEC>(g_row + col, out);
  }
}

// ------------------------------------------------------------------------------------------------------------------
// Host side
// ------------------------------------------------------------------------------------------------------------------

bool aligned16(const void* ptr) {
  return reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
}

template <typename scalar_t, typename acc_t, int KG, int VEC>
void launch_kd(const KdArgs<scalar_t, acc_t>& args, bool multilabel, int threads, size_t smem, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(args.B));
  if (multilabel) {
    multi_teacher_kd_kernel<scalar_t, acc_t, KG, VEC, true><<<grid, threads, smem, stream>>>(args);
  } else {
    multi_teacher_kd_kernel<scalar_t, acc_t, KG, VEC, false><<<grid, threads, smem, stream>>>(args);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename acc_t, int VEC>
void launch_kd_groups(const KdArgs<scalar_t, acc_t>& args, bool multilabel, int threads, size_t smem,
                      cudaStream_t stream) {
  // Teachers per group: 8 for float inputs when K > 4, else 4. Double accumulators take twice the registers, and
  // 2-byte inputs unpack 8 values per 16-byte load: with 8 teachers both would exceed the 128 registers per thread
  // that 512-thread blocks allow (ptxas spills), so they use groups of 4 (K > 4 then re-reads only the student row
  // once per extra group; every teacher row is still read once per sweep).
  if constexpr (std::is_same_v<acc_t, double> || sizeof(scalar_t) == 2) {
    launch_kd<scalar_t, acc_t, 4, VEC>(args, multilabel, threads, smem, stream);
  } else {
    if (args.K <= 4) {
      launch_kd<scalar_t, acc_t, 4, VEC>(args, multilabel, threads, smem, stream);
    } else {
      launch_kd<scalar_t, acc_t, 8, VEC>(args, multilabel, threads, smem, stream);
    }
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> multi_teacher_kd_cuda(
    const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weights, double temperature,
    double gate_threshold, bool multilabel, bool renormalize) {
  check_kd_inputs(student, teacher, weights, temperature, "multi_teacher_kd (CUDA)");
  TORCH_CHECK(student.is_cuda(), "multi_teacher_kd (CUDA): tensors must be on a CUDA device");
  const c10::cuda::CUDAGuard guard(student.device());
  const int64_t K = teacher.size(0), B = student.size(0), C = student.size(1);
  TORCH_CHECK(K <= kMaxTeachers, "multi_teacher_kd (CUDA): at most ", kMaxTeachers, " teachers, got ", K);
  TORCH_CHECK(C <= std::numeric_limits<int32_t>::max(), "multi_teacher_kd (CUDA): C too large");
  TORCH_CHECK(B <= std::numeric_limits<int32_t>::max(), "multi_teacher_kd (CUDA): B too large");
  KdOutputs out(student, K);
  if (B == 0) return out.result();
  if (C == 0) {
    fill_empty_classes(out.loss, out.keep, out.entropy, multilabel, gate_threshold);
    return out.result();
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, student.scalar_type(), "multi_teacher_kd_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int VEC = 16 / sizeof(scalar_t);
    KdArgs<scalar_t, acc_t> args;
    args.S = student.const_data_ptr<scalar_t>();
    args.T = teacher.const_data_ptr<scalar_t>();
    args.W = weights.const_data_ptr<acc_t>();
    std::tie(args.w_sk, args.w_sb) = weight_strides(weights);
    args.loss = out.loss.mutable_data_ptr<acc_t>();
    args.keep = out.keep.mutable_data_ptr<bool>();
    args.entropy = out.entropy.mutable_data_ptr<acc_t>();
    args.grad = out.grad.mutable_data_ptr<scalar_t>();
    args.B = B;
    args.C = C;
    args.K = static_cast<int>(K);
    // exp multipliers: float kernels evaluate exp(y) as exp2(y * log2(e)), so log2(e) is folded in (in double).
    const double log2e = std::is_same_v<acc_t, float> ? 1.4426950408889634 : 1.0;
    args.ek.k_tau = static_cast<acc_t>(log2e / temperature);
    args.ek.k_one = static_cast<acc_t>(log2e);
    args.ek.pw = exp_power(temperature);
    args.tau = static_cast<acc_t>(temperature);
    args.inv_tau = static_cast<acc_t>(1.0 / temperature);
    args.chi = static_cast<acc_t>(gate_threshold);
    args.renormalize = renormalize;

    // 16-byte packs need every row start 16-byte aligned: C a multiple of VEC and aligned base pointers.
    const bool vec_ok = C % VEC == 0 && aligned16(args.S) && aligned16(args.T) && aligned16(args.grad);
    const int64_t units = vec_ok ? C / VEC : C;  // column packs per row
    int threads = 32;
    while (threads < kMaxThreads && threads * 4 < units) threads *= 2;  // >= 4 packs per thread before growing

    const int64_t per_teacher = (4 * K * static_cast<int64_t>(sizeof(acc_t)) + 15) / 16 * 16;
    const int64_t row_bytes = (K + 1) * C * static_cast<int64_t>(sizeof(scalar_t));
    args.cache_rows = per_teacher + row_bytes <= kRowCacheBytes;
    args.cache_offset = static_cast<int>(per_teacher);
    const size_t smem = static_cast<size_t>(per_teacher + (args.cache_rows ? row_bytes : 0));

    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    if (vec_ok) {
      launch_kd_groups<scalar_t, acc_t, VEC>(args, multilabel, threads, smem, stream);
    } else {
      launch_kd_groups<scalar_t, acc_t, 1>(args, multilabel, threads, smem, stream);
    }
  });
  return out.result();
}

}  // namespace

TORCH_LIBRARY_IMPL(compressor, CUDA, m) {
  m.impl("multi_teacher_kd", &multi_teacher_kd_cuda);
}

}  // namespace compressor
