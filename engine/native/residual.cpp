// The expression residual's per-slot map (engine/residual.py), forward and backward:
//
//   s_n = SiLU(g1 ⊙ f_n + beta),   delta_n = W s_n + b        (g1 = 1 + gamma; f [N, C], W [O, C])
//
// Forward: the modulated activation in one pass, then the read-out as one BLAS product.
// Backward: one pass over the slots that recomputes s_n instead of keeping it, and gives
// dL/df_n directly (W^T dL/ddelta_n, times SiLU', times g1) while summing the shared weights'
// gradients in per-thread accumulators. In torch the same is a multiply, an add and a SiLU
// forward, and two matrix products, a SiLU backward, two multiplies and three reductions
// backward, each a pass over [N, C]. float32 and float64.
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <vector>

#include "fastmath.h"
#include "native.h"

namespace {

constexpr int64_t MAX_C = 256;   // features per slot held on the stack in the backward

void check(const torch::Tensor& f, const torch::Tensor& g1, const torch::Tensor& beta, const torch::Tensor& W) {
  TORCH_CHECK(f.dim() == 2 && g1.dim() == 1 && beta.dim() == 1 && W.dim() == 2,
              "residual: features [N, C], gamma and beta [C], weight [O, C]");
  const int64_t C = f.size(1);
  TORCH_CHECK(C <= MAX_C, "residual: at most ", MAX_C, " features per slot");
  TORCH_CHECK(g1.size(0) == C && beta.size(0) == C && W.size(1) == C, "residual: sizes do not match the features");
  for (const auto& t : {f, g1, beta, W}) {
    TORCH_CHECK(t.device().is_cpu() && t.is_contiguous(), "residual: tensors must be contiguous CPU tensors");
    TORCH_CHECK(t.scalar_type() == f.scalar_type(), "residual: mixed dtypes");
  }
}

template <typename S>
void activation(int64_t N, int64_t C, const S* __restrict f, const S* __restrict g1, const S* __restrict beta,
                S* __restrict s, int nt) {
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t n = 0; n < N; ++n) {
    const S* __restrict fn = f + n * C;
    S* __restrict sn = s + n * C;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
      const S h = fn[c] * g1[c] + beta[c];
      sn[c] = h * fsigmoid(h);
    }
  }
}

// gd: dL/ddelta [N, O]. Writes dL/df [N, C] and the sums over slots dL/dg1, dL/dbeta [C],
// dL/dW [O, C], dL/db [O].
template <typename S>
void backward_pass(int64_t N, int64_t C, int64_t O, const S* __restrict f, const S* __restrict g1,
                   const S* __restrict beta, const S* __restrict W, const S* __restrict gd, S* __restrict gf,
                   S* __restrict out_g1, S* __restrict out_beta, S* __restrict out_W, S* __restrict out_b, int nt) {
  const int64_t A = 2 * C + O * C + O;   // accumulators per thread: g1, beta, W, b
  std::vector<S> acc(size_t(nt) * A, S(0));
#pragma omp parallel num_threads(nt)
  {
    S* __restrict a_g1 = acc.data() + size_t(omp_get_thread_num()) * A;
    S* __restrict a_beta = a_g1 + C;
    S* __restrict a_W = a_g1 + 2 * C;
    S* __restrict a_b = a_W + O * C;
    S s[MAX_C], ds[MAX_C], gs[MAX_C];
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; ++n) {
      const S* __restrict fn = f + n * C;
      const S* __restrict gdn = gd + n * O;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const S h = fn[c] * g1[c] + beta[c];
        const S sg = fsigmoid(h);
        s[c] = h * sg;
        ds[c] = sg * (S(1) + h * (S(1) - sg));   // SiLU'(h) = σ(h)(1 + h(1 − σ(h)))
        gs[c] = S(0);
      }
      for (int64_t o = 0; o < O; ++o) {
        const S g = gdn[o];
        const S* __restrict w = W + o * C;
        S* __restrict aw = a_W + o * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
          gs[c] += g * w[c];
          aw[c] += g * s[c];
        }
        a_b[o] += g;
      }
      S* __restrict gfn = gf + n * C;
#pragma omp simd
      for (int64_t c = 0; c < C; ++c) {
        const S gh = gs[c] * ds[c];
        gfn[c] = gh * g1[c];
        a_g1[c] += gh * fn[c];
        a_beta[c] += gh;
      }
    }
  }
  std::fill(out_g1, out_g1 + C, S(0));
  std::fill(out_beta, out_beta + C, S(0));
  std::fill(out_W, out_W + O * C, S(0));
  std::fill(out_b, out_b + O, S(0));
  for (int t = 0; t < nt; ++t) {
    const S* a = acc.data() + size_t(t) * A;
    for (int64_t c = 0; c < C; ++c) {
      out_g1[c] += a[c];
      out_beta[c] += a[C + c];
    }
    for (int64_t k = 0; k < O * C; ++k) out_W[k] += a[2 * C + k];
    for (int64_t o = 0; o < O; ++o) out_b[o] += a[2 * C + O * C + o];
  }
}

}  // namespace

torch::Tensor residual_forward(torch::Tensor f, torch::Tensor g1, torch::Tensor beta, torch::Tensor W,
                               torch::Tensor b) {
  check(f, g1, beta, W);
  TORCH_CHECK(b.dim() == 1 && b.size(0) == W.size(0) && b.scalar_type() == f.scalar_type(), "residual: bias [O]");
  const int nt = std::max(1, at::get_num_threads());
  auto s = torch::empty_like(f);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "residual_forward", [&] {
    activation<scalar_t>(f.size(0), f.size(1), f.data_ptr<scalar_t>(), g1.data_ptr<scalar_t>(),
                         beta.data_ptr<scalar_t>(), s.data_ptr<scalar_t>(), nt);
  });
  return torch::addmm(b, s, W.t());
}

std::vector<torch::Tensor> residual_backward(torch::Tensor f, torch::Tensor g1, torch::Tensor beta, torch::Tensor W,
                                             torch::Tensor grad) {
  check(f, g1, beta, W);
  const int64_t N = f.size(0), C = f.size(1), O = W.size(0);
  TORCH_CHECK(grad.dim() == 2 && grad.size(0) == N && grad.size(1) == O && grad.is_contiguous() &&
              grad.scalar_type() == f.scalar_type(), "residual: grad must be a contiguous [N, O] tensor");
  const int nt = std::max(1, at::get_num_threads());
  auto gf = torch::empty_like(f), gg1 = torch::empty_like(g1), gbeta = torch::empty_like(beta);
  auto gW = torch::empty_like(W), gb = torch::empty({O}, f.options());
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "residual_backward", [&] {
    backward_pass<scalar_t>(N, C, O, f.data_ptr<scalar_t>(), g1.data_ptr<scalar_t>(), beta.data_ptr<scalar_t>(),
                            W.data_ptr<scalar_t>(), grad.data_ptr<scalar_t>(), gf.data_ptr<scalar_t>(),
                            gg1.data_ptr<scalar_t>(), gbeta.data_ptr<scalar_t>(), gW.data_ptr<scalar_t>(),
                            gb.data_ptr<scalar_t>(), nt);
  });
  return {gf, gg1, gbeta, gW, gb};
}
