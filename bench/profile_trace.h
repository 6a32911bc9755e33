// The benchmarks' --profile mode: CPU ops of `iters` calls of `run` recorded by LibTorch's Kineto
// profiler into a Chrome trace at `path` (bench/*.py --profile reads it).
#pragma once

#include <torch/csrc/autograd/profiler_kineto.h>

#include <cstdint>
#include <set>
#include <string>

namespace evax::bench {

template <class Run>
void profile_trace(const std::string& path, int64_t iters, Run&& run, bool shapes = false) {
  namespace prof = torch::autograd::profiler;
  const torch::profiler::impl::ProfilerConfig cfg(torch::profiler::impl::ProfilerState::KINETO,
                                                  shapes);
  const std::set<torch::profiler::impl::ActivityType> cpu{torch::profiler::impl::ActivityType::CPU};
  prof::prepareProfiler(cfg, cpu);
  prof::enableProfiler(cfg, cpu);
  for (int64_t i = 0; i < iters; ++i) run();
  prof::disableProfiler()->save(path);
}

}  // namespace evax::bench
