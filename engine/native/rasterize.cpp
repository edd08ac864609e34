// Native CPU rasterizer for 3D Gaussian splatting: projection, binning, compositing and
// their backward passes, in one torch C++/OpenMP extension.
//
// Semantics are those of engine/render/reference.py (gsplat's): EWA projection with the
// clamped perspective Jacobian, eps2d low-pass, 3.33-sigma square footprint, pixel centres
// at (x + 0.5, y + 0.5), alpha = min(alpha_max, o exp(power)), alphas below alpha_min
// skipped, compositing stops before the Gaussian that would take T to <= T_min.
//
// Speed comes from (1) opacity-aware footprints: a Gaussian of opacity o can only reach
// alpha >= alpha_min inside the ellipse power >= ln(alpha_min / o), whose bounding box is
// often much smaller than the 3.33-sigma square -- it is used both for binning to tiles and
// for the pixel rows/columns visited inside a tile (identical results: the pixels skipped
// have alpha < alpha_min); (2) 16x16 tiles processed as rows of 8-pixel SIMD chunks with a
// branch-free, auto-vectorised body and a polynomial exp (no -ffast-math: NaN checks must
// keep working); (3) early exit of a tile once every pixel is saturated; (4) OpenMP over
// tiles (dynamic schedule) and over Gaussians for projection; (5) a stable LSD radix sort
// on depth instead of a comparison sort.
#include "native.h"
#include <ATen/Parallel.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "fastmath.h"

namespace {

constexpr int TS = 16;          // tile side (pixels); results do not depend on it
constexpr int NPIX = TS * TS;
constexpr int VW = 8;           // SIMD chunk width (pixels)
constexpr int NCH = TS / VW;    // chunks per tile row
constexpr int NP = 12;          // packed per-Gaussian values, see Packed below
constexpr int NG = 10;          // per-Gaussian gradient accumulators, see Grad below

// Packed layout (one row per Gaussian): mean2d x, y; conic A, B, C; opacity; colour r, g, b;
// camera z; pixel half-extent x, y of the alpha >= alpha_min ellipse (negative = culled).
enum Packed { PMX, PMY, PA, PB, PC, PO, PR, PG, PBL, PZ, PEX, PEY };
// Gradient layout: mean2d x, y; conic A, B, C; opacity; colour r, g, b; camera z.
enum Grad { GMX, GMY, GA, GB, GC, GO, GR, GG, GBL, GZ };

template <typename S>
struct Settings {
  S R[9], t[3], K[9];
  int W, H;
  S near_, far_, eps2d, alpha_min, alpha_max, t_min, extent;
};


template <typename S>
inline bool finite(S x) { return std::isfinite(x); }

// ---------------------------------------------------------------------------------------
// Projection of one Gaussian (forward). Returns false when it is culled.
template <typename S>
struct ProjInter {   // intermediates shared by forward and backward
  S qn[4], qnorm, Rq[9], M[9], Wc[9], mc[3], z, u, v, u_raw, v_raw, J00, J02, J11, J12, a, b, c, det;
};

template <typename S>
inline bool project_one(const S* m, const S* q, const S* s, const Settings<S>& st, ProjInter<S>& P) {
  const S* R = st.R;
  for (int i = 0; i < 3; ++i) P.mc[i] = R[3 * i] * m[0] + R[3 * i + 1] * m[1] + R[3 * i + 2] * m[2] + st.t[i];
  P.z = P.mc[2];
  if (!(P.z > st.near_ && P.z < st.far_)) return false;
  S n = std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  P.qnorm = n;
  S inv = S(1) / std::max(n, S(1e-12));
  for (int i = 0; i < 4; ++i) P.qn[i] = q[i] * inv;
  S w = P.qn[0], x = P.qn[1], y = P.qn[2], zq = P.qn[3];
  S* Rq = P.Rq;
  Rq[0] = 1 - 2 * (y * y + zq * zq); Rq[1] = 2 * (x * y - w * zq);     Rq[2] = 2 * (x * zq + w * y);
  Rq[3] = 2 * (x * y + w * zq);     Rq[4] = 1 - 2 * (x * x + zq * zq); Rq[5] = 2 * (y * zq - w * x);
  Rq[6] = 2 * (x * zq - w * y);     Rq[7] = 2 * (y * zq + w * x);     Rq[8] = 1 - 2 * (x * x + y * y);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) P.M[3 * i + j] = Rq[3 * i + j] * s[j];
  S Sig[9];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      Sig[3 * i + j] = P.M[3 * i] * P.M[3 * j] + P.M[3 * i + 1] * P.M[3 * j + 1] + P.M[3 * i + 2] * P.M[3 * j + 2];
  S T1[9];  // R Sig
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      T1[3 * i + j] = R[3 * i] * Sig[j] + R[3 * i + 1] * Sig[3 + j] + R[3 * i + 2] * Sig[6 + j];
  for (int i = 0; i < 3; ++i)  // (R Sig) R^T
    for (int j = 0; j < 3; ++j)
      P.Wc[3 * i + j] = T1[3 * i] * R[3 * j] + T1[3 * i + 1] * R[3 * j + 1] + T1[3 * i + 2] * R[3 * j + 2];
  const S fx = st.K[0], fy = st.K[4], cx = st.K[2], cy = st.K[5];
  const S tan_x = S(0.5) * st.W / fx, tan_y = S(0.5) * st.H / fy;
  const S z = P.z;
  P.u_raw = P.mc[0] / z;
  P.v_raw = P.mc[1] / z;
  const S ulo = -(cx / fx + S(0.3) * tan_x), uhi = (st.W - cx) / fx + S(0.3) * tan_x;
  const S vlo = -(cy / fy + S(0.3) * tan_y), vhi = (st.H - cy) / fy + S(0.3) * tan_y;
  P.u = std::min(std::max(P.u_raw, ulo), uhi);
  P.v = std::min(std::max(P.v_raw, vlo), vhi);
  P.J00 = fx / z; P.J02 = -fx * P.u / z; P.J11 = fy / z; P.J12 = -fy * P.v / z;
  const S* Wc = P.Wc;
  P.a = P.J00 * P.J00 * Wc[0] + 2 * P.J00 * P.J02 * Wc[2] + P.J02 * P.J02 * Wc[8] + st.eps2d;
  P.b = P.J00 * P.J11 * Wc[1] + P.J00 * P.J12 * Wc[2] + P.J02 * P.J11 * Wc[5] + P.J02 * P.J12 * Wc[8];
  P.c = P.J11 * P.J11 * Wc[4] + 2 * P.J11 * P.J12 * Wc[5] + P.J12 * P.J12 * Wc[8] + st.eps2d;
  P.det = P.a * P.c - P.b * P.b;
  return true;
}

