// dist_env_from_environment: torchrun, SLURM and single-process environments, and bad values.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <map>
#include <optional>
#include <string>

#include "evax/core/error.h"
#include "evax/distributed/env.h"

using Catch::Matchers::Contains;

namespace {

const char* kVars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                       "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT",
                       "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE",
                       "SLURM_TASKS_PER_NODE", "SLURM_NODEID", "SLURM_NNODES",
                       "SLURM_LAUNCH_NODE_IPADDR", "SLURM_JOB_NODELIST", "SLURM_NODELIST",
                       "SLURM_JOB_ID"};

/// Clears every variable the parser reads and restores the originals at scope exit.
class CleanEnv {
 public:
  CleanEnv() {
    for (const char* v : kVars) {
      if (const char* old = std::getenv(v)) saved_[v] = old;
      ::unsetenv(v);
    }
  }
  ~CleanEnv() {
    for (const char* v : kVars) ::unsetenv(v);
    for (const auto& [k, v] : saved_) ::setenv(k.c_str(), v.c_str(), 1);
  }
  void set(const char* k, const std::string& v) { ::setenv(k, v.c_str(), 1); }

 private:
  std::map<std::string, std::string> saved_;
};

}  // namespace

TEST_CASE("dist env: nothing set is a single process") {
  CleanEnv env;
  evax::DistEnv e = evax::dist_env_from_environment();
  CHECK(e.source == "single");
  CHECK(e.rank == 0);
  CHECK(e.world_size == 1);
  CHECK(e.local_rank == 0);
  CHECK(e.local_world_size == 1);
  CHECK_FALSE(e.use_agent_store);
}

TEST_CASE("dist env: torchrun variables") {
  CleanEnv env;
  env.set("RANK", "5");
  env.set("WORLD_SIZE", "8");
  env.set("LOCAL_RANK", "1");
  env.set("LOCAL_WORLD_SIZE", "4");
  env.set("MASTER_ADDR", "10.1.2.3");
  env.set("MASTER_PORT", "29400");
  env.set("TORCHELASTIC_USE_AGENT_STORE", "True");
  env.set("TORCHELASTIC_RESTART_COUNT", "2");
  env.set("SLURM_PROCID", "0");  // torchrun's variables win over SLURM's
  env.set("SLURM_NTASKS", "1");
  evax::DistEnv e = evax::dist_env_from_environment();
  CHECK(e.source == "torchrun");
  CHECK(e.rank == 5);
  CHECK(e.world_size == 8);
  CHECK(e.local_rank == 1);
  CHECK(e.local_world_size == 4);
  CHECK(e.master_addr == "10.1.2.3");
  CHECK(e.master_port == 29400);
  CHECK(e.use_agent_store);
  CHECK(e.restart_count == 2);
  CHECK_THAT(evax::describe(e), Contains("rank 5/8") && Contains("10.1.2.3:29400") &&
                                    Contains("attempt 2"));

  env.set("TORCHELASTIC_USE_AGENT_STORE", "False");
  CHECK_FALSE(evax::dist_env_from_environment().use_agent_store);
}

TEST_CASE("dist env: torchrun defaults for a world of one and missing local variables") {
  CleanEnv env;
  env.set("RANK", "0");
  env.set("WORLD_SIZE", "1");
  evax::DistEnv e = evax::dist_env_from_environment();
  CHECK(e.world_size == 1);
  CHECK(e.master_addr == "127.0.0.1");
  CHECK(e.master_port == 29500);

  env.set("RANK", "2");
  env.set("WORLD_SIZE", "3");
  env.set("MASTER_ADDR", "h");
  env.set("MASTER_PORT", "1234");
  e = evax::dist_env_from_environment();
  CHECK(e.local_rank == 2);  // one node assumed
  CHECK(e.local_world_size == 3);
}

TEST_CASE("dist env: malformed or inconsistent torchrun values name the variable") {
  CleanEnv env;
  env.set("WORLD_SIZE", "2");
  env.set("MASTER_ADDR", "localhost");
  env.set("MASTER_PORT", "29500");
  env.set("RANK", "abc");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("RANK='abc'"));
  env.set("RANK", "1x");
  CHECK_THROWS_AS(evax::dist_env_from_environment(), evax::ConfigError);
  env.set("RANK", " 1");
  CHECK_THROWS_AS(evax::dist_env_from_environment(), evax::ConfigError);
  env.set("RANK", "-1");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("RANK=-1 is out of range"));
  env.set("RANK", "2");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("RANK=2 must be < WORLD_SIZE=2"));
  env.set("RANK", "1");
  env.set("WORLD_SIZE", "0");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("WORLD_SIZE=0"));
  env.set("WORLD_SIZE", "2");
  env.set("LOCAL_RANK", "1");
  env.set("LOCAL_WORLD_SIZE", "1");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(),
                    Contains("LOCAL_RANK=1 must be < LOCAL_WORLD_SIZE=1"));
  env.set("LOCAL_WORLD_SIZE", "3");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("LOCAL_WORLD_SIZE=3"));
  env.set("LOCAL_WORLD_SIZE", "2");
  CHECK_NOTHROW(evax::dist_env_from_environment());
  env.set("MASTER_PORT", "70000");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("MASTER_PORT=70000"));
  env.set("MASTER_PORT", "29500");
  env.set("TORCHELASTIC_USE_AGENT_STORE", "maybe");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(),
                    Contains("TORCHELASTIC_USE_AGENT_STORE='maybe'"));
  ::unsetenv("TORCHELASTIC_USE_AGENT_STORE");
  ::unsetenv("MASTER_ADDR");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("MASTER_ADDR is not set"));
  env.set("MASTER_ADDR", "localhost");
  ::unsetenv("RANK");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("RANK is not set"));
}

