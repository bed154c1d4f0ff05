// Schemas of the compressor ops (the contract is in compressor/reference.py) and the autograd kernel of
// multi_teacher_kd. Kernels are registered per backend in csrc/cpu/*.cpp and csrc/cuda/*.cu; the fake (meta) kernels
// live in Python (compressor/op_registration.py).
//
// Autograd of multi_teacher_kd (CPU and CUDA alike; the formula of compressor/kd_autograd.py, which the Triton op
// uses): the forward kernels write grad[b, :] = d loss[b] / d S[b, :] during the forward (the op's fourth output), and
// the backward only scales those rows by the incoming gradient of loss. keep, entropy and the row gradient are not
// differentiable; teachers and weights get no gradient. It is registered in C++ rather than with
// torch.library.register_autograd because a Python autograd formula costs tens of microseconds per call in each
// direction (a Python context object, interpreter round trips), more than the kernel itself at the shapes of a
// classification task; torch.compile and opcheck see the same op either way (the kernel below redispatches to the
// backend kernel, or to the fake kernel when tracing).
#include <Python.h>
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <tuple>

extern "C" {
// Importing compressor._C loads this library, whose static initialisers register the ops below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(compressor, m) {
  // Returns (loss[B] acc, keep[K,B] bool, entropy[K,B] acc, grad[B,C] student dtype); grad is d loss[b] / d S[b,:]
  // written during the forward, scaled by the incoming gradient in the backward. weights is [K] or [K,B] in acc dtype.
  m.def(
      "multi_teacher_kd(Tensor student, Tensor teacher, Tensor weights, float temperature, float gate_threshold, "
      "bool multilabel, bool renormalize) -> (Tensor, Tensor, Tensor, Tensor)");
  // averaged[i] += (current[i] - averaged[i]) * weight for floating tensors, copy for integer ones; weight is a
  // 0-d float32 or float64 tensor on the tensors' device (read there: no host synchronisation), or on the CPU.
  m.def("average_weights_(Tensor(a!)[] averaged, Tensor[] current, Tensor weight) -> ()");
}

namespace compressor {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using KdResult = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

KdResult call_kd(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weights, double temperature,
                 double gate_threshold, bool multilabel, bool renormalize) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("compressor::multi_teacher_kd", "")
                             .typed<KdResult(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double,
                                             bool, bool)>();
  return op.call(student, teacher, weights, temperature, gate_threshold, multilabel, renormalize);
}

class MultiTeacherKd : public torch::autograd::Function<MultiTeacherKd> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& student, const at::Tensor& teacher,
                               const at::Tensor& weights, double temperature, double gate_threshold, bool multilabel,
                               bool renormalize) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, keep, entropy, row_grad] =
        call_kd(student, teacher, weights, temperature, gate_threshold, multilabel, renormalize);
    ctx->save_for_backward({row_grad});
    ctx->mark_non_differentiable({keep, entropy, row_grad});
    // Gradients of the non-differentiable outputs stay undefined: materialising them would allocate a [B, C] zero
    // tensor (for the row-gradient output) in every backward.
    ctx->set_materialize_grads(false);
    return {loss, keep, entropy, row_grad};
  }

  // d/dS sum_b g[b] loss[b] = g[b] d loss[b] / d S[b]: computed in the accumulation dtype and rounded once into a
  // tensor of the row gradient's dtype (no float32 [B, C] temporary for half-precision students).
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const at::Tensor row_grad = ctx->get_saved_variables()[0];
    const at::Tensor& grad_loss = grad_outputs[0];
    at::Tensor grad_student;
    if (ctx->needs_input_grad(0) && grad_loss.defined()) {
      grad_student = at::empty_like(row_grad);
      at::mul_out(grad_student, row_grad, grad_loss.unsqueeze(1));
    }
    return {grad_student, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

KdResult multi_teacher_kd_autograd(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& weights,
                                   double temperature, double gate_threshold, bool multilabel, bool renormalize) {
  const variable_list out =
      MultiTeacherKd::apply(student, teacher, weights, temperature, gate_threshold, multilabel, renormalize);
  return {out[0], out[1], out[2], out[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(compressor, Autograd, m) {
  m.impl("multi_teacher_kd", &multi_teacher_kd_autograd);
}

}  // namespace compressor
