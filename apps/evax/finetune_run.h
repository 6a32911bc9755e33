// Finetuning as a reusable step of commands (finetune, demo).
#pragma once

#include <nlohmann/json.hpp>

#include "evax/classify/task.h"
#include "evax/core/config.h"
#include "evax/distributed/comm.h"
#include "evax/distributed/env.h"
#include "evax/train/trainer.h"

namespace evax::app {

/// Everything decoded from a finetuning config.
struct FinetunePlan {
  ClassifyOptions task;
  AdamWOptions optimizer;
  TrainerOptions trainer;
  CommOptions comm;
  int threads = 0;
};

/// Decodes model, finetune, data, loss, optimizer, train, eval, ema, dist and threads (no I/O).
FinetunePlan finetune_plan(Config& cfg);

/// What a finetuning run reached.
struct FinetuneResult {
  FitResult fit;
  std::string weights;                 ///< best/ when kept, else the last checkpoint
  nlohmann::ordered_json test_metrics; ///< metrics.json of the test split (rank 0)
};

/// Builds the task, trains in `dir`, then scores the test split with the selected weights into
/// `<dir>/eval/<test_split>/`.
FinetuneResult finetune_execute(const FinetunePlan& p, const std::string& dir, const DistEnv& env,
                                Comm* comm, const std::string& config_yaml);

}  // namespace evax::app
