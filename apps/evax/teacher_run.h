// Dense teacher training as a reusable step of commands (teacher, demo).
#pragma once

#include "evax/core/config.h"
#include "evax/distributed/comm.h"
#include "evax/distributed/env.h"
#include "evax/pretrain/dense_teacher.h"
#include "evax/train/trainer.h"

namespace evax::app {

/// Everything decoded from a dense teacher config.
struct TeacherPlan {
  DenseTeacherOptions task;
  AdamWOptions optimizer;
  TrainerOptions trainer;
  CommOptions comm;
  int threads = 0;
};

/// Decodes model, data, optimizer, train, dist and threads (no I/O).
TeacherPlan teacher_plan(Config& cfg);
/// Builds the task and runs the trainer in `dir` (rank 0 writes).
FitResult teacher_execute(const TeacherPlan& p, const std::string& dir, const DistEnv& env,
                          Comm* comm, const std::string& config_yaml);

}  // namespace evax::app