// Forward projection of every Gaussian into `packed` [N, NP] (PEX < 0 marks culled ones)
// and its tile rectangle into `rect` [N, 4] (tx0, ty0, tx1, ty1).
template <typename S>
void project_all(int64_t N, const S* means, const S* quats, const S* scales, const S* opac, const S* colors,
                 const Settings<S>& st, S* packed, int32_t* rect, int nt) {
  const int tiles_x = (st.W + TS - 1) / TS, tiles_y = (st.H + TS - 1) / TS;
  const S log_amin = std::log(st.alpha_min);
#pragma omp parallel for schedule(static, 1024) num_threads(nt)
  for (int64_t i = 0; i < N; ++i) {
    S* out = packed + i * NP;
    int32_t* rc = rect + i * 4;
    out[PEX] = -1;
    rc[0] = 0; rc[1] = 0; rc[2] = -1; rc[3] = -1;
    ProjInter<S> P;
    if (!project_one(means + 3 * i, quats + 4 * i, scales + 3 * i, st, P)) continue;
    const S o = opac[i];
    const S* col = colors + 3 * i;
    if (!(P.det > 0) || !finite(P.det) || !finite(o) || !finite(col[0]) || !finite(col[1]) || !finite(col[2]))
      continue;
    const S* K = st.K;
    const S mx = (K[0] * P.mc[0] + K[1] * P.mc[1] + K[2] * P.mc[2]) / P.z;
    const S my = (K[3] * P.mc[0] + K[4] * P.mc[1] + K[5] * P.mc[2]) / P.z;
    const S A = P.c / P.det, B = -P.b / P.det, C = P.a / P.det;
    if (!finite(mx) || !finite(my) || !finite(A) || !finite(B) || !finite(C)) continue;
    const S r = std::ceil(st.extent * std::sqrt(std::max(std::max(P.a, P.c), S(0))));
    if (!(mx + r > 0 && mx - r < st.W && my + r > 0 && my - r < st.H)) continue;
    // alpha >= alpha_min needs power >= ln(alpha_min / o): an ellipse of half-extents
    // sqrt(2 ln(o / alpha_min) cov_xx), ... (bounded by the reference's square of radius r).
    const S tq = std::log(o) - log_amin;
    if (!(tq >= 0)) continue;   // o < alpha_min: never visible
    S ex = std::min(std::sqrt(2 * tq * P.a), r), ey = std::min(std::sqrt(2 * tq * P.c), r);
    ex = ex * S(1.0001) + S(1e-3);  // margin against rounding: extra pixels only cost time
    ey = ey * S(1.0001) + S(1e-3);
    // Pixel x is visited when its centre x + 0.5 lies in [mx - ex, mx + ex].
    const double fx0 = std::floor((double(mx) - ex - 0.5) / TS), fx1 = std::floor((double(mx) + ex - 0.5) / TS);
    const double fy0 = std::floor((double(my) - ey - 0.5) / TS), fy1 = std::floor((double(my) + ey - 0.5) / TS);
    const int tx0 = int(std::max(fx0, 0.0)), tx1 = int(std::min(fx1, double(tiles_x - 1)));
    const int ty0 = int(std::max(fy0, 0.0)), ty1 = int(std::min(fy1, double(tiles_y - 1)));
    if (tx0 > tx1 || ty0 > ty1) continue;
    out[PMX] = mx; out[PMY] = my; out[PA] = A; out[PB] = B; out[PC] = C; out[PO] = o;
    out[PR] = col[0]; out[PG] = col[1]; out[PBL] = col[2]; out[PZ] = P.z; out[PEX] = ex; out[PEY] = ey;
    rc[0] = tx0; rc[1] = ty0; rc[2] = tx1; rc[3] = ty1;
  }
}

