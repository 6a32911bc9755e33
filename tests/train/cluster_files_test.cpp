// The container and SLURM files (docker/, tools/slurm/), checked without a daemon or a cluster:
// what they call exists (the README's set-up script, evax commands and flags), the templates ask
// for the signal and the requeue that preemption needs, and the templates themselves, run under a
// stand-in srun that starts the tasks on this machine with SLURM's variables, train, requeue on
// the preempted exit code and resume to the weights of an uninterrupted run.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <random>
#include <regex>
#include <set>

#include "run_util.h"
#include "tensor_util.h"

using namespace evax;
using namespace evax::test;
using Catch::Matchers::Contains;
namespace fs = std::filesystem;

namespace {

const char* kTemplates[] = {"tools/slurm/pretrain_single_node.sbatch",
                            "tools/slurm/pretrain_multi_node.sbatch"};

std::string src(const std::string& rel) { return read_file(source_path(rel)); }

// `evax <args>`'s stdout.
std::string evax_output(const std::string& args) {
  TempDir tmp("cluster_help");
  REQUIRE(shell(evax_bin() + " " + args + " >'" + (tmp / "out") + "' 2>&1") == 0);
  return read_file(tmp / "out");
}

// Value of `#SBATCH --key=value` ("" when absent).
std::string sbatch_option(const std::string& text, const std::string& key) {
  std::smatch m;
  const std::regex re("^#SBATCH --" + key + "=(\\S+)", std::regex::multiline);
  return std::regex_search(text, m, re) ? m[1].str() : "";
}

// The template's srun line.
std::string srun_line(const std::string& text) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("srun ", 0) == 0) return line;
  return "";
}

