// Posing without autograd (engine/binding.py's `slot_frames` + `place_activated` in one pass):
// per triangle of the posed mesh its frame (centroid c, rotation R with columns first edge,
// normal, edge x normal, scale s = mean edge length, and R's quaternion by Shepperd's method,
// w >= 0), then per slot x = R x_local s + c, q = q_f (x) q_local, scale = s_local s.
// The same formulas in the same order as the torch code, without its [N, 3, 3] gathers.
// float32 and float64.
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "native.h"

namespace {

template <typename S>
inline void normalize3(S v[3]) {
  const S n = std::max(std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), S(1e-12));
  v[0] /= n; v[1] /= n; v[2] /= n;
}

template <typename S>
inline void cross3(const S a[3], const S b[3], S out[3]) {
  out[0] = a[1] * b[2] - a[2] * b[1];
  out[1] = a[2] * b[0] - a[0] * b[2];
  out[2] = a[0] * b[1] - a[1] * b[0];
}

// Frame of one triangle: R row-major (R[3i + j] = column j's component i), q wxyz, c, s.
template <typename S>
void face_frame(const S* v0, const S* v1, const S* v2, S* R, S* q, S* c, S* s) {
  S a[3] = {v1[0] - v0[0], v1[1] - v0[1], v1[2] - v0[2]};
  S b[3] = {v2[0] - v0[0], v2[1] - v0[1], v2[2] - v0[2]};
  S e0[3] = {a[0], a[1], a[2]};
  normalize3(e0);
  S n[3];
  cross3(a, b, n);
  normalize3(n);
  S t[3];
  cross3(e0, n, t);
  for (int i = 0; i < 3; ++i) {
    R[3 * i] = e0[i]; R[3 * i + 1] = n[i]; R[3 * i + 2] = t[i];
    c[i] = (v0[i] + v1[i] + v2[i]) / 3;
  }
  auto len = [](S x, S y, S z) { return std::sqrt(x * x + y * y + z * z); };
  *s = (len(a[0], a[1], a[2]) + len(v2[0] - v1[0], v2[1] - v1[1], v2[2] - v1[2]) +
        len(v0[0] - v2[0], v0[1] - v2[1], v0[2] - v2[2])) / 3;
  const S m00 = R[0], m01 = R[1], m02 = R[2], m10 = R[3], m11 = R[4], m12 = R[5], m20 = R[6], m21 = R[7], m22 = R[8];
  const S tr = m00 + m11 + m22;
  const S diag[4] = {1 + tr, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22};
  int best = 0;
  for (int k = 1; k < 4; ++k)
    if (diag[k] > diag[best]) best = k;                 // the first maximum, as torch.argmax
  S cand[4];
  switch (best) {
    case 0: cand[0] = 1 + tr; cand[1] = m21 - m12; cand[2] = m02 - m20; cand[3] = m10 - m01; break;
    case 1: cand[0] = m21 - m12; cand[1] = 1 + m00 - m11 - m22; cand[2] = m01 + m10; cand[3] = m02 + m20; break;
    case 2: cand[0] = m02 - m20; cand[1] = m01 + m10; cand[2] = 1 - m00 + m11 - m22; cand[3] = m12 + m21; break;
    default: cand[0] = m10 - m01; cand[1] = m02 + m20; cand[2] = m12 + m21; cand[3] = 1 - m00 - m11 + m22; break;
  }
  const S norm = std::sqrt(cand[0] * cand[0] + cand[1] * cand[1] + cand[2] * cand[2] + cand[3] * cand[3]);
  const S sign = cand[0] / norm < 0 ? S(-1) : S(1);
  for (int k = 0; k < 4; ++k) q[k] = sign * (cand[k] / norm);
}

