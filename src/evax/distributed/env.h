// Where this process sits in a data-parallel job: read from the variables torchrun (or
// `evax launch`) sets, else from SLURM's, else a single process.
#pragma once

#include <string>

namespace evax {

/// This process's place in the job and how to reach the rendezvous store.
struct DistEnv {
  /// Global rank in [0, world_size).
  int rank = 0;
  /// Number of processes in the job.
  int world_size = 1;
  /// Rank among the processes on this node (selects the GPU).
  int local_rank = 0;
  /// Number of processes on this node.
  int local_world_size = 1;
  /// Host of the rendezvous TCP store (rank 0's node unless a torchrun agent owns the store).
  std::string master_addr = "127.0.0.1";
  /// Port of the rendezvous TCP store.
  int master_port = 29500;
  /// A torchrun agent already serves the store: every rank connects as a client.
  bool use_agent_store = false;
  /// torchrun's restart count; separates the store keys of successive attempts.
  int restart_count = 0;
  /// Where the values came from: "torchrun", "slurm" or "single".
  std::string source = "single";
};

/// Reads RANK/WORLD_SIZE/LOCAL_RANK/LOCAL_WORLD_SIZE/MASTER_ADDR/MASTER_PORT (torchrun,
/// `evax launch`), else SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, the tasks on this node
/// (SLURM_STEP_TASKS_PER_NODE, else SLURM_NTASKS_PER_NODE, else SLURM_TASKS_PER_NODE, indexed by
/// SLURM_NODEID) and the store (MASTER_ADDR, else the first host of SLURM_JOB_NODELIST; MASTER_PORT,
/// else 20000 + SLURM_JOB_ID % 10000) under srun, else returns a single process.
/// Throws ConfigError naming the variable for a malformed or inconsistent value.
DistEnv dist_env_from_environment();

/// First host of a SLURM host list: "node[01-04],gpu7" → "node01". Throws ConfigError when
/// the list is empty or its brackets do not match.
std::string slurm_first_host(const std::string& nodelist);

/// One line for the log: "rank 1/4 (local 1/2) via torchrun, store 10.0.0.1:29500".
std::string describe(const DistEnv& env);

}  // namespace evax
