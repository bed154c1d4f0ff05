// Schemas of the compressor ops (the contract is in compressor/reference.py and DESIGN.md).
// Kernels are registered per backend in csrc/cpu/*.cpp and csrc/cuda/*.cu; fake (meta) and autograd
// registrations live in Python (compressor/op_registration.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Importing compressor._C loads this library, whose static initialisers register the ops below.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(compressor, m) {
  // Returns (loss[B] acc, keep[K,B] bool, entropy[K,B] acc, grad[B,C] student dtype); grad is d loss[b] / d S[b,:]
  // written during the forward, scaled by the incoming gradient in the backward. weights is [K,B] in acc dtype.
  m.def(
      "multi_teacher_kd(Tensor student, Tensor teacher, Tensor weights, float temperature, float gate_threshold, "
      "bool multilabel, bool renormalize) -> (Tensor, Tensor, Tensor, Tensor)");
  // averaged[i] += (current[i] - averaged[i]) * weight for floating tensors, copy for integer ones; weight is a
  // 0-d float32 or float64 tensor on the tensors' device (read there: no host synchronisation), or on the CPU.
  m.def("average_weights_(Tensor(a!)[] averaged, Tensor[] current, Tensor weight) -> ()");
}
