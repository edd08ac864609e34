// The extension's Python module. The GIL is released so work on a worker thread (a render,
// a refine step) leaves the UI thread running.
#include "native.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  const auto nogil = py::call_guard<py::gil_scoped_release>();
  m.def("forward", &forward, "Project, bin and composite Gaussians (CPU)", nogil);
  m.def("backward", &backward, "Gradients of the native forward pass (CPU)", nogil);
  m.def("residual_forward", &residual_forward, "W SiLU((1 + gamma) f_n + beta) + b for every row f_n of f", nogil);
  m.def("pose_slots", &pose_slots, "World-space means, quats and scales of slots on a posed mesh (no autograd)", nogil);
  m.def("residual_backward", &residual_backward, "Gradients of residual_forward (f, 1 + gamma, beta, W, b)", nogil);
}