// Stable LSD radix sort of the visible Gaussians by depth (ties keep index order, like
// torch.argsort(stable=True) in the reference).
template <typename S>
std::vector<int32_t> sort_by_depth(int64_t N, const S* packed) {
  std::vector<uint32_t> keys;
  std::vector<int32_t> ids;
  keys.reserve(N); ids.reserve(N);
  for (int64_t i = 0; i < N; ++i) {
    if (packed[i * NP + PEX] < 0) continue;
    float z = float(packed[i * NP + PZ]);
    uint32_t k;
    std::memcpy(&k, &z, 4);
    k = (k & 0x80000000u) ? ~k : (k | 0x80000000u);
    keys.push_back(k);
    ids.push_back(int32_t(i));
  }
  // float keys lose the ordering of doubles closer than 1 float ulp; break such ties exactly.
  const size_t n = ids.size();
  std::vector<uint32_t> k2(n);
  std::vector<int32_t> i2(n);
  for (int shift = 0; shift < 32; shift += 8) {
    size_t count[257] = {0};
    for (size_t j = 0; j < n; ++j) count[((keys[j] >> shift) & 255) + 1]++;
    for (int b = 0; b < 256; ++b) count[b + 1] += count[b];
    for (size_t j = 0; j < n; ++j) {
      size_t d = count[(keys[j] >> shift) & 255]++;
      k2[d] = keys[j];
      i2[d] = ids[j];
    }
    keys.swap(k2);
    ids.swap(i2);
  }
  if (sizeof(S) == 8) {  // double: refine runs of equal float keys with the exact depth
    size_t j = 0;
    while (j < n) {
      size_t e = j + 1;
      while (e < n && keys[e] == keys[j]) ++e;
      if (e - j > 1)
        std::stable_sort(ids.begin() + j, ids.begin() + e,
                         [&](int32_t p, int32_t q) { return packed[p * NP + PZ] < packed[q * NP + PZ]; });
      j = e;
    }
  }
  return ids;
}

// Per-tile lists of Gaussians, front to back: offsets [T + 1], ids [E].
template <typename S>
void bin_tiles(int64_t N, const S* packed, const int32_t* rect, int tiles_x, int tiles_y,
               torch::Tensor& offsets_t, torch::Tensor& ids_t) {
  const int ntiles = tiles_x * tiles_y;
  std::vector<int32_t> order = sort_by_depth<S>(N, packed);
  offsets_t = torch::zeros({ntiles + 1}, torch::kInt64);
  int64_t* off = offsets_t.data_ptr<int64_t>();
  for (int32_t g : order) {
    const int32_t* rc = rect + 4 * int64_t(g);
    for (int ty = rc[1]; ty <= rc[3]; ++ty)
      for (int tx = rc[0]; tx <= rc[2]; ++tx) off[ty * tiles_x + tx + 1]++;
  }
  for (int t = 0; t < ntiles; ++t) off[t + 1] += off[t];
  ids_t = torch::empty({off[ntiles]}, torch::kInt32);
  int32_t* ids = ids_t.data_ptr<int32_t>();
  std::vector<int64_t> cur(off, off + ntiles);
  for (int32_t g : order) {
    const int32_t* rc = rect + 4 * int64_t(g);
    for (int ty = rc[1]; ty <= rc[3]; ++ty)
      for (int tx = rc[0]; tx <= rc[2]; ++tx) ids[cur[ty * tiles_x + tx]++] = g;
  }
}

