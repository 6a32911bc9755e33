#include "evax/train/runtime.h"

#include <algorithm>
#include <thread>

#include "evax/core/error.h"

namespace evax {

torch::Device select_device(const std::string& spec, int local_rank) {
  const bool cuda = torch::cuda::is_available();
  if (spec == "cuda" && !cuda) raise<ConfigError>("device: cuda requested but CUDA is not available");
  if (spec == "cpu" || !cuda) return torch::kCPU;
  EVAX_ASSERT(spec == "cuda" || spec == "auto", "unknown device ", spec);
  // The same GPU NCCL binds this rank to.
  DistEnv env;
  env.local_rank = local_rank;
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(cuda_device_index(env)));
}

std::string device_from_config(const ConfigView& v, const std::string& key) {
  const std::string d = v.get<std::string>(
      key, "auto",
      "where to compute; auto: CUDA when available, else the CPU (a rank uses GPU local_rank "
      "mod the visible GPUs)");
  v.check(key, d == "auto" || d == "cpu" || d == "cuda", "must be auto, cpu or cuda");
  return d;
}

void apply_thread_policy(int threads, int local_world_size) {
  const int cores = static_cast<int>(std::thread::hardware_concurrency());
  torch::set_num_threads(threads > 0 ? threads : std::max(1, cores / std::max(1, local_world_size)));
}

CommOptions comm_options_from_config(const ConfigView& v, CommOptions o) {
  o.backend = v.get<std::string>("backend", o.backend,
                                 "collectives between ranks; auto: nccl when every rank has its "
                                 "own GPU, else gloo, else store");
  const std::string& b = o.backend;
  v.check("backend", b == "auto" || b == "gloo" || b == "store" || b == "nccl",
          "must be auto, gloo, store or nccl");
  o.timeout_s = v.get<double>(
      "timeout_s", o.timeout_s,
      "seconds a rank waits for its peers (rendezvous and each collective) before failing");
  v.check("timeout_s", o.timeout_s > 0, "must be > 0");
  return o;
}

TrainRunOptions train_run_options_from_config(Config& cfg, const AdamWOptions& optimizer,
                                              const EvalHookOptions& eval) {
  TrainRunOptions r;
  r.optimizer = adamw_options_from_config(cfg.view("optimizer"), optimizer);
  r.trainer = trainer_options_from_config(cfg.view("train"));
  r.trainer.eval(eval_hook_options_from_config(cfg.view("eval"), eval));
  r.trainer.ema(ema_options_from_config(cfg.view("ema")));
  r.comm = comm_options_from_config(cfg.view("dist"));
  r.threads = cfg.get<int>("threads", 0, "intra-op torch threads of each process");
  cfg.check("threads", r.threads >= 0, "must be >= 0 (0 = cores / local ranks)");
  // `paper:` (table, metric, value in percent, source): the number a paper-reproduction config is
  // compared with by `evax compare`. Training ignores it; decoding it here keeps typos in it errors.
  const std::string table =
      cfg.get<std::string>("paper.table", "", "the paper's table or figure the number comes from");
  const std::string metric = cfg.get<std::string>(
      "paper.metric", "",
      "key of the run's test metrics.json that evax compare sets the paper's number against");
  const std::string source = cfg.get<std::string>(
      "paper.source", "", "where the number was found (README, figure, poster ...)");
  const double value = cfg.get<double>("paper.value", -1.0,
                                       "the paper's number; evax compare shows it next to the "
                                       "run's test metric, training ignores it");
  if (cfg.has("paper")) {
    cfg.check("paper.table", !table.empty(), "must name the paper's table or figure");
    cfg.check("paper.metric", !metric.empty(), "must name a key of the test metrics.json");
    cfg.check("paper.source", !source.empty(), "must say where the number comes from");
    cfg.check("paper.value", value >= 0 && value <= 100, "must be the paper's number in percent");
  }
  return r;
}

}  // namespace evax