template <typename S>
void pose_impl(int64_t F, int64_t N, const S* verts, const int64_t* faces, const int64_t* slot_face,
               const S* xl, const S* ql, const S* sl, S* means, S* quats, S* scales, int nt) {
  std::vector<S> fr(static_cast<size_t>(F) * 17);     // R 9, q 4, c 3, s 1
#pragma omp parallel for schedule(static, 512) num_threads(nt)
  for (int64_t f = 0; f < F; ++f) {
    const int64_t* t = faces + 3 * f;
    S* o = fr.data() + 17 * f;
    face_frame(verts + 3 * t[0], verts + 3 * t[1], verts + 3 * t[2], o, o + 9, o + 13, o + 16);
  }
#pragma omp parallel for schedule(static, 2048) num_threads(nt)
  for (int64_t i = 0; i < N; ++i) {
    const S* o = fr.data() + 17 * slot_face[i];
    const S *R = o, *qf = o + 9, *c = o + 13, s = o[16];
    const S* x = xl + 3 * i;
    for (int r = 0; r < 3; ++r)
      means[3 * i + r] = (R[3 * r] * x[0] + R[3 * r + 1] * x[1] + R[3 * r + 2] * x[2]) * s + c[r];
    const S* b = ql + 4 * i;
    S* q = quats + 4 * i;
    q[0] = qf[0] * b[0] - qf[1] * b[1] - qf[2] * b[2] - qf[3] * b[3];
    q[1] = qf[0] * b[1] + qf[1] * b[0] + qf[2] * b[3] - qf[3] * b[2];
    q[2] = qf[0] * b[2] - qf[1] * b[3] + qf[2] * b[0] + qf[3] * b[1];
    q[3] = qf[0] * b[3] + qf[1] * b[2] - qf[2] * b[1] + qf[3] * b[0];
    for (int k = 0; k < 3; ++k) scales[3 * i + k] = sl[3 * i + k] * s;
  }
}

}  // namespace

std::vector<torch::Tensor> pose_slots(torch::Tensor verts, torch::Tensor faces, torch::Tensor slot_face,
                                      torch::Tensor local_position, torch::Tensor unit_quat, torch::Tensor rel_scale) {
  TORCH_CHECK(verts.dim() == 2 && verts.size(1) == 3, "pose: verts [V, 3]");
  TORCH_CHECK(faces.dim() == 2 && faces.size(1) == 3 && faces.scalar_type() == torch::kInt64, "pose: faces [F, 3] int64");
  const int64_t N = slot_face.size(0);
  TORCH_CHECK(slot_face.scalar_type() == torch::kInt64, "pose: slot faces int64");
  TORCH_CHECK(local_position.sizes() == torch::IntArrayRef({N, 3}) && unit_quat.sizes() == torch::IntArrayRef({N, 4}) &&
              rel_scale.sizes() == torch::IntArrayRef({N, 3}), "pose: per-slot [N, 3], [N, 4], [N, 3]");
  for (const auto& t : {verts, faces, slot_face, local_position, unit_quat, rel_scale})
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "pose: contiguous CPU tensors");
  for (const auto& t : {local_position, unit_quat, rel_scale})
    TORCH_CHECK(t.scalar_type() == verts.scalar_type(), "pose: mixed dtypes");
  auto means = torch::empty({N, 3}, verts.options());
  auto quats = torch::empty({N, 4}, verts.options());
  auto scales = torch::empty({N, 3}, verts.options());
  const int nt = std::max(1, at::get_num_threads());
  AT_DISPATCH_FLOATING_TYPES(verts.scalar_type(), "pose_slots", [&] {
    pose_impl<scalar_t>(faces.size(0), N, verts.data_ptr<scalar_t>(), faces.data_ptr<int64_t>(),
                        slot_face.data_ptr<int64_t>(), local_position.data_ptr<scalar_t>(),
                        unit_quat.data_ptr<scalar_t>(), rel_scale.data_ptr<scalar_t>(), means.data_ptr<scalar_t>(),
                        quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(), nt);
  });
  return {means, quats, scales};
}