// Visible pixel rows/columns of Gaussian P inside the tile at (x0, y0): [r0, r1] x [c0, c1]
// in tile coordinates; false when empty.
template <typename S>
inline bool tile_bbox(const S* P, int x0, int y0, int& r0, int& r1, int& c0, int& c1) {
  const S ex = P[PEX], ey = P[PEY];
  const double lx = std::ceil(double(P[PMX]) - ex - 0.5) - x0, hx = std::floor(double(P[PMX]) + ex - 0.5) - x0;
  const double ly = std::ceil(double(P[PMY]) - ey - 0.5) - y0, hy = std::floor(double(P[PMY]) + ey - 0.5) - y0;
  c0 = int(std::max(lx, 0.0)); c1 = int(std::min(hx, double(TS - 1)));
  r0 = int(std::max(ly, 0.0)); r1 = int(std::min(hy, double(TS - 1)));
  return c0 <= c1 && r0 <= r1;
}

// ---------------------------------------------------------------------------------------
template <typename S>
void raster_forward(const Settings<S>& st, const S* packed, const int64_t* off, const int32_t* ids,
                    S* rgb, S* alpha, S* depth, S* tfinal, int32_t* last_out, int nt) {
  const int tiles_x = (st.W + TS - 1) / TS, tiles_y = (st.H + TS - 1) / TS;
  const int ntiles = tiles_x * tiles_y;
  const S amin = st.alpha_min, amax = st.alpha_max, tmin = st.t_min;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int tile = 0; tile < ntiles; ++tile) {
    const int x0 = (tile % tiles_x) * TS, y0 = (tile / tiles_x) * TS;
    alignas(64) S T[NPIX], cr[NPIX], cg[NPIX], cb[NPIX], cd[NPIX], ca[NPIX], done[NPIX];
    alignas(64) int32_t last[NPIX];
    int chunk_done[NPIX / VW] = {0};  // saturated pixels per chunk: full chunks are skipped
    int ndone = 0;
    for (int p = 0; p < NPIX; ++p) {
      const bool in = (x0 + p % TS) < st.W && (y0 + p / TS) < st.H;
      T[p] = 1; cr[p] = cg[p] = cb[p] = cd[p] = ca[p] = 0; last[p] = 0;
      done[p] = in ? 0 : 1;
      ndone += in ? 0 : 1;
      chunk_done[p / VW] += in ? 0 : 1;
    }
    const int64_t begin = off[tile], end = off[tile + 1];
    for (int64_t j = begin; j < end && ndone < NPIX; ++j) {
      const S* P = packed + int64_t(ids[j]) * NP;
      int r0, r1, c0, c1;
      if (!tile_bbox(P, x0, y0, r0, r1, c0, c1)) continue;
      const S mx = P[PMX], my = P[PMY], A = P[PA], B = P[PB], C = P[PC], o = P[PO];
      const S colr = P[PR], colg = P[PG], colb = P[PBL], z = P[PZ];
      const int32_t idx = int32_t(j - begin + 1);
      for (int r = r0; r <= r1; ++r) {
        const S dy = S(y0 + r) + S(0.5) - my;
        for (int ch = c0 / VW; ch <= c1 / VW; ++ch) {
          if (chunk_done[r * NCH + ch] == VW) continue;
          const int base = r * TS + ch * VW;
          const S xb = S(x0 + ch * VW) + S(0.5) - mx;
          int newly = 0;
#pragma omp simd reduction(+ : newly)
          for (int i = 0; i < VW; ++i) {
            const int p = base + i;
            const S dx = xb + S(i);
            const S power = S(-0.5) * (A * dx * dx + C * dy * dy) - B * dx * dy;
            S al = o * fexp(power);
            al = al < amax ? al : amax;
            const S Tp = T[p];
            const bool act = (al >= amin) & (done[p] == 0);
            const S nT = Tp * (1 - al);
            const bool stop = act & (nT <= tmin);
            const bool con = act & !stop;
            const S w = con ? al * Tp : S(0);
            cr[p] += w * colr; cg[p] += w * colg; cb[p] += w * colb; cd[p] += w * z; ca[p] += w;
            T[p] = con ? nT : Tp;
            done[p] = stop ? S(1) : done[p];
            last[p] = con ? idx : last[p];
            newly += stop ? 1 : 0;
          }
          chunk_done[r * NCH + ch] += newly;
          ndone += newly;
        }
      }
    }
    for (int p = 0; p < NPIX; ++p) {
      const int x = x0 + p % TS, y = y0 + p / TS;
      if (x >= st.W || y >= st.H) continue;
      const int64_t q = int64_t(y) * st.W + x;
      rgb[3 * q] = cr[p]; rgb[3 * q + 1] = cg[p]; rgb[3 * q + 2] = cb[p];
      alpha[q] = ca[p]; depth[q] = cd[p]; tfinal[q] = T[p]; last_out[q] = last[p];
    }
  }
}

