// MKL's CPU dispatch on AMD processors. The PyPI torch wheel links MKL 2024.2 statically, and
// MKL picks its AVX-512 kernels (sgemm, behind ATen's float32 mm/bmm and the CPU flash-attention
// kernel) only when mkl_serv_intel_cpu_true() says the CPU is Intel; on AVX-512 AMD EPYC it falls
// back to slower paths (184 vs 367-446 GFLOP/s for 6304 × 384 → 1152 on 2 Zen 4 cores). evax's
// executables define that function (cpu_dispatch.cpp; exported, so the dynamic linker binds
// MKL's calls to it) and answer "Intel", so MKL chooses kernels by the CPU's feature bits alone,
// which it still checks. Environment EVAX_MKL_VENDOR_CHECK=keep restores MKL's own answer.
#pragma once

namespace evax {

/// Whether MKL's vendor check is answered by evax (true when the override is bound in this
/// process and not turned off by EVAX_MKL_VENDOR_CHECK=keep).
bool mkl_vendor_override_active();

/// How many times MKL has asked evax's override so far in this process (0 when MKL's calls do
/// not reach it, e.g. in a process without MKL).
long mkl_vendor_queries();

}  // namespace evax
