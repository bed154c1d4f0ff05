// CUDA kernel of average_weights_: averaged[i] += (current[i] - averaged[i]) * w, in place, over lists of tensors.
//
// Multi-tensor apply in ONE launch: the host builds a table {averaged ptr, current ptr, length, kind, first block} of
// every tensor and passes it BY VALUE as a __grid_constant__ kernel parameter (up to kTableSize = 1024 tensors in
// about 30 KB; kernel parameters may be up to 32764 bytes since CUDA 12.1 on Volta and newer, and CUDA 13 builds
// only target those). Block j finds its tensor by binary search over the first-block column and processes one chunk
// of kChunk elements with 16-byte vector accesses when both pointers are 16-byte aligned (scalar otherwise).
// Lists longer than kTableSize are split into several launches of kTableSize tensors.
//
// Kinds: float32 / float64 computed in their own dtype, bfloat16 / float16 in float32 with round-to-nearest-even
// stores (the reference's a.to(fp32) + (c.to(fp32) - a) * w; the _rn intrinsics keep nvcc from contracting the
// multiply-add into an FMA, so the result is bit-identical to PyTorch's separate kernels), complex tensors through
// their real view, integer / bool tensors copied byte-wise in the same launch.
//
// No host synchronisation: the weight is a device tensor read by the kernel (never .item()); a CPU weight tensor is
// read on the host, which needs no device sync either. Non-contiguous `current` tensors are made contiguous and
// non-contiguous `averaged` tensors and floating types without a kernel path (float8) take the ATen fallback of
// kd_common.h, both asynchronous on the current stream.
// CUDA-graph capture: the launch has no host-side dependence on device data and its table travels inside the kernel
// node's parameters, so capture and replay work; a replay updates the same tensors and reads the weight tensor's
// current value (a weight given as a CPU tensor is baked in at capture time instead).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <cstdint>
#include <vector>

#include "../kd_common.h"