template <typename S>
void raster_backward(const Settings<S>& st, const S* packed, const int64_t* off, const int32_t* ids,
                     const S* tfinal, const int32_t* last_in, const S* g_rgb, const S* g_alpha, const S* g_depth,
                     S* gbuf /* [nt, N, NG] */, int64_t N, int nt) {
  const int tiles_x = (st.W + TS - 1) / TS, tiles_y = (st.H + TS - 1) / TS;
  const int ntiles = tiles_x * tiles_y;
  const S amin = st.alpha_min, amax = st.alpha_max;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt)
  for (int tile = 0; tile < ntiles; ++tile) {
    S* buf = gbuf + int64_t(omp_get_thread_num()) * N * NG;
    const int x0 = (tile % tiles_x) * TS, y0 = (tile / tiles_x) * TS;
    alignas(64) S T[NPIX], Sr[NPIX], Sg[NPIX], Sb[NPIX], Sd[NPIX], Sa[NPIX];
    alignas(64) S gr[NPIX], gg[NPIX], gb[NPIX], ga[NPIX], gd[NPIX], lastf[NPIX];
    alignas(64) S acc[NG][VW];
    int chunk_last[NPIX / VW] = {0};  // chunks whose pixels all stopped before entry j are skipped
    int32_t maxlast = 0;
    for (int p = 0; p < NPIX; ++p) {
      const int x = x0 + p % TS, y = y0 + p / TS;
      Sr[p] = Sg[p] = Sb[p] = Sd[p] = Sa[p] = 0;
      if (x >= st.W || y >= st.H) {
        T[p] = 1; gr[p] = gg[p] = gb[p] = ga[p] = gd[p] = 0; lastf[p] = 0;
        continue;
      }
      const int64_t q = int64_t(y) * st.W + x;
      T[p] = tfinal[q];
      gr[p] = g_rgb[3 * q]; gg[p] = g_rgb[3 * q + 1]; gb[p] = g_rgb[3 * q + 2];
      ga[p] = g_alpha[q]; gd[p] = g_depth[q];
      lastf[p] = S(last_in[q]);
      maxlast = std::max(maxlast, last_in[q]);
      chunk_last[p / VW] = std::max(chunk_last[p / VW], last_in[q]);
    }
    const int64_t begin = off[tile];
    for (int64_t j = begin + maxlast - 1; j >= begin; --j) {
      const int32_t gid = ids[j];
      const S* P = packed + int64_t(gid) * NP;
      int r0, r1, c0, c1;
      if (!tile_bbox(P, x0, y0, r0, r1, c0, c1)) continue;
      const S mx = P[PMX], my = P[PMY], A = P[PA], B = P[PB], C = P[PC], o = P[PO];
      const S colr = P[PR], colg = P[PG], colb = P[PBL], z = P[PZ];
      const int32_t jl = int32_t(j - begin);
      const S local = S(jl);
      bool touched = false;
      for (int r = r0; r <= r1; ++r) {
        const S dy = S(y0 + r) + S(0.5) - my;
        for (int ch = c0 / VW; ch <= c1 / VW; ++ch) {
          if (jl >= chunk_last[r * NCH + ch]) continue;
          if (!touched) {
            std::memset(acc, 0, sizeof(acc));
            touched = true;
          }
          const int base = r * TS + ch * VW;
          const S xb = S(x0 + ch * VW) + S(0.5) - mx;
#pragma omp simd
          for (int i = 0; i < VW; ++i) {
            const int p = base + i;
            const S dx = xb + S(i);
            const S power = S(-0.5) * (A * dx * dx + C * dy * dy) - B * dx * dy;
            const S G = fexp(power);
            const S og = o * G;
            const S al = og < amax ? og : amax;
            const bool act = (local < lastf[p]) & (al >= amin);
            const S om = 1 - al;
            const S Tb = T[p] / om;
            const S w = al * Tb;
            const S gsum_here = colr * gr[p] + colg * gg[p] + colb * gb[p] + z * gd[p] + ga[p];
            const S gsum_behind = Sr[p] * gr[p] + Sg[p] * gg[p] + Sb[p] * gb[p] + Sd[p] * gd[p] + Sa[p] * ga[p];
            const S gal = Tb * gsum_here - gsum_behind / om;
            const S wa = act ? w : S(0);
            Sr[p] += wa * colr; Sg[p] += wa * colg; Sb[p] += wa * colb; Sd[p] += wa * z; Sa[p] += wa;
            T[p] = act ? Tb : T[p];
            acc[GR][i] += wa * gr[p]; acc[GG][i] += wa * gg[p]; acc[GBL][i] += wa * gb[p]; acc[GZ][i] += wa * gd[p];
            const bool pass = act & (og <= amax);
            const S gpow = pass ? gal * al : S(0);
            acc[GO][i] += pass ? gal * G : S(0);
            acc[GMX][i] += gpow * (A * dx + B * dy);
            acc[GMY][i] += gpow * (B * dx + C * dy);
            acc[GA][i] += S(-0.5) * gpow * dx * dx;
            acc[GB][i] -= gpow * dx * dy;
            acc[GC][i] += S(-0.5) * gpow * dy * dy;
          }
        }
      }
      if (!touched) continue;
      S* g = buf + int64_t(gid) * NG;
      for (int k = 0; k < NG; ++k) {
        S sum = 0;
        for (int i = 0; i < VW; ++i) sum += acc[k][i];
        g[k] += sum;
      }
    }
  }
}

