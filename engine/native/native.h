// Entry points of the native extension (bound to Python in bindings.cpp).
#pragma once

#include <torch/extension.h>

#include <vector>

// rasterize.cpp: the tile rasterizer (engine/render/native.py).
std::vector<torch::Tensor> forward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                   torch::Tensor opacities, torch::Tensor colors, torch::Tensor viewmat,
                                   torch::Tensor K, int64_t W, int64_t H, double near_, double far_,
                                   double eps2d, double amin, double amax, double tmin, double extent);
std::vector<torch::Tensor> backward(torch::Tensor means, torch::Tensor quats, torch::Tensor scales,
                                    torch::Tensor packed, torch::Tensor offsets, torch::Tensor ids,
                                    torch::Tensor tfinal, torch::Tensor last, torch::Tensor g_rgb,
                                    torch::Tensor g_alpha, torch::Tensor g_depth, torch::Tensor viewmat,
                                    torch::Tensor K, int64_t W, int64_t H, double near_, double far_,
                                    double eps2d, double amin, double amax, double tmin, double extent);

// residual.cpp: the expression residual's per-slot map (engine/residual.py).
torch::Tensor residual_forward(torch::Tensor f, torch::Tensor g1, torch::Tensor beta, torch::Tensor W,
                               torch::Tensor b);
std::vector<torch::Tensor> residual_backward(torch::Tensor f, torch::Tensor g1, torch::Tensor beta, torch::Tensor W,
                                             torch::Tensor grad);

// pose.cpp: slot frames and placement without autograd (engine/binding.py).
std::vector<torch::Tensor> pose_slots(torch::Tensor verts, torch::Tensor faces, torch::Tensor slot_face,
                                      torch::Tensor local_position, torch::Tensor unit_quat, torch::Tensor rel_scale);