namespace compressor {
namespace {

constexpr int kTableSize = 1024;
constexpr int kThreads = 256;
constexpr int64_t kChunk = 16384;  // elements (bytes for copies) per block; a multiple of every vector width

struct AvgTable {
  void* avg[kTableSize];
  const void* cur[kTableSize];
  int64_t numel[kTableSize];            // elements (bytes for AvgKind::kCopy)
  int32_t block_start[kTableSize + 1];  // first block of each tensor; block_start[count] = total blocks
  uint8_t kind[kTableSize];
  int32_t count;
};
static_assert(sizeof(AvgTable) <= 32764, "kernel parameter table exceeds the 32764-byte limit");

struct Weight {
  const float* f;   // device weight, float32 (or nullptr)
  const double* d;  // device weight, float64 (or nullptr)
  double host;      // used when both pointers are null (weight given as a CPU tensor)
};

template <typename T>
struct alignas(16) Vec16 {
  T v[16 / sizeof(T)];
};

// a + (c - a) * w with each operation rounded separately (no FMA contraction).
__device__ __forceinline__ float lerp_rn(float a, float c, float w) {
  return __fadd_rn(a, __fmul_rn(__fsub_rn(c, a), w));
}
__device__ __forceinline__ double lerp_rn(double a, double c, double w) {
  return __dadd_rn(a, __dmul_rn(__dsub_rn(c, a), w));
}

template <typename T, typename acc_t>
__device__ __forceinline__ T lerp_elem(T a, T c, acc_t w) {
  return static_cast<T>(lerp_rn(static_cast<acc_t>(a), static_cast<acc_t>(c), w));
}

// One chunk [0, n) of a tensor; a and c point at the chunk start (16-byte aligned iff the tensor's base is).
template <typename T, typename acc_t>
__device__ void lerp_chunk(T* __restrict__ a, const T* __restrict__ c, int64_t n, acc_t w) {
  constexpr int V = 16 / sizeof(T);
  int64_t start = 0;
  if (((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(c)) & 15) == 0) {
    const int64_t nv = n / V;
    for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
      Vec16<T> va = reinterpret_cast<const Vec16<T>*>(a)[i];
      const Vec16<T> vc = reinterpret_cast<const Vec16<T>*>(c)[i];
#pragma unroll
      for (int e = 0; e < V; ++e) va.v[e] = lerp_elem<T, acc_t>(va.v[e], vc.v[e], w);
      reinterpret_cast<Vec16<T>*>(a)[i] = va;
    }
    start = nv * V;
  }
  for (int64_t i = start + threadIdx.x; i < n; i += blockDim.x) a[i] = lerp_elem<T, acc_t>(a[i], c[i], w);
}

__device__ void copy_chunk(uint8_t* __restrict__ a, const uint8_t* __restrict__ c, int64_t n) {
  int64_t start = 0;
  if (((reinterpret_cast<uintptr_t>(a) | reinterpret_cast<uintptr_t>(c)) & 15) == 0) {
    const int64_t nv = n / 16;
    for (int64_t i = threadIdx.x; i < nv; i += blockDim.x) {
      reinterpret_cast<uint4*>(a)[i] = reinterpret_cast<const uint4*>(c)[i];
    }
    start = nv * 16;
  }
  for (int64_t i = start + threadIdx.x; i < n; i += blockDim.x) a[i] = c[i];
}

__global__ void __launch_bounds__(kThreads) average_weights_kernel(const __grid_constant__ AvgTable table,
                                                                   const Weight weight) {
  // Tensor of this block: the last t with block_start[t] <= blockIdx.x (binary search over the parameter table).
  const int32_t blk = static_cast<int32_t>(blockIdx.x);
  int lo = 0, hi = table.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (table.block_start[mid] <= blk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  const int t = lo;
  const int64_t offset = static_cast<int64_t>(blk - table.block_start[t]) * kChunk;
  const int64_t n = min(kChunk, table.numel[t] - offset);
  const double wd = weight.d != nullptr ? *weight.d : (weight.f != nullptr ? static_cast<double>(*weight.f)
                                                                           : weight.host);
  const float wf = static_cast<float>(wd);  // float32 tensors use the weight rounded to float32
  switch (static_cast<AvgKind>(table.kind[t])) {
    case AvgKind::kFloat:
      lerp_chunk<float, float>(static_cast<float*>(table.avg[t]) + offset,
                               static_cast<const float*>(table.cur[t]) + offset, n, wf);
      break;
    case AvgKind::kDouble:
      lerp_chunk<double, double>(static_cast<double*>(table.avg[t]) + offset,
                                 static_cast<const double*>(table.cur[t]) + offset, n, wd);
      break;
    case AvgKind::kBFloat16:
      lerp_chunk<c10::BFloat16, float>(static_cast<c10::BFloat16*>(table.avg[t]) + offset,
                                       static_cast<const c10::BFloat16*>(table.cur[t]) + offset, n, wf);
      break;
    case AvgKind::kHalf:
      lerp_chunk<c10::Half, float>(static_cast<c10::Half*>(table.avg[t]) + offset,
                                   static_cast<const c10::Half*>(table.cur[t]) + offset, n, wf);
      break;
    default:
      copy_chunk(static_cast<uint8_t*>(table.avg[t]) + offset, static_cast<const uint8_t*>(table.cur[t]) + offset,
                 n);
  }
}

void launch_table(AvgTable& table, int64_t total_blocks, const Weight& weight, cudaStream_t stream) {
  if (table.count == 0) return;
  TORCH_CHECK(total_blocks <= std::numeric_limits<int32_t>::max(), "average_weights_ (CUDA): too many elements");
  table.block_start[table.count] = static_cast<int32_t>(total_blocks);
  average_weights_kernel<<<static_cast<unsigned>(total_blocks), kThreads, 0, stream>>>(table, weight);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  table.count = 0;
}

void average_weights_cuda(at::TensorList averaged, at::TensorList current, const at::Tensor& weight) {
  check_average_inputs(averaged, current, weight, "average_weights_ (CUDA)");
  if (averaged.empty()) return;
  const at::Device device = averaged[0].device();
  TORCH_CHECK(device.is_cuda(), "average_weights_ (CUDA): tensors must be on a CUDA device, got ", device);
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  // The weight stays on the device (read by the kernel); a CPU weight is read here (no device synchronisation).
  Weight w{nullptr, nullptr, 0.0};
  at::Tensor w_dev;
  if (weight.is_cuda()) {
    TORCH_CHECK(weight.device() == device, "average_weights_ (CUDA): weight on ", weight.device(),
                " but tensors on ", device);
    w_dev = weight.scalar_type() == at::kDouble ? weight.reshape({}).contiguous()
                                                : weight.reshape({}).to(at::kFloat).contiguous();
    if (w_dev.scalar_type() == at::kDouble) {
      w.d = w_dev.const_data_ptr<double>();
    } else {
      w.f = w_dev.const_data_ptr<float>();
    }
  } else {
    TORCH_CHECK(weight.device().is_cpu(), "average_weights_ (CUDA): weight must be on ", device, " or the CPU");
    w.host = weight.to(at::kDouble).item<double>();
  }

  static_assert(kChunk % 16 == 0, "chunks must keep 16-byte alignment");
  AvgTable table;
  table.count = 0;
  int64_t blocks = 0;
  std::vector<at::Tensor> keep_alive;  // contiguous copies of strided `current` tensors, until the launch is queued
  for (size_t i = 0; i < averaged.size(); ++i) {
    at::Tensor a = averaged[i];
    at::Tensor c = current[i];
    TORCH_CHECK(a.device() == device, "average_weights_ (CUDA): tensor ", i, " on ", a.device());
    if (a.numel() == 0) continue;
    if (a.is_complex()) {  // the update is linear: average real and imaginary parts
      a = at::view_as_real(a);
      c = at::view_as_real(c);
    }
    const AvgKind kind = avg_kind_of(a.scalar_type());
    if (!a.is_contiguous() || kind == AvgKind::kFallback) {  // ATen ops on the current stream
      average_fallback(a, c, weight.is_cuda() ? w_dev : weight);  // a CPU weight is a scalar operand
      continue;
    }
    const bool floating = kind != AvgKind::kCopy;
    if (!c.is_contiguous()) {
      c = c.contiguous();
      keep_alive.push_back(c);
    }
    const int64_t n = floating ? a.numel() : a.numel() * static_cast<int64_t>(a.element_size());
    if (table.count == kTableSize) {
      launch_table(table, blocks, w, stream);
      blocks = 0;
    }
    const int idx = table.count++;
    table.avg[idx] = a.data_ptr();
    table.cur[idx] = c.const_data_ptr();
    table.numel[idx] = n;
    table.kind[idx] = static_cast<uint8_t>(kind);
    table.block_start[idx] = static_cast<int32_t>(blocks);
    blocks += (n + kChunk - 1) / kChunk;
    TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "average_weights_ (CUDA): too many elements");
  }
  launch_table(table, blocks, w, stream);
}

}  // namespace

TORCH_LIBRARY_IMPL(compressor, CUDA, m) {
  m.impl("average_weights_", &average_weights_cuda);
}

}  // namespace compressor