// Backward of the projection: per-Gaussian grads of (mean2d, conic, depth) to means, quats, scales.
template <typename S>
void project_backward(int64_t N, const S* means, const S* quats, const S* scales, const S* packed,
                      const Settings<S>& st, const S* gbuf, int ntb, S* g_means, S* g_quats, S* g_scales,
                      S* g_opac, S* g_colors, int nt) {
#pragma omp parallel for schedule(static, 1024) num_threads(nt)
  for (int64_t i = 0; i < N; ++i) {
    S g[NG] = {0};
    for (int t = 0; t < ntb; ++t)
      for (int k = 0; k < NG; ++k) g[k] += gbuf[(int64_t(t) * N + i) * NG + k];
    g_opac[i] = g[GO];
    g_colors[3 * i] = g[GR]; g_colors[3 * i + 1] = g[GG]; g_colors[3 * i + 2] = g[GBL];
    for (int k = 0; k < 3; ++k) g_means[3 * i + k] = g_scales[3 * i + k] = 0;
    for (int k = 0; k < 4; ++k) g_quats[4 * i + k] = 0;
    if (packed[i * NP + PEX] < 0) continue;
    bool any = false;
    for (int k = 0; k < NG; ++k) any |= g[k] != 0;
    if (!any) continue;
    ProjInter<S> P;
    if (!project_one(means + 3 * i, quats + 4 * i, scales + 3 * i, st, P)) continue;
    const S* K = st.K;
    const S z = P.z, mx = packed[i * NP + PMX], my = packed[i * NP + PMY];
    // conic (A, B, C) = (c, -b, a) / det  ->  cov2d (a, b, c)
    const S a = P.a, b = P.b, c = P.c, d2 = P.det * P.det, id = 1 / P.det;
    const S gA = g[GA], gB = g[GB], gC = g[GC];
    const S ga = gA * (-c * c / d2) + gB * (b * c / d2) + gC * (-b * b / d2);
    const S gbb = gA * (2 * b * c / d2) + gB * (-id - 2 * b * b / d2) + gC * (2 * a * b / d2);
    const S gc = gA * (-b * b / d2) + gB * (a * b / d2) + gC * (-a * a / d2);
    // cov2d = J Wc J^T: G2 = [[ga, gbb/2], [gbb/2, gc]]
    const S G2[4] = {ga, S(0.5) * gbb, S(0.5) * gbb, gc};
    const S J[6] = {P.J00, 0, P.J02, 0, P.J11, P.J12};
    S gW[9];  // J^T G2 J
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q)
        gW[3 * r + q] = J[r] * (G2[0] * J[q] + G2[1] * J[3 + q]) + J[3 + r] * (G2[2] * J[q] + G2[3] * J[3 + q]);
    S gJ[6];  // 2 G2 J Wc
    for (int r = 0; r < 2; ++r)
      for (int q = 0; q < 3; ++q) {
        S acc = 0;
        for (int k = 0; k < 3; ++k) acc += (G2[2 * r] * J[k] + G2[2 * r + 1] * J[3 + k]) * P.Wc[3 * k + q];
        gJ[3 * r + q] = 2 * acc;
      }
    const S fx = K[0], fy = K[4];
    S gmc[3] = {0, 0, 0};
    gmc[2] += gJ[0] * (-fx / (z * z)) + gJ[2] * (fx * P.u / (z * z)) + gJ[4] * (-fy / (z * z)) + gJ[5] * (fy * P.v / (z * z));
    const S tan_x = S(0.5) * st.W / fx, tan_y = S(0.5) * st.H / fy;
    const S ulo = -(K[2] / fx + S(0.3) * tan_x), uhi = (st.W - K[2]) / fx + S(0.3) * tan_x;
    const S vlo = -(K[5] / fy + S(0.3) * tan_y), vhi = (st.H - K[5]) / fy + S(0.3) * tan_y;
    if (P.u_raw >= ulo && P.u_raw <= uhi) {
      const S gu = gJ[2] * (-fx / z);
      gmc[0] += gu / z;
      gmc[2] += -gu * P.mc[0] / (z * z);
    }
    if (P.v_raw >= vlo && P.v_raw <= vhi) {
      const S gv = gJ[5] * (-fy / z);
      gmc[1] += gv / z;
      gmc[2] += -gv * P.mc[1] / (z * z);
    }
    const S gmx = g[GMX], gmy = g[GMY];
    gmc[0] += (gmx * K[0] + gmy * K[3]) / z;
    gmc[1] += (gmx * K[1] + gmy * K[4]) / z;
    gmc[2] += (gmx * (K[2] - mx) + gmy * (K[5] - my)) / z + g[GZ];
    const S* R = st.R;
    for (int k = 0; k < 3; ++k) g_means[3 * i + k] = R[k] * gmc[0] + R[3 + k] * gmc[1] + R[6 + k] * gmc[2];
    // Wc = R Sig R^T  ->  gSig = R^T gW R
    S T1[9], gS[9];
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q) T1[3 * r + q] = R[r] * gW[q] + R[3 + r] * gW[3 + q] + R[6 + r] * gW[6 + q];
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q) gS[3 * r + q] = T1[3 * r] * R[q] + T1[3 * r + 1] * R[3 + q] + T1[3 * r + 2] * R[6 + q];
    // Sig = M M^T  ->  gM = (gS + gS^T) M
    S gM[9];
    for (int r = 0; r < 3; ++r)
      for (int q = 0; q < 3; ++q) {
        S acc = 0;
        for (int k = 0; k < 3; ++k) acc += (gS[3 * r + k] + gS[3 * k + r]) * P.M[3 * k + q];
        gM[3 * r + q] = acc;
      }
    S gR[9];
    for (int q = 0; q < 3; ++q) {
      S acc = 0;
      for (int r = 0; r < 3; ++r) {
        gR[3 * r + q] = gM[3 * r + q] * scales[3 * i + q];
        acc += gM[3 * r + q] * P.Rq[3 * r + q];
      }
      g_scales[3 * i + q] = acc;
    }
    const S w = P.qn[0], x = P.qn[1], y = P.qn[2], zq = P.qn[3];
    S gq[4];
    gq[0] = 2 * (-zq * gR[1] + y * gR[2] + zq * gR[3] - x * gR[5] - y * gR[6] + x * gR[7]);
    gq[1] = 2 * (y * gR[1] + zq * gR[2] + y * gR[3] - 2 * x * gR[4] - w * gR[5] + zq * gR[6] + w * gR[7] - 2 * x * gR[8]);
    gq[2] = 2 * (-2 * y * gR[0] + x * gR[1] + w * gR[2] + x * gR[3] + zq * gR[5] - w * gR[6] + zq * gR[7] - 2 * y * gR[8]);
    gq[3] = 2 * (-2 * zq * gR[0] - w * gR[1] + x * gR[2] + w * gR[3] - 2 * zq * gR[4] + y * gR[5] + x * gR[6] + y * gR[7]);
    if (P.qnorm > S(1e-12)) {
      const S dot = w * gq[0] + x * gq[1] + y * gq[2] + zq * gq[3];
      for (int k = 0; k < 4; ++k) g_quats[4 * i + k] = (gq[k] - P.qn[k] * dot) / P.qnorm;
    } else {
      for (int k = 0; k < 4; ++k) g_quats[4 * i + k] = gq[k] / S(1e-12);
    }
  }
}

