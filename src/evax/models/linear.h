// The linear layer of the ViTs (timm's nn.Linear: y = x·wᵀ + b), with the kernel chosen for the
// device and dtype:
//  - under autocast: at::linear (on autocast's cast list: bf16 weight and bias, one fused GEMM,
//    as nn.Linear in Python);
//  - on the CPU in float32, for token tensors (B, N, K), by the process-wide CpuLinear setting:
//    * kOneDnn: a 1×1 convolution over the tokens laid out channels-last (no copy: (B, N, K)
//      memory is NHWC for (B, K, N, 1)). ATen runs it on oneDNN, whose float32 kernels do 2.2-2.7x
//      the GEMM throughput of the MKL sgemm behind at::linear on AVX-512 AMD EPYC when MKL's
//      vendor check holds it back (bench/README.md), in full float32. Beyond 512 tokens per image,
//      where oneDNN's weight gradient is slower than BLAS, training computes that one gradient
//      with a BLAS GEMM (forward and input gradient stay on oneDNN);
//    * kBlas: LibTorch's F::linear (MKL sgemm);
//    * kAuto (the default): kBlas when evax answers MKL's vendor check (core/cpu_dispatch.h: MKL
//      then runs its AVX-512 kernels, as fast as oneDNN's forward and faster backward), else
//      kOneDnn. Environment EVAX_CPU_LINEAR=blas|onednn sets the start value;
//  - otherwise (CUDA, 2-D inputs, one thread with B < 16, where ATen would not pick oneDNN):
//    LibTorch's F::linear.
#pragma once

#include <torch/torch.h>

#include <string>

namespace evax {

/// x·wᵀ + b for x (..., K), w (N, K), b (N) or undefined, by the rule above.
torch::Tensor linear_forward(const torch::Tensor& x, const torch::Tensor& w, const torch::Tensor& b);

/// How CPU float32 token linears run (see above).
enum class CpuLinear { kAuto, kBlas, kOneDnn };

/// Sets the process-wide choice (kOneDnn without oneDNN in LibTorch acts as kBlas).
void set_cpu_linear(CpuLinear c);

/// The CPU float32 path linear_forward takes for token tensors now: "onednn" (a 1×1 convolution
/// on oneDNN) or "blas" (F::linear: MKL's sgemm).
std::string cpu_linear_backend();

}  // namespace evax
