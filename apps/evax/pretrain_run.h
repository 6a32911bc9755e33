// Pretraining as a reusable step of commands (pretrain, demo).
#pragma once

#include "evax/core/config.h"
#include "evax/distributed/comm.h"
#include "evax/distributed/env.h"
#include "evax/pretrain/task.h"
#include "evax/train/trainer.h"

namespace evax::app {

/// Everything decoded from a pretraining config.
struct PretrainPlan {
  PretrainOptions task;
  AdamWOptions optimizer;
  TrainerOptions trainer;
  CommOptions comm;
  int threads = 0;
};

/// Decodes model, target, data, masking, optimizer, train, dist and threads (no I/O).
PretrainPlan pretrain_plan(Config& cfg);
/// Builds the task and runs the trainer in `dir` (rank 0 writes).
FitResult pretrain_execute(const PretrainPlan& p, const std::string& dir, const DistEnv& env,
                           Comm* comm, const std::string& config_yaml);

}  // namespace evax::app