template <typename S>
Settings<S> make_settings(const torch::Tensor& viewmat, const torch::Tensor& K, int64_t W, int64_t H, double near_,
                          double far_, double eps2d, double amin, double amax, double tmin, double extent) {
  Settings<S> st;
  auto v = viewmat.to(torch::kDouble).contiguous();
  auto k = K.to(torch::kDouble).contiguous();
  const double* vp = v.data_ptr<double>();
  const double* kp = k.data_ptr<double>();
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) st.R[3 * i + j] = S(vp[4 * i + j]);
    st.t[i] = S(vp[4 * i + 3]);
  }
  for (int i = 0; i < 9; ++i) st.K[i] = S(kp[i]);
  st.W = int(W); st.H = int(H);
  st.near_ = S(near_); st.far_ = S(far_); st.eps2d = S(eps2d);
  st.alpha_min = S(amin); st.alpha_max = S(amax); st.t_min = S(tmin); st.extent = S(extent);
  return st;
}

// SPATIALAVATAR_NATIVE_PROFILE=1 prints the time of every stage to stderr.
struct StageTimer {
  bool on = std::getenv("SPATIALAVATAR_NATIVE_PROFILE") != nullptr;
  std::chrono::steady_clock::time_point t = std::chrono::steady_clock::now();
  void operator()(const char* stage) {
    if (!on) return;
    auto now = std::chrono::steady_clock::now();
    std::fprintf(stderr, "native %-18s %8.2f ms\n", stage, std::chrono::duration<double, std::milli>(now - t).count());
    t = now;
  }
};

void check_inputs(const std::vector<torch::Tensor>& ts) {
  for (const auto& t : ts) {
    TORCH_CHECK(t.device().is_cpu(), "native renderer: tensors must be on the CPU");
    TORCH_CHECK(t.is_contiguous(), "native renderer: tensors must be contiguous");
    TORCH_CHECK(t.scalar_type() == ts[0].scalar_type(), "native renderer: all tensors must share one dtype");
  }
}

}  // namespace

