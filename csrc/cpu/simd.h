// Portable SIMD helpers for the CPU kernels, written with GCC/Clang vector extensions (16/32/64-byte vectors).
//
// Why not at::vec::Vectorized: an extension is compiled once, without PyTorch's per-ISA builds, so Vectorized<float>
// would fall back to its scalar emulation (std::exp per lane). Here every helper is a plain always-inline function over
// W-byte vector types; the kernels instantiate their row loop inside wrapper functions carrying
// __attribute__((target("avx2,fma,..."))) / target("avx512f,...") and pick one at run time (see cpu_isa() below), so
// the same source becomes AVX-512, AVX2 or SSE2 code without -march flags. Only code inlined into a targeted wrapper
// is compiled for that ISA; everything out of line (ATen, c10) stays baseline, so there is no ODR hazard.
//
// Math: exp (Cephes expf: range reduction by ln2 and a degree-5 polynomial, ~1 ulp) and log1p on [0, 1] (Cephes logf
// polynomial) for float; double lanes call libm per lane (float64 is the exactness path, not the fast one).
// bf16 / fp16 loads and stores convert with the same bit patterns as c10::BFloat16 / c10::Half (round to nearest even).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

#define CMP_INLINE inline __attribute__((always_inline))

namespace compressor::simd {

// Vector types of W bytes (16: SSE2 / NEON, 32: AVX2, 64: AVX-512): each ISA gets its native width, since GCC lowers
// wider generic vectors' compares and selects lane by lane.
template <int W>
struct VT {
  typedef float f __attribute__((vector_size(W)));
  typedef double d __attribute__((vector_size(W)));
  typedef int32_t i32 __attribute__((vector_size(W)));
  typedef uint32_t u32 __attribute__((vector_size(W)));
  typedef int64_t i64 __attribute__((vector_size(W)));
  typedef uint16_t u16 __attribute__((vector_size(W / 2)));  // bf16 / fp16 bit patterns, one per float lane
};

// Vector type, lane count and mask type per accumulation type and width.
template <typename acc_t, int W>
struct Vec;
template <int W>
struct Vec<float, W> {
  using type = typename VT<W>::f;
  using mask = typename VT<W>::i32;
  static constexpr int N = W / 4;
};
template <int W>
struct Vec<double, W> {
  using type = typename VT<W>::d;
  using mask = typename VT<W>::i64;
  static constexpr int N = W / 8;
};

template <typename V, typename S>
CMP_INLINE V splat(S s) {
  V v = {};
  return v + s;
}

// Lane i < n is true.
template <typename acc_t, int W>
CMP_INLINE typename Vec<acc_t, W>::mask lanes_below(int n) {
  using M = typename Vec<acc_t, W>::mask;
  M idx = {};
  for (int i = 0; i < Vec<acc_t, W>::N; ++i) idx[i] = i;
  return idx < (idx - idx + n);
}

template <typename V>
CMP_INLINE V vmax(V a, V b) {
  return a > b ? a : b;
}

template <typename V>
CMP_INLINE V vabs(V a) {
  return a < 0 ? -a : a;
}

template <int N, typename V>
CMP_INLINE auto hsum(V v) {
  // Pairwise tree over the lanes.
  using S = std::remove_cv_t<std::remove_reference_t<decltype(v[0])>>;
  S a[N];
  for (int i = 0; i < N; ++i) a[i] = v[i];
  for (int w = N / 2; w >= 1; w /= 2)
    for (int i = 0; i < w; ++i) a[i] = a[i] + a[i + w];
  return a[0];
}
template <int N, typename V>
CMP_INLINE auto hmax(V v) {
  auto m = v[0];
  for (int i = 1; i < N; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

// ---------------------------------------------------------------------------------------------------------------
// exp and log1p
// ---------------------------------------------------------------------------------------------------------------

template <typename V>
using lane_t = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>;
template <typename V>
constexpr int lanes_of = static_cast<int>(sizeof(V) / sizeof(lane_t<V>));

// exp(x) for x <= 0 (every exponential of the kernels has a max-subtracted or -|.| argument). Float lanes: Cephes
// expf's range reduction and degree-5 polynomial (~1 ulp), the polynomial evaluated in Estrin form (shorter
// dependency chains), n = round(x log2 e) by the 1.5 * 2^23 trick (no conversions); x < -87.3, where the result
// would be denormal, gives 0, and NaN propagates. Double lanes: libm per lane.
template <typename V>
CMP_INLINE V vexp(V x) {
  if constexpr (std::is_same_v<lane_t<V>, float>) {
    using I = typename VT<sizeof(V)>::i32;
    const auto tiny = x < -87.3f;
    const V t = x * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23 + n: the integer lands in the low mantissa
    const V fn = t - 12582912.0f;
    const I n = (I)t - 0x4B400000;  // bits of 1.5 * 2^23
    V r = x - fn * 0.693359375f;
    r = r - fn * -2.12194440e-4f;
    const V r2 = r * r;
    const V a = r * 1.9875691500e-4f + 1.3981999507e-3f;
    const V b = r * 8.3334519073e-3f + 4.1665795894e-2f;
    const V c = r * 1.6666665459e-1f + 5.0000001201e-1f;
    const V poly = (a * r2 + b) * r2 + c;
    const V y = (poly * r2 + r + 1.0f) * (V)((n + 127) << 23);
    return tiny ? splat<V>(0.0f) : y;
  } else {
    for (int i = 0; i < lanes_of<V>; ++i) x[i] = std::exp(x[i]);
    return x;
  }
}

// log(1 + f) + k * log(2) for f in [sqrt(1/2) - 1, sqrt(2) - 1] and k a float vector of integers: Cephes logf's
// polynomial on the reduced argument, with log(2) split in two parts (float lanes only).
template <typename V>
CMP_INLINE V log_reduced(V f, V kf) {
  const V z = f * f;
  V y = splat<V>(7.0376836292e-2f);
  y = y * f - 1.1514610310e-1f;
  y = y * f + 1.1676998740e-1f;
  y = y * f - 1.2420140846e-1f;
  y = y * f + 1.4249322787e-1f;
  y = y * f - 1.6668057665e-1f;
  y = y * f + 2.0000714765e-1f;
  y = y * f - 2.4999993993e-1f;
  y = y * f + 3.3333331174e-1f;
  y = y * f * z;
  y = y + kf * -2.12194440e-4f;
  y = y - z * 0.5f;
  return (f + y) + kf * 0.693359375f;
}

// log(1 + e) for e in [0, 1]. Float lanes: 1 + e < sqrt(2) gives f = e exactly (1 + e is never rounded); otherwise
// log(2 * (1 + f)) with f = (e - 1) / 2 in [-0.29, 0).
template <typename V>
CMP_INLINE V vlog1p01(V e) {
  if constexpr (std::is_same_v<lane_t<V>, float>) {
    const auto up = e > 0.41421356237f;
    return log_reduced(up ? (e - 1.0f) * 0.5f : e, up ? splat<V>(1.0f) : splat<V>(0.0f));
  } else {
    for (int i = 0; i < lanes_of<V>; ++i) e[i] = std::log1p(e[i]);
    return e;
  }
}

// log(x) for finite normal x > 0 (the kernels take it of softmax normalisers, which are >= 1). Float lanes: x = m 2^n
// with m in [sqrt(1/2), sqrt(2)), then log(1 + (m - 1)) + n log(2) (~1 ulp). Double lanes: libm per lane.
template <typename V>
CMP_INLINE V vlog(V x) {
  if constexpr (std::is_same_v<lane_t<V>, float>) {
    using I = typename VT<sizeof(V)>::i32;
    const I bits = (I)x;
    I n = (bits >> 23) - 127;
    V m = (V)((bits & 0x007fffff) | 0x3f800000);  // mantissa in [1, 2)
    const auto big = m > 1.41421356237f;
    m = big ? m * 0.5f : m;
    n = big ? n + 1 : n;
    return log_reduced(m - 1.0f, __builtin_convertvector(n, V));
  } else {
    for (int i = 0; i < lanes_of<V>; ++i) x[i] = std::log(x[i]);
    return x;
  }
}

// The two exponentials every teacher element needs, for x <= 0: e1 = exp(x / tau) (tempered) and e2 = exp(x)
// (temperature 1). PW, a template parameter so that the loops calling this are compiled once per case, is
// compressor::exp_power(tau) (kd_common.h) for tau in {1/2, 1, 2} and 0 otherwise (the CPU kernel sends tau = 1/4 and
// 4 to the two-exponential case, for fewer instantiations): when tau or 1/tau is 2 one exponential is the square of
// the other (PW = +-2), one exponential serves both when tau = 1 (PW = 1), two are needed otherwise (PW = 0).
template <int PW, typename V, typename acc_t>
CMP_INLINE void exp_pair(V x, acc_t inv_tau, V& e1, V& e2) {
  static_assert(PW == 0 || PW == 1 || PW == 2 || PW == -2, "exp_pair: PW must be 0, 1, 2 or -2");
  if constexpr (PW == 1) {
    e1 = e2 = vexp(x);
  } else if constexpr (PW == 2) {  // tau = 1/2: exp(2x) = exp(x)^2
    e2 = vexp(x);
    e1 = e2 * e2;
  } else if constexpr (PW == -2) {  // tau = 2: exp(x) = exp(x/2)^2
    e1 = vexp(x * inv_tau);
    e2 = e1 * e1;
  } else {
    e1 = vexp(x * inv_tau);
    e2 = vexp(x);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Loads (input dtype -> accumulation vector) and stores (accumulation vector -> output dtype)
// ---------------------------------------------------------------------------------------------------------------

template <int W>
CMP_INLINE typename VT<W>::f bf16_bits_to_float(typename VT<W>::u16 h) {
  using F = typename VT<W>::f;
  using U = typename VT<W>::u32;
  return (F)(__builtin_convertvector(h, U) << 16);
}

// IEEE half -> float, exact (normals, subnormals, inf, NaN).
template <int W>
CMP_INLINE typename VT<W>::f half_bits_to_float(typename VT<W>::u16 h) {
  using F = typename VT<W>::f;
  using U = typename VT<W>::u32;
  const U u = __builtin_convertvector(h, U);
  const U sign = (u & 0x8000u) << 16;
  const U em = u & 0x7fffu;
  const U shifted = em << 13;
  // Normals and subnormals: reinterpret with the exponent 112 too small, then rescale by 2^112 (exact).
  const F finite = (F)shifted * 0x1.0p112f;
  const U infnan = shifted + 0x70000000u;  // exponent field all ones, mantissa kept
  const U mag = (em >= 0x7c00u) ? infnan : (U)finite;
  return (F)(mag | sign);
}

// float -> bf16 bits, round to nearest even, NaN -> 0x7FC0 (c10::BFloat16's rule).
template <int W>
CMP_INLINE typename VT<W>::u16 float_to_bf16_bits(typename VT<W>::f f) {
  using U = typename VT<W>::u32;
  const U u = (U)f;
  const U rounded = (u + (((u >> 16) & 1u) + 0x7fffu)) >> 16;
  const U out = (f != f) ? splat<U>(0x7fc0u) : rounded;
  return __builtin_convertvector(out, typename VT<W>::u16);
}

// float -> IEEE half bits, round to nearest even (c10::detail::fp16_ieee_from_fp32_value, lane-wise).
template <int W>
CMP_INLINE typename VT<W>::u16 float_to_half_bits(typename VT<W>::f f) {
  using F = typename VT<W>::f;
  using U = typename VT<W>::u32;
  const U w = (U)f;
  const F absf = (F)(w & 0x7fffffffu);
  F base = (absf * 0x1.0p112f) * 0x1.0p-110f;
  const U shl1_w = w + w;
  const U sign = w & 0x80000000u;
  U bias = shl1_w & 0xff000000u;
  bias = bias < 0x71000000u ? splat<U>(0x71000000u) : bias;
  base = (F)((bias >> 1) + 0x07800000u) + base;
  const U bits = (U)base;
  const U exp_bits = (bits >> 13) & 0x00007c00u;
  const U mantissa_bits = bits & 0x00000fffu;
  const U nonsign = exp_bits + mantissa_bits;
  const U out = (sign >> 16) | (shl1_w > 0xff000000u ? splat<U>(0x7e00u) : nonsign);
  return __builtin_convertvector(out, typename VT<W>::u16);
}

// Load one full vector starting at p.
template <typename scalar_t, typename acc_t, int W>
CMP_INLINE typename Vec<acc_t, W>::type load(const scalar_t* p) {
  using V = typename Vec<acc_t, W>::type;
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  } else {
    static_assert(std::is_same_v<acc_t, float>, "low-precision inputs accumulate in float");
    typename VT<W>::u16 h;
    std::memcpy(&h, p, sizeof(h));
    if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
      return bf16_bits_to_float<W>(h);
    } else {
      static_assert(std::is_same_v<scalar_t, c10::Half>, "unsupported input dtype");
      return half_bits_to_float<W>(h);
    }
  }
}

// Load n < N lanes; the other lanes are set to pad.
template <typename scalar_t, typename acc_t, int W>
CMP_INLINE typename Vec<acc_t, W>::type load_partial(const scalar_t* p, int n, acc_t pad) {
  constexpr int N = Vec<acc_t, W>::N;
  scalar_t buf[N];
  for (int i = 0; i < n; ++i) buf[i] = p[i];
  for (int i = n; i < N; ++i) buf[i] = static_cast<scalar_t>(0);
  auto v = load<scalar_t, acc_t, W>(buf);
  return lanes_below<acc_t, W>(n) ? v : splat<typename Vec<acc_t, W>::type>(pad);
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void store(scalar_t* p, typename Vec<acc_t, W>::type v) {
  if constexpr (std::is_same_v<scalar_t, acc_t>) {
    std::memcpy(p, &v, sizeof(v));
  } else if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    const auto h = float_to_bf16_bits<W>(v);
    std::memcpy(p, &h, sizeof(h));
  } else {
    static_assert(std::is_same_v<scalar_t, c10::Half>, "unsupported output dtype");
    const auto h = float_to_half_bits<W>(v);
    std::memcpy(p, &h, sizeof(h));
  }
}

template <typename scalar_t, typename acc_t, int W>
CMP_INLINE void store_partial(scalar_t* p, typename Vec<acc_t, W>::type v, int n) {
  scalar_t buf[Vec<acc_t, W>::N];
  store<scalar_t, acc_t, W>(buf, v);
  for (int i = 0; i < n; ++i) p[i] = buf[i];
}

// Scratch rows (accumulation dtype, 64-byte aligned, padded to whole vectors).
template <typename V, typename acc_t>
CMP_INLINE V ld(const acc_t* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename acc_t>
CMP_INLINE void st(acc_t* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// ---------------------------------------------------------------------------------------------------------------
// Run-time ISA choice
// ---------------------------------------------------------------------------------------------------------------

enum class Isa { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The best ISA of this CPU, capped by $COMPRESSOR_CPU_CAPABILITY or else $ATEN_CPU_CAPABILITY (default|avx2|avx512),
// read on every call so that tests can exercise each code path in one process.
inline Isa cpu_isa() {
  Isa best = Isa::kBaseline;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma")) {
    best = Isa::kAvx512;
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    best = Isa::kAvx2;
  }
#endif
  const char* env = std::getenv("COMPRESSOR_CPU_CAPABILITY");
  if (env == nullptr || *env == '\0') env = std::getenv("ATEN_CPU_CAPABILITY");
  if (env != nullptr && *env != '\0') {
    const std::string cap(env);
    Isa cap_isa = best;
    if (cap == "default") cap_isa = Isa::kBaseline;
    if (cap == "avx2") cap_isa = Isa::kAvx2;
    if (cap == "avx512") cap_isa = Isa::kAvx512;
    if (static_cast<int>(cap_isa) < static_cast<int>(best)) best = cap_isa;
  }
  return best;
}

}  // namespace compressor::simd

#if defined(__x86_64__) || defined(__i386__)
#define CMP_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define CMP_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define CMP_HAVE_X86_TARGETS 1
#else
#define CMP_HAVE_X86_TARGETS 0
#endif
