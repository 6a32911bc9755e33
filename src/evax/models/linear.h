// The linear layer of the ViTs (timm's nn.Linear: y = x·wᵀ + b), with the kernel chosen for the
// device and dtype:
//  - under autocast: at::linear (on autocast's cast list: bf16 weight and bias, one fused GEMM,
//    as nn.Linear in Python);
//  - on the CPU in float32, for token tensors (B, N, K): a 1×1 convolution over the tokens laid
//    out channels-last (no copy: (B, N, K) memory is NHWC for (B, K, N, 1)). ATen runs it on
//    oneDNN's kernels, which on the project's AVX-512 AMD EPYC machines do 2.2-2.7x the GEMM
//    throughput of the BLAS sgemm behind at::linear (bench/README.md), in full float32 (no
//    reduced-precision math). Beyond 512 tokens per image, where oneDNN's backward is slower
//    than BLAS, training computes the weight gradient with one BLAS GEMM (forward and input
//    gradient stay on oneDNN). EVAX_CPU_LINEAR=blas turns it all off;
//  - otherwise (CUDA, 2-D inputs, one thread with B < 16, where ATen would not pick oneDNN):
//    LibTorch's F::linear.
#pragma once

#include <torch/torch.h>

#include <string>

namespace evax {

/// x·wᵀ + b for x (..., K), w (N, K), b (N) or undefined, by the rule above.
torch::Tensor linear_forward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

/// The CPU float32 path linear_forward takes for token tensors: "onednn" (a 1×1 convolution on
/// oneDNN) or "blas" (EVAX_CPU_LINEAR=blas, or LibTorch built without oneDNN).
std::string cpu_linear_backend();

}  // namespace evax