// Returns rgb [H, W, 3], alpha [H, W], depth [H, W] and the state backward needs:
// packed [N, 12], tile offsets [T + 1] int64, tile ids [E] int32, T_final [H, W], last [H, W] int32.
std::vector<torch::Tensor> forward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                   torch::Tensor opacities, torch::Tensor colors, torch::Tensor viewmat,
                                   torch::Tensor K, int64_t W, int64_t H, double near_, double far_,
                                   double eps2d, double amin, double amax, double tmin, double extent) {
  check_inputs({means, quats, scales, opacities, colors});
  TORCH_CHECK(W >= 0 && H >= 0, "native renderer: negative image size");
  const int64_t N = means.size(0);
  const int nt = std::max(1, at::get_num_threads());
  auto opts = means.options();
  auto rgb = torch::zeros({H, W, 3}, opts), alpha = torch::zeros({H, W}, opts), depth = torch::zeros({H, W}, opts);
  auto tfinal = torch::ones({H, W}, opts);
  auto last = torch::zeros({H, W}, opts.dtype(torch::kInt32));
  auto packed = torch::empty({N, NP}, opts);
  auto rect = torch::empty({N, 4}, opts.dtype(torch::kInt32));
  torch::Tensor offsets, ids;
  const int tiles_x = int((W + TS - 1) / TS), tiles_y = int((H + TS - 1) / TS);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "native_forward", [&] {
    auto st = make_settings<scalar_t>(viewmat, K, W, H, near_, far_, eps2d, amin, amax, tmin, extent);
    StageTimer timer;
    project_all<scalar_t>(N, means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                          opacities.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(), st,
                          packed.data_ptr<scalar_t>(), rect.data_ptr<int32_t>(), nt);
    timer("project");
    bin_tiles<scalar_t>(N, packed.data_ptr<scalar_t>(), rect.data_ptr<int32_t>(), tiles_x, tiles_y, offsets, ids);
    timer("sort+bin");
    if (W > 0 && H > 0)
      raster_forward<scalar_t>(st, packed.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(),
                               rgb.data_ptr<scalar_t>(), alpha.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
                               tfinal.data_ptr<scalar_t>(), last.data_ptr<int32_t>(), nt);
    timer("raster forward");
    if (timer.on) std::fprintf(stderr, "native entries %ld, N %ld\n", long(ids.numel()), long(N));
  });
  return {rgb, alpha, depth, packed, offsets, ids, tfinal, last};
}

// Gradients of means, quats, scales, opacities and colours.
std::vector<torch::Tensor> backward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                    torch::Tensor packed, torch::Tensor offsets, torch::Tensor ids,
                                    torch::Tensor tfinal, torch::Tensor last, torch::Tensor g_rgb,
                                    torch::Tensor g_alpha, torch::Tensor g_depth, torch::Tensor viewmat,
                                    torch::Tensor K, int64_t W, int64_t H, double near_, double far_,
                                    double eps2d, double amin, double amax, double tmin, double extent) {
  check_inputs({means, quats, scales, packed, tfinal, g_rgb, g_alpha, g_depth});
  const int64_t N = means.size(0);
  const int nt = std::max(1, at::get_num_threads());
  auto opts = means.options();
  auto gm = torch::empty({N, 3}, opts), gq = torch::empty({N, 4}, opts), gs = torch::empty({N, 3}, opts);
  auto go = torch::empty({N}, opts), gc = torch::empty({N, 3}, opts);
  auto gbuf = torch::zeros({nt, N, NG}, opts);
  AT_DISPATCH_FLOATING_TYPES(means.scalar_type(), "native_backward", [&] {
    auto st = make_settings<scalar_t>(viewmat, K, W, H, near_, far_, eps2d, amin, amax, tmin, extent);
    StageTimer timer;
    if (W > 0 && H > 0)
      raster_backward<scalar_t>(st, packed.data_ptr<scalar_t>(), offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(),
                                tfinal.data_ptr<scalar_t>(), last.data_ptr<int32_t>(), g_rgb.data_ptr<scalar_t>(),
                                g_alpha.data_ptr<scalar_t>(), g_depth.data_ptr<scalar_t>(), gbuf.data_ptr<scalar_t>(),
                                N, nt);
    timer("raster backward");
    project_backward<scalar_t>(N, means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
                               packed.data_ptr<scalar_t>(), st, gbuf.data_ptr<scalar_t>(), nt,
                               gm.data_ptr<scalar_t>(), gq.data_ptr<scalar_t>(), gs.data_ptr<scalar_t>(),
                               go.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(), nt);
    timer("project backward");
  });
  return {gm, gq, gs, go, gc};
}
