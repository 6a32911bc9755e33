// What every pipeline sets up the same way before training: the device of this rank, the thread
// policy and the `dist:` settings (formerly inside pretraining; finetuning and segmentation use
// them too).
#pragma once

#include <torch/torch.h>

#include <string>

#include "evax/core/config.h"
#include "evax/distributed/comm.h"

namespace evax {

/// The device of a rank: "cpu"; "cuda" (ConfigError without CUDA); "auto" = CUDA when present.
/// On CUDA the rank uses device local_rank modulo the visible devices, as torchrun's one process
/// per GPU expects.
torch::Device select_device(const std::string& spec, int local_rank);

/// Checks a `device:` value (auto, cpu or cuda) at key `key` of `v`.
std::string device_from_config(const ConfigView& v, const std::string& key = "device");

/// Intra-op threads: `threads` when > 0, else the cores divided among the node's local ranks
/// (at least 1), so ranks on one machine do not oversubscribe it.
void apply_thread_policy(int threads, int local_world_size);

/// Reads `dist:` (backend: auto | gloo | store | nccl, timeout_s > 0).
CommOptions comm_options_from_config(const ConfigView& v, CommOptions defaults = {});

}  // namespace evax
