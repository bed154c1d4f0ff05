// CPU kernel of average_weights_: avg += (cur - avg) * w over a list of tensors, parallel over chunks.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <ATen/ATen.h>

namespace compressor {

void average_weights_cpu(at::TensorList averaged, at::TensorList current, const at::Tensor& weight) {
  TORCH_CHECK(averaged.size() == current.size(), "average_weights_: list lengths differ");
  const float w = weight.item<float>();
  for (size_t i = 0; i < averaged.size(); ++i) {
    at::Tensor a = averaged[i];
    const at::Tensor& c = current[i];
    TORCH_CHECK(a.sizes() == c.sizes() && a.scalar_type() == c.scalar_type(), "average_weights_: tensor ", i,
                " differs in shape or dtype");
    if (!at::isFloatingType(a.scalar_type())) {
      a.copy_(c);
      continue;
    }
    a.lerp_(c, w);
  }
}

TORCH_LIBRARY_IMPL(compressor, CPU, m) { m.impl("average_weights_", &average_weights_cpu); }

}  // namespace compressor