bool port_is_free(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

// A job id whose derived store port (20000 + id % 10000) is free now.
int free_job_id() {
  std::mt19937 rng(std::random_device{}());
  for (int i = 0; i < 100; ++i) {
    const int id = std::uniform_int_distribution<int>(100000, 999999)(rng);
    if (port_is_free(20000 + id % 10000)) return id;
  }
  FAIL("no free port in 20000-29999");
  return 0;
}

void write_executable(const std::string& path, const std::string& text) {
  std::ofstream(path) << text;
  ::chmod(path.c_str(), 0755);
}

// Stand-ins for srun and scontrol inside an allocation, in `dir`/bin: srun starts SLURM_NNODES ×
// SLURM_NTASKS_PER_NODE tasks on this machine with the variables srun gives each task (block
// distribution), records their pids in `dir`/task_pids and returns the highest exit code, as
// srun does; scontrol appends its arguments to `dir`/scontrol.log.
void write_fake_slurm(const std::string& dir) {
  fs::create_directories(dir + "/bin");
  write_executable(dir + "/bin/srun", R"SH(#!/bin/bash
while [[ $# -gt 0 && $1 == --* ]]; do echo "$1" >> "$FAKE_SLURM_DIR/srun_options"; shift; done
n=$SLURM_NNODES; k=$SLURM_NTASKS_PER_NODE; pids=()
for ((node = 0; node < n; node++)); do
  for ((l = 0; l < k; l++)); do
    r=$((node * k + l))
    SLURM_PROCID=$r SLURM_LOCALID=$l SLURM_NODEID=$node SLURM_NTASKS=$((n * k)) \
      SLURM_STEP_TASKS_PER_NODE="$k(x$n)" SLURM_TASKS_PER_NODE="$k(x$n)" \
      "$@" > "$FAKE_SLURM_DIR/task$r.log" 2>&1 &
    pids+=($!)
    echo $! >> "$FAKE_SLURM_DIR/task_pids"
  done
done
rc=0
for p in "${pids[@]}"; do wait "$p"; c=$?; ((c > rc)) && rc=$c; done
exit $rc
)SH");
  write_executable(dir + "/bin/scontrol", R"SH(#!/bin/bash
echo "$*" >> "$FAKE_SLURM_DIR/scontrol.log"
)SH");
}

// The batch script as sbatch would run it in a job of `nodes` × `tasks` ranks (on this machine),
// training the tiny config into `run` with `per_rank` images per rank.
Proc run_template(const std::string& script, const std::string& dir, int job, int nodes, int tasks,
                  const std::string& cfg, const std::string& run, int per_rank,
                  const std::vector<std::string>& more, int restart) {
  std::remove((dir + "/task_pids").c_str());
  std::vector<std::string> argv = {"bash", source_path(script), "--set",
                                   "data.loader.batch_size=" + std::to_string(per_rank), "--set",
                                   "dist.backend=gloo"};
  argv.insert(argv.end(), more.begin(), more.end());
  const char* path = std::getenv("PATH");
  return spawn(argv, dir + "/job" + std::to_string(restart) + ".log",
               {"PATH=" + dir + "/bin:" + (path ? path : "/usr/bin:/bin"),
                "FAKE_SLURM_DIR=" + dir, "SLURM_JOB_ID=" + std::to_string(job),
                "SLURM_JOB_NAME=evax-test", "SLURM_NNODES=" + std::to_string(nodes),
                "SLURM_NTASKS_PER_NODE=" + std::to_string(tasks), "SLURM_JOB_NODELIST=localhost",
                "SLURM_CPUS_PER_TASK=1", "SLURM_RESTART_COUNT=" + std::to_string(restart),
                "CONFIG=" + cfg, "RUN_DIR=" + run, "EVAX=" + evax_bin()},
               {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                "MASTER_PORT", "OMP_NUM_THREADS", "SLURM_PROCID", "SLURM_NTASKS"});
}

std::vector<pid_t> task_pids(const std::string& dir, size_t n) {
  for (int attempt = 0; attempt < 500; ++attempt) {
    std::ifstream in(dir + "/task_pids");
    std::vector<pid_t> pids;
    for (pid_t p; in >> p;) pids.push_back(p);
    if (pids.size() >= n) return pids;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  FAIL("the stand-in srun did not start " << n << " tasks");
  return {};
}

}  // namespace

TEST_CASE("cluster files: Dockerfile and Apptainer definition build with the README's set-up script on its base") {
  const std::string docker = src("docker/Dockerfile"), def = src("docker/evax.def");
  const std::string readme = src("README.md"), dev = src("tools/dev.sh");
  // The README's base and set-up command, and the set-up script takes that command.
  CHECK_THAT(readme, Contains("Debian 12") && Contains("tools/dev.sh build"));
  CHECK_THAT(dev, Contains("demo|test|build)"));
  CHECK(shell("bash -n '" + source_path("tools/dev.sh") + "'") == 0);
  // Docker: Debian 12, the set-up script, evax as the entry point, a fixed cache (the venv's path
  // is baked into the binary's run path, so build and run time must agree).
  CHECK_THAT(docker, Contains("\nFROM debian:12\n"));
  CHECK(std::regex_search(docker, std::regex("\\nRUN [^\\n]*tools/dev\\.sh build")));
  CHECK_THAT(docker, Contains("EVAX_CACHE=/opt/evax-cache"));
  CHECK_THAT(docker, Contains("ENV PATH=/opt/evax/build:$PATH"));
  CHECK_THAT(docker, Contains("ENTRYPOINT [\"evax\"]"));
  CHECK_THAT(src("docker/Dockerfile.dockerignore"), Contains("\nbuild/\n"));
  // Apptainer: the same base, script, cache and command.
  CHECK_THAT(def, Contains("\nBootstrap: docker\nFrom: debian:12\n"));
  const auto post = def.find("%post"), env = def.find("%environment"), run = def.find("%runscript");
  REQUIRE(post != std::string::npos);
  REQUIRE(env != std::string::npos);
  REQUIRE(run != std::string::npos);
  CHECK_THAT(def.substr(post, run - post), Contains("tools/dev.sh build") &&
                                               Contains("EVAX_CACHE=/opt/evax-cache"));
  CHECK_THAT(def.substr(env, post - env), Contains("EVAX_CACHE=/opt/evax-cache") &&
                                              Contains("/opt/evax/build:$PATH"));
  CHECK_THAT(def.substr(run), Contains("exec evax \"$@\""));
  // Both images run the commands the usage lines show.
  for (const std::string& text : {docker, def})
    CHECK_THAT(text, Contains("pretrain --config configs/pretrain/eva_x_s_merged520k.yaml"));
  CHECK(fs::exists(source_path("configs/pretrain/eva_x_s_merged520k.yaml")));
}

TEST_CASE("cluster files: the SLURM templates ask for the signal and the requeue, and use existing evax flags") {
  const std::string help = evax_output("--help");
  CHECK_THAT(help, Contains("6 preempted"));
  const std::string pretrain_help = evax_output("pretrain --help");
  for (const char* path : kTemplates) {
    INFO(path);
    const std::string t = src(path);
    CHECK(shell("bash -n '" + source_path(path) + "'") == 0);
    // SIGUSR1 to the ranks (no "B:", which would signal only the batch shell) some time before
    // the limit, and a job that may be requeued.
    const std::string signal = sbatch_option(t, "signal");
    CHECK(std::regex_match(signal, std::regex("USR1@[1-9][0-9]*")));
    CHECK(std::regex_search(t, std::regex("^#SBATCH --requeue$", std::regex::multiline)));
    // One rank per GPU.
    CHECK(!sbatch_option(t, "gpus-per-node").empty());
    CHECK(sbatch_option(t, "ntasks-per-node") == sbatch_option(t, "gpus-per-node"));
    const int nodes = std::stoi(sbatch_option(t, "nodes"));
    const bool multi = std::string(path).find("multi") != std::string::npos;
    CHECK((multi ? nodes >= 2 : nodes == 1));
    // The ranks: evax pretrain through srun, resuming, in a run directory named by the job id.
    const std::string line = srun_line(t);
    REQUIRE(!line.empty());
    CHECK_THAT(line, Contains("$EVAX pretrain ") && Contains("--resume auto") &&
                         Contains("--run-dir \"$RUN_DIR\"") && Contains("--kill-on-bad-exit=0"));
    CHECK(std::regex_search(t, std::regex("\\nRUN_DIR=[^\\n]*\\$\\{SLURM_JOB_ID")));
    // Every flag of the srun line after `pretrain` is one of `evax pretrain --help`'s.
    const std::string args = line.substr(line.find(" pretrain ") + 10);
    std::smatch m;
    std::set<std::string> flags;
    for (auto it = args.cbegin();
         std::regex_search(it, args.cend(), m, std::regex("(^|\\s)(--[a-z-]+)"));
         it = m[0].second)
      flags.insert(m[2]);
    CHECK(flags.size() >= 3);
    for (const auto& f : flags) {
      INFO(f);
      CHECK_THAT(pretrain_help, Contains(f));
    }
    // The documented preempted exit code requeues the job.
    CHECK_THAT(t, Contains("PREEMPTED=6") && Contains("scontrol requeue \"$SLURM_JOB_ID\"") &&
                      Contains("if [ $rc -eq $PREEMPTED ]"));
  }
  CHECK(src(kTemplates[0]).substr(src(kTemplates[0]).find("\n# Overridable")) ==
        src(kTemplates[1]).substr(src(kTemplates[1]).find("\n# Overridable")));
}

TEST_CASE("cluster files: the single-node template, SIGUSR1 to its ranks: exit 6, requeue, and the requeued job resumes to the uninterrupted weights") {
  std::mt19937_64 rng(test_seed("sbatch preemption"));
  const int64_t s = std::uniform_int_distribution<int64_t>(1, 14)(rng);
  INFO("SIGUSR1 to the ranks once rank 0 logged step " << s);
  TempDir tmp("sbatch_single");
  write_fake_slurm(tmp.str());
  const std::string cfg = tiny_pretrain_config(tmp, "train: {epochs: 4, warmup_epochs: 0.5, log_every: 1}\n");
  const std::string ref = tmp / "ref", run = tmp / "run";
  const std::vector<std::string> ref_cmd = {evax_bin(), "launch", "--nproc", "2", "--", "pretrain",
                                            "--config", cfg, "--run-dir", ref, "--set",
                                            "data.loader.batch_size=4", "--set", "dist.backend=gloo"};
  REQUIRE(wait_exit(spawn(ref_cmd, tmp / "ref.log")) == 0);

  const int job = free_job_id();
  Proc p = run_template(kTemplates[0], tmp.str(), job, 1, 2, cfg, run, 4, {}, 0);
  int code = -1;
  {
    const bool reached = wait_for_step(p, run, s, &code);
    INFO("not reached; exit code " << code << ": " << read_file(p.log));
    REQUIRE(reached);
  }
  for (pid_t t : task_pids(tmp.str(), 2)) ::kill(t, SIGUSR1);  // what --signal=USR1@T does
  code = wait_exit(p);
  const std::string out = read_file(tmp / "job0.log");
  INFO(out);
  CHECK(code == 0);
  CHECK_THAT(out, Contains("preempted (exit code 6), requeueing job " + std::to_string(job)));
  CHECK(read_file(tmp / "scontrol.log") == "requeue " + std::to_string(job) + "\n");
  const int64_t stopped = checkpoint_step(newest_checkpoint(run));
  CHECK(stopped >= s);
  CHECK(stopped < 24);
  CHECK_THAT(read_file(run + "/log.txt"), Contains("rank 0/2 (local 0/2) via slurm"));
  CHECK_THAT(read_file(tmp / "srun_options"), Contains("--kill-on-bad-exit=0"));

  // The requeued job: same job id, so the same run directory; it resumes and finishes.
  p = run_template(kTemplates[0], tmp.str(), job, 1, 2, cfg, run, 4, {}, 1);
  code = wait_exit(p);
  INFO(read_file(tmp / "job1.log"));
  CHECK(code == 0);
  CHECK(read_file(tmp / "scontrol.log") == "requeue " + std::to_string(job) + "\n");
  CHECK_THAT(read_file(run + "/log.txt"), Contains("resumed from "));
  CHECK(checkpoint_step(newest_checkpoint(run)) == 24);
  const double d = max_abs_diff(final_weights(ref), final_weights(run));
  INFO("max abs parameter difference: " << d);
  CHECK(d == 0.0);
}

TEST_CASE("cluster files: the multi-node template, 2 nodes x 2 ranks on this machine, equals one process") {
  TempDir tmp("sbatch_multi");
  write_fake_slurm(tmp.str());
  const std::string cfg = tiny_pretrain_config(tmp, "train: {epochs: 1, log_every: 1}\n");
  const std::string one = tmp / "one", run = tmp / "run";
  REQUIRE(wait_exit(spawn({evax_bin(), "pretrain", "--config", cfg, "--run-dir", one, "--max-steps",
                           "5"},
                          tmp / "one.log", {},
                          {"RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"})) == 0);
  const int job = free_job_id();
  Proc p = run_template(kTemplates[1], tmp.str(), job, 2, 2, cfg, run, 2, {"--max-steps", "5"}, 0);
  const int code = wait_exit(p);
  INFO(read_file(tmp / "job0.log") << read_file(tmp / "task3.log"));
  REQUIRE(code == 0);
  CHECK_THAT(read_file(run + "/log.txt"),
             Contains("rank 0/4 (local 0/2) via slurm, store localhost:" +
                      std::to_string(20000 + job % 10000)));
  CHECK(!fs::exists(tmp / "scontrol.log"));  // finished: no requeue
  // Same global batch (4 ranks × 2 = 8); fp32 summation order only (as the 2-rank tests).
  const double d = max_abs_diff(final_weights(one), final_weights(run));
  INFO("max abs parameter difference after 5 steps: " << d);
  CHECK(d <= 1e-5);
}
