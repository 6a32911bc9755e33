// What every pipeline sets up the same way before training: the device of this rank, the thread
// policy and the `dist:` settings (formerly inside pretraining; finetuning and segmentation use
// them too).
#pragma once

#include <torch/torch.h>

#include <string>

#include "evax/core/config.h"
#include "evax/distributed/comm.h"
#include "evax/train/trainer.h"

namespace evax {

/// The device of a rank: "cpu"; "cuda" (ConfigError without CUDA); "auto" = CUDA when present.
/// On CUDA the rank uses device local_rank modulo the visible devices, as torchrun's one process
/// per GPU expects.
torch::Device select_device(const std::string& spec, int local_rank);

/// Checks a `device:` value (auto, cpu or cuda) at key `key` of `v`.
std::string device_from_config(const ConfigView& v, const std::string& key = "device");

/// The top-level keys every task reads alike into its options `o` (which has `loader.seed`,
/// `device`, `bf16` and `bf16_cpu`): `seed` (>= 0; the data seed unless data.loader.seed is set,
/// read either way so it stays a valid key), `device`, `bf16`, `bf16_cpu`.
template <class Options>
void read_run_keys(Config& cfg, Options& o) {
  const int64_t seed = cfg.get<int64_t>(
      "seed", 0,
      "run seed: initial weights, data order and augmentation (data.loader.seed overrides it)");
  cfg.check("seed", seed >= 0, "must be >= 0");
  if (!cfg.has("data.loader.seed")) o.loader.seed = static_cast<uint64_t>(seed);
  o.device = device_from_config(cfg.view());
  o.bf16 =
      cfg.get<bool>("bf16", o.bf16, "mixed precision: bfloat16 autocast on CUDA; false: float32");
  o.bf16_cpu = cfg.get<bool>("bf16_cpu", o.bf16_cpu,
                             "use bfloat16 autocast on the CPU as well (only with bf16: true)");
}

/// Intra-op threads: `threads` when > 0, else the cores divided among the node's local ranks
/// (at least 1), so ranks on one machine do not oversubscribe it.
void apply_thread_policy(int threads, int local_world_size);

/// Reads `dist:` (backend: auto | gloo | store | nccl, timeout_s > 0).
CommOptions comm_options_from_config(const ConfigView& v, CommOptions defaults = {});

/// What every training command decodes besides its task: `optimizer:`, `train:`, the trainer's
/// keys of `eval:`, `ema:`, `dist:` and `threads`.
struct TrainRunOptions {
  AdamWOptions optimizer;  ///< optimizer: (warmup comes from train:)
  TrainerOptions trainer;  ///< train:, eval: (every, metric, mode, patience, min_delta), ema:
  CommOptions comm;        ///< dist:
  int threads = 0;         ///< intra-op threads (0: cores / local ranks)
};

/// Reads TrainRunOptions; `optimizer` and `eval` give the defaults the task's recipe starts from.
TrainRunOptions train_run_options_from_config(Config& cfg, const AdamWOptions& optimizer = {},
                                              const EvalHookOptions& eval = {});

}  // namespace evax