TEST_CASE("dist env: SLURM variables") {
  CleanEnv env;
  env.set("SLURM_PROCID", "5");
  env.set("SLURM_NTASKS", "8");
  env.set("SLURM_LOCALID", "1");
  env.set("SLURM_TASKS_PER_NODE", "4(x2)");
  env.set("SLURM_NODEID", "1");
  env.set("SLURM_JOB_NODELIST", "node[01-04],gpu7");
  env.set("SLURM_LAUNCH_NODE_IPADDR", "10.0.0.9");
  env.set("SLURM_JOB_ID", "12345");
  evax::DistEnv e = evax::dist_env_from_environment();
  CHECK(e.source == "slurm");
  CHECK(e.rank == 5);
  CHECK(e.world_size == 8);
  CHECK(e.local_rank == 1);
  CHECK(e.local_world_size == 4);
  CHECK(e.master_addr == "node01");
  CHECK(e.master_port == 22345);  // from the job id

  env.set("SLURM_NTASKS_PER_NODE", "2");  // wins over SLURM_TASKS_PER_NODE
  CHECK(evax::dist_env_from_environment().local_world_size == 2);
  ::unsetenv("SLURM_NTASKS_PER_NODE");

  env.set("MASTER_ADDR", "10.9.9.9");
  env.set("MASTER_PORT", "4000");
  e = evax::dist_env_from_environment();
  CHECK(e.master_addr == "10.9.9.9");
  CHECK(e.master_port == 4000);
  ::unsetenv("MASTER_ADDR");
  ::unsetenv("MASTER_PORT");

  ::unsetenv("SLURM_JOB_NODELIST");
  CHECK(evax::dist_env_from_environment().master_addr == "10.0.0.9");

  // Uneven nodes: 2 tasks on each of nodes 0-2, 1 task on node 3.
  env.set("SLURM_TASKS_PER_NODE", "2(x3),1");
  env.set("SLURM_NTASKS", "7");
  env.set("SLURM_PROCID", "6");
  env.set("SLURM_LOCALID", "0");
  env.set("SLURM_NODEID", "3");
  CHECK(evax::dist_env_from_environment().local_world_size == 1);
  env.set("SLURM_NODEID", "4");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("SLURM_TASKS_PER_NODE"));
  env.set("SLURM_TASKS_PER_NODE", "2(x");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("SLURM_TASKS_PER_NODE='2(x'"));

  env.set("SLURM_PROCID", "7");
  env.set("SLURM_TASKS_PER_NODE", "7");
  env.set("SLURM_NODEID", "0");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(),
                    Contains("SLURM_PROCID=7 must be < SLURM_NTASKS=7"));
  env.set("SLURM_PROCID", "x");
  CHECK_THROWS_WITH(evax::dist_env_from_environment(), Contains("SLURM_PROCID='x'"));
}

TEST_CASE("dist env: first host of a SLURM node list") {
  CHECK(evax::slurm_first_host("gpu7") == "gpu7");
  CHECK(evax::slurm_first_host("node[01-04],gpu7") == "node01");
  CHECK(evax::slurm_first_host("node[07,01-04]") == "node07");
  CHECK(evax::slurm_first_host("a,b[1-2]") == "a");
  CHECK(evax::slurm_first_host("node[1-2]-ib,x") == "node1-ib");
  CHECK(evax::slurm_first_host("rack[2-3]n[005-006]") == "rack2n005");
  CHECK_THROWS_AS(evax::slurm_first_host("node[01-04"), evax::ConfigError);
  CHECK_THROWS_AS(evax::slurm_first_host("node]"), evax::ConfigError);
  CHECK_THROWS_AS(evax::slurm_first_host("node[]"), evax::ConfigError);
  CHECK_THROWS_AS(evax::slurm_first_host(""), evax::ConfigError);
}
