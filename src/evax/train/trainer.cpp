#include "evax/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>

#include "evax/core/error.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/core/progress.h"
#include "evax/distributed/comm.h"
#include "evax/distributed/reducer.h"
#include "evax/io/tensorboard.h"
#include "evax/train/preempt.h"
#include "evax/train/run_checkpoint.h"

namespace fs = std::filesystem;

namespace evax {

TrainerOptions trainer_options_from_config(const ConfigView& v, TrainerOptions o) {
  o.epochs(v.get<int64_t>(
      "epochs", o.epochs(),
      "length of the run in epochs; the lr schedule spans all of them (EVA-X's --epochs)"));
  v.check("epochs", o.epochs() >= 1, "must be >= 1");
  o.schedule(schedule_options_from_config(v, o.epochs(), o.schedule()));
  o.accum_steps(v.get<int64_t>("accum_steps", o.accum_steps(),
                               "micro-batches whose gradients are accumulated into one optimizer "
                               "step (EVA-X's --accum_iter)"));
  v.check("accum_steps", o.accum_steps() >= 1, "must be >= 1");
  o.log_every(v.get<int64_t>(
      "log_every", o.log_every(),
      "log loss and lr every N optimizer steps (console, metrics.csv, TensorBoard)"));
  v.check("log_every", o.log_every() >= 1, "must be >= 1");
  o.checkpoint_every(v.get<int64_t>(
      "checkpoint_every", o.checkpoint_every(),
      "also checkpoint every N optimizer steps, besides epoch ends and the end of the run"));
  v.check("checkpoint_every", o.checkpoint_every() >= 0, "must be >= 0 (0 = epoch ends only)");
  o.keep_last(v.get<int>(
      "keep_last", o.keep_last(),
      "step checkpoints kept on disk; older ones are deleted (checkpoints/best/ is kept apart)"));
  v.check("keep_last", o.keep_last() >= 1, "must be >= 1");
  o.max_nan_rollbacks(v.get<int>("max_nan_rollbacks", o.max_nan_rollbacks(),
                                 "NaN/Inf losses tolerated per run; each rolls back to the last "
                                 "checkpoint and skips the batch"));
  v.check("max_nan_rollbacks", o.max_nan_rollbacks() >= 0, "must be >= 0");
  o.inject_nan_step(v.get<int64_t>(
      "inject_nan_step", o.inject_nan_step(),
      "testing hook: make the loss of this optimizer step (0-based) NaN, once; -1: never"));
  return o;
}

EvalHookOptions eval_hook_options_from_config(const ConfigView& v, EvalHookOptions o) {
  o.every(v.get<int64_t>("every", o.every(),
                         "evaluate every N epochs, and always at the end of the schedule"));
  v.check("every", o.every() >= 0, "must be >= 0 (0 = only at the end)");
  o.metric(v.get<std::string>("metric", o.metric(),
                              "metric that selects checkpoints/best/ (e.g. mauc, accuracy, mDice; "
                              "\"ema/<key>\": EMA weights); empty: no best"));
  o.mode(v.get<std::string>(
      "mode", o.mode(),
      "whether a larger (max: AUC, accuracy) or smaller (min: a loss) eval.metric is better"));
  v.check("mode", o.mode() == "max" || o.mode() == "min", "must be max or min");
  o.patience(v.get<int64_t>(
      "patience", o.patience(),
      "early stopping: evaluations without improvement of eval.metric before the run stops"));
  v.check("patience", o.patience() >= 0, "must be >= 0 (0 = no early stopping)");
  v.check("patience", o.patience() == 0 || !o.metric().empty(),
          "early stopping needs eval.metric (the metric it watches)");
  o.min_delta(v.get<double>(
      "min_delta", o.min_delta(),
      "margin by which an evaluation must beat the best eval.metric to count as an improvement"));
  v.check("min_delta", o.min_delta() >= 0, "must be >= 0");
  return o;
}

namespace {

// The selection state of the evaluation hook; saved in every checkpoint.
struct BestState {
  double value = std::nan("");  // best eval.metric so far (NaN: none yet)
  int64_t step = -1;
  int64_t since = 0;            // evaluations since the best
  bool stopped = false;         // early stopping fired
};

nlohmann::json best_to_json(const BestState& b) {
  return {{"value", std::isnan(b.value) ? nlohmann::json(nullptr) : nlohmann::json(b.value)},
          {"step", b.step}, {"evals_since_best", b.since}, {"stopped_early", b.stopped}};
}

BestState best_from_json(const nlohmann::json& meta) {
  BestState b;
  if (!meta.contains("best")) return b;
  const auto& j = meta["best"];
  b.value = j["value"].is_null() ? std::nan("") : j["value"].get<double>();
  b.step = j.value("step", int64_t{-1});
  b.since = j.value("evals_since_best", int64_t{0});
  b.stopped = j.value("stopped_early", false);
  return b;
}

// Where the data stream and the schedule stand; saved in every checkpoint.
struct Position {
  int64_t step = 0;   // optimizer steps done
  int64_t epoch = 0;  // current epoch
  int64_t micro = 0;  // micro-batches of `epoch` already consumed
  int nan_rollbacks = 0;
};

// Generator states: the torch CPU generator and, where CUDA is available, every visible CUDA
// device's default generator (drop-path masks and other randomness drawn on a GPU). Compiled on
// CPU-only machines too: the CUDA generators are reached through the device-generic context and
// only when a CUDA runtime with devices is present.
TensorMap rng_state() {
  TensorMap out;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back("rng.torch_cpu", gen.get_state());
  }
  if (torch::cuda::is_available()) {
    const int n = static_cast<int>(torch::cuda::device_count());
    for (int i = 0; i < n; ++i) {
      at::Generator gen = at::globalContext().defaultGenerator(
          at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      out.emplace_back("rng.torch_cuda." + std::to_string(i), gen.get_state());
    }
  }
  return out;
}

void set_rng_state(const TensorMap& t, const std::string& dir) {
  const at::Tensor* s = find(t, "rng.torch_cpu");
  if (!s) raise<DataError>("checkpoint '", dir, "': trainer state lacks rng.torch_cpu");
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(*s);
  }
  const int devices = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  int saved = 0;
  for (const auto& kv : t) {
    const std::string prefix = "rng.torch_cuda.";
    if (kv.first.rfind(prefix, 0) != 0) continue;
    ++saved;
    const int i = std::stoi(kv.first.substr(prefix.size()));
    if (i >= devices) continue;
    at::Generator gen = at::globalContext().defaultGenerator(
        at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(kv.second);
  }
  if (saved != devices)
    log_warn("checkpoint '", dir, "' holds ", saved, " CUDA generator states, this process sees ",
             devices, " CUDA devices: ", saved < devices ? "the others keep their current state"
                                                         : "the extra states are ignored");
}

// The settings a checkpoint is only valid for: the trainer's and the task's.
nlohmann::json run_record(Task& task, int world, int64_t accum, int64_t total_steps,
                          int64_t micro_per_epoch, double ema_decay) {
  nlohmann::json run = task.run_identity();
  EVAX_ASSERT(run.is_object(), "Task::run_identity() must return a JSON object");
  for (const auto& [key, value] :
       std::map<std::string, int64_t>{{"world_size", world},
                                      {"accum_steps", accum},
                                      {"total_steps", total_steps},
                                      {"micro_batches_per_epoch", micro_per_epoch}}) {
    EVAX_ASSERT(!run.contains(key), "Task::run_identity() reuses the trainer's field ", key);
    run[key] = value;
  }
  EVAX_ASSERT(!run.contains("ema_decay"), "Task::run_identity() reuses the trainer's field ema_decay");
  run["ema_decay"] = ema_decay;
  return run;
}

// Refuses to resume a checkpoint written by a different run, naming every differing field.
void check_same_run(const nlohmann::json& meta, const nlohmann::json& now, const std::string& dir) {
  if (!meta.contains("run") || !meta["run"].is_object()) {
    log_warn("checkpoint '", dir, "' records no run settings (written by an older evax): cannot ",
             "check that it belongs to this run");
    return;
  }
  const nlohmann::json& then = meta["run"];
  std::vector<std::string> diffs;
  for (auto it = now.begin(); it != now.end(); ++it) {
    if (!then.contains(it.key())) {
      log_warn("checkpoint '", dir, "' does not record `", it.key(), "`: not checked");
      continue;
    }
    if (then[it.key()] != it.value())
      diffs.push_back(it.key() + ": checkpoint " + then[it.key()].dump() + ", now " + it.value().dump());
  }
  for (auto it = then.begin(); it != then.end(); ++it)
    if (!now.contains(it.key()))
      diffs.push_back(it.key() + ": checkpoint " + it.value().dump() + ", now not set");
  if (!diffs.empty()) {
    std::string list;
    for (const auto& d : diffs) list += (list.empty() ? "" : "; ") + d;
    raise<ConfigError>("cannot resume from '", dir, "': it was written by a different run (", list,
                       "). Resume with the settings it was written with (its meta.json holds the "
                       "resolved config), or start a new run in another --run-dir");
  }
}

// metrics.csv: "step" then one column per metric in order of first appearance. A row with a new
// metric rewrites the file atomically with the union of columns (earlier rows get empty cells).
// Opening it keeps the rows up to `keep_through` (the step training continues from) and their
// columns, so a resumed run continues the same file and never repeats a step.
class MetricsCsv {
 public:
  MetricsCsv(std::string path, int64_t keep_through) : path_(std::move(path)) {
    if (!fs::exists(path_)) return;
    std::istringstream in(read_file(path_));
    std::string line;
    bool header = true;
    while (std::getline(in, line)) {
      if (line.empty()) continue;
      std::vector<std::string> cells;
      std::stringstream ls(line);
      for (std::string c; std::getline(ls, c, ',');) cells.push_back(c);
      if (!line.empty() && line.back() == ',') cells.push_back("");
      if (header) {
        header = false;
        if (cells.empty() || cells[0] != "step") break;  // not ours: start over
        columns_.assign(cells.begin() + 1, cells.end());
        continue;
      }
      int64_t step = 0;
      try {
        step = std::stoll(cells.at(0));
      } catch (const std::exception&) {
        continue;  // a torn last line
      }
      if (step > keep_through) continue;
      cells.resize(columns_.size() + 1);
      rows_.push_back(std::move(cells));
    }
    rewrite();
  }

  void write(int64_t step, const std::map<std::string, double>& row) {
    bool grew = false;
    const std::string step_s = std::to_string(step);
    for (const auto& kv : row)
      if (std::find(columns_.begin(), columns_.end(), kv.first) == columns_.end())
        columns_.push_back(kv.first), grew = true;
    // A second write for the same step (an evaluation after the step's training log) fills the
    // same row: one row per step.
    const bool merge = !rows_.empty() && rows_.back()[0] == step_s;
    std::vector<std::string> cells = merge ? rows_.back() : std::vector<std::string>{step_s};
    cells.resize(columns_.size() + 1);
    for (size_t i = 0; i < columns_.size(); ++i) {
      auto it = row.find(columns_[i]);
      if (it != row.end()) cells[i + 1] = str_cat(it->second);
    }
    if (merge) {
      rows_.back() = cells;
      rewrite();
      return;
    }
    rows_.push_back(cells);
    if (grew || !out_.is_open()) {
      rewrite();
      return;
    }
    out_ << join(cells) << "\n";
    out_.flush();
  }

 private:
  static std::string join(const std::vector<std::string>& cells) {
    std::string s;
    for (size_t i = 0; i < cells.size(); ++i) s += (i ? "," : "") + cells[i];
    return s;
  }
  void rewrite() {
    if (out_.is_open()) out_.close();
    if (!rows_.empty() || !columns_.empty()) {
      std::vector<std::string> head{"step"};
      head.insert(head.end(), columns_.begin(), columns_.end());
      std::string text = join(head) + "\n";
      for (auto& r : rows_) {
        r.resize(columns_.size() + 1);
        text += join(r) + "\n";
      }
      write_file_atomic(path_, text);
      out_.open(path_, std::ios::app);
    }
  }

  std::string path_;
  std::vector<std::string> columns_;          // without "step"
  std::vector<std::vector<std::string>> rows_;  // every row, step first (rewrites need them)
  std::ofstream out_;
};

// Testing hook for restarts under torchrun: EVAX_TEST_FAIL_AT_STEP=N makes rank
// EVAX_TEST_FAIL_RANK (default 0) of a run that did not resume die abruptly (exit code 1, no
// clean-up, as a crash) once it has done N optimizer steps. -1: unset.
struct FailHook {
  int64_t step = -1;
  int rank = 0;
};

FailHook fail_hook_from_environment() {
  FailHook h;
  auto read = [](const char* name, int64_t lo) -> std::optional<int64_t> {
    const char* v = std::getenv(name);
    if (v == nullptr || *v == '\0') return std::nullopt;
    char* end = nullptr;
    const long long x = std::strtoll(v, &end, 10);
    if (*end != '\0' || x < lo)
      raise<ConfigError>("environment variable ", name, "='", v, "' is not an integer >= ", lo);
    return x;
  };
  if (auto s = read("EVAX_TEST_FAIL_AT_STEP", 0)) h.step = *s;
  if (auto r = read("EVAX_TEST_FAIL_RANK", 0)) h.rank = static_cast<int>(*r);
  return h;
}

// FNV-1a of the log keys, exact in a double: ranks compare their key sets with it.
double keys_hash(const std::map<std::string, double>& logs) {
  uint32_t h = 2166136261u;
  for (const auto& kv : logs)
    for (char c : kv.first + '\0') h = (h ^ static_cast<uint8_t>(c)) * 16777619u;
  return static_cast<double>(h);
}

}  // namespace

FitResult trainer_fit(Task& task, const AdamWOptions& opt_opts, const TrainerOptions& o,
                      const RunContext& ctx) {
  const int rank = ctx.comm ? ctx.comm->rank() : 0;
  const int world = ctx.comm ? ctx.comm->world_size() : 1;
  const bool main_rank = rank == 0;
  // SIGTERM/SIGUSR1 from here on only set a flag; the loop stops at a step boundary all ranks
  // agree on, checkpoints and throws Preempted (exit code 6).
  const PreemptGuard preempt;
  const FailHook fail_hook = fail_hook_from_environment();
  const std::string ckpt_root = ctx.run_dir + "/checkpoints";

  const int64_t micro_per_epoch = task.micro_batches_per_epoch();
  const int64_t steps_per_epoch = micro_per_epoch / o.accum_steps();
  if (steps_per_epoch < 1)
    raise<ConfigError>("an epoch has ", micro_per_epoch, " micro-batches, fewer than accum_steps = ",
                       o.accum_steps(), ": use a smaller batch or more data");
  const LrSchedule schedule(o.schedule(), opt_opts.lr(), opt_opts.min_lr(), o.epochs(),
                            micro_per_epoch, o.accum_steps());
  const int64_t total_steps = schedule.total_steps();
  // The weight-decay schedule (EVA-02's cosine per step) only when weight_decay_end is set: the
  // groups otherwise keep the decay they were built with.
  const bool wd_scheduled = opt_opts.weight_decay_end() >= 0;
  const double wd_end = wd_scheduled ? opt_opts.weight_decay_end() : opt_opts.weight_decay();

  AdamW opt(task.param_groups(opt_opts.weight_decay()), opt_opts);
  std::vector<torch::Tensor> params;
  for (const auto& np : opt.params()) params.push_back(np.param);
  std::unique_ptr<GradReducer> reducer;
  if (world > 1) {
    broadcast_parameters(*ctx.comm, params, task.buffers());
    reducer = std::make_unique<GradReducer>(*ctx.comm, params);
  }
  // The EMA starts from the (broadcast) initial weights; a resume overwrites it.
  std::unique_ptr<ModelEma> ema;
  if (o.ema().decay() > 0) ema = std::make_unique<ModelEma>(opt.params(), task.buffers(), o.ema());

  const EvalHookOptions& eo = o.eval();
  const bool evaluating = task.has_evaluation();
  const bool select_ema = eo.metric().rfind("ema/", 0) == 0;
  if (!eo.metric().empty() && !evaluating)
    raise<ConfigError>("eval.metric = '", eo.metric(), "', but this task does not evaluate");
  if (select_ema && !(ema && o.ema().evaluate()))
    raise<ConfigError>("eval.metric = '", eo.metric(), "' selects on the EMA weights: set "
                       "ema.decay > 0 (and ema.evaluate: true)");

  const nlohmann::json run = run_record(task, world, o.accum_steps(), total_steps, micro_per_epoch,
                                        o.ema().decay());
  Position pos;
  BestState best;
  // Every rank returns the directory (it is named by the step), rank 0 alone writes it, and no
  // rank goes on before it is complete: all can read it back for a NaN rollback.
  auto save = [&](const char* why) {
    const std::string dir = run_checkpoint_dir(ckpt_root, pos.step);
    if (main_rank) {
      TensorMap trainer = opt.state();
      for (auto& kv : rng_state()) trainer.push_back(kv);
      if (ema)
        for (auto& kv : ema->state()) trainer.push_back(kv);
      nlohmann::json meta = {{"epoch", pos.epoch},         {"micro", pos.micro},
                             {"nan_rollbacks", pos.nan_rollbacks},
                             {"total_steps", total_steps}, {"run", run},
                             {"best", best_to_json(best)}, {"task", task.checkpoint_meta()},
                             {"config", ctx.config_yaml},  {"why", why}};
      const std::string written = run_checkpoint_save(ckpt_root, pos.step, task.model_state(),
                                                      trainer, meta, o.keep_last());
      EVAX_ASSERT(written == dir, "checkpoint written to ", written, ", expected ", dir);
      log_info("checkpoint ", dir, " (", why, ")");
    }
    if (ctx.comm) ctx.comm->barrier();
    return dir;
  };
  auto restore = [&](const RunCheckpoint& s) {
    task.load_model_state(s.model);
    opt.load_state(s.trainer);
    set_rng_state(s.trainer, s.dir);
    if (ema) ema->load_state(s.trainer, s.dir);
    best = best_from_json(s.meta);
    pos.step = s.meta.at("step").get<int64_t>();
    pos.epoch = s.meta.at("epoch").get<int64_t>();
    pos.micro = s.meta.at("micro").get<int64_t>();
    pos.nan_rollbacks = s.meta.value("nan_rollbacks", 0);
  };

  // Resume or start fresh. Every rank resolves the same directory (the run directory is shared).
  std::string resume_dir;
  if (o.resume() == "auto") {
    if (auto latest = run_checkpoint_find_latest(ckpt_root)) resume_dir = *latest;
  } else if (!o.resume().empty()) {
    resume_dir = o.resume();
  } else if (run_checkpoint_find_latest(ckpt_root)) {
    raise<ConfigError>("run directory '", ctx.run_dir, "' already has checkpoints: pass --resume auto ",
                       "to continue it, or choose another --run-dir");
  }
  // No rank writes before every rank has looked at the run directory (else a fast rank 0's
  // "start" checkpoint could make a slower rank refuse the run as one that already has them).
  if (ctx.comm) ctx.comm->barrier();
  FitResult result;
  std::string last_ckpt;  // the rollback target, the same path on every rank
  const bool resumed = !resume_dir.empty();
  if (resumed) {
    RunCheckpoint s = run_checkpoint_load(resume_dir);
    check_same_run(s.meta, run, resume_dir);
    restore(s);
    last_ckpt = resume_dir;
    log_info("resumed from ", resume_dir, " at step ", pos.step, " (epoch ", pos.epoch, ", batch ",
             pos.micro, ")");
  } else {
    last_ckpt = save("start");  // the rollback target before the first regular checkpoint
  }

  std::unique_ptr<TensorBoardWriter> tb;
  std::unique_ptr<MetricsCsv> csv;
  if (main_rank) {
    tb = std::make_unique<TensorBoardWriter>(ctx.run_dir + "/tensorboard");
    csv = std::make_unique<MetricsCsv>(ctx.run_dir + "/metrics.csv", pos.step);
  }
  const int64_t stop_step =
      o.max_steps() >= 0 ? std::min(o.max_steps(), total_steps) : total_steps;
  ProgressOptions po;
  po.unit = "step";
  po.silent = !main_rank;
  Progress bar("train", stop_step, po);
  bar.set(pos.step);

  // The evaluation hook: raw weights, then the EMA's; logs; best/; early stopping.
  auto run_evaluation = [&] {
    std::map<std::string, double> m;
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    at::Tensor gen_state;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen_state = gen.get_state();
    }
    m = task.evaluate(pos.epoch);
    if (ema && o.ema().evaluate()) {
      ema->swap();
      for (const auto& kv : task.evaluate(pos.epoch)) m["ema/" + kv.first] = kv.second;
      ema->swap();
    }
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_state(gen_state);
    }
    result.last_eval = m;
    if (main_rank) {
      std::map<std::string, double> row;
      for (const auto& kv : m) row["eval/" + kv.first] = kv.second;
      csv->write(pos.step, row);
      for (const auto& kv : row) tb->scalar(kv.first, kv.second, pos.step);
      tb->flush();
      std::string line;
      for (const auto& kv : m) {
        const std::string base = kv.first.rfind("ema/", 0) == 0 ? kv.first.substr(4) : kv.first;
        if (base.find('/') == std::string::npos) line += " " + kv.first + " " + str_cat(kv.second);
      }
      log_info("eval epoch ", pos.epoch, " step ", pos.step, ":", line);
    }
    if (eo.metric().empty()) return;
    auto it = m.find(eo.metric());
    if (it == m.end()) {
      std::string keys;
      for (const auto& kv : m) keys += (keys.empty() ? "" : ", ") + kv.first;
      raise<ConfigError>("eval.metric = '", eo.metric(), "' is not among the evaluation's metrics (",
                         keys, ")");
    }
    const double v = it->second;
    const bool max = eo.mode() == "max";
    const bool improved = std::isfinite(v) &&
                          (std::isnan(best.value) || (max ? v > best.value + eo.min_delta()
                                                          : v < best.value - eo.min_delta()));
    if (improved) {
      best.value = v, best.step = pos.step, best.since = 0;
      const std::string dir = ckpt_root + "/best";
      if (main_rank) {
        if (select_ema) ema->swap();
        TensorMap weights = task.model_state();
        if (select_ema) ema->swap();
        nlohmann::json metrics = nlohmann::json::object();
        for (const auto& kv : m)
          metrics[kv.first] = std::isfinite(kv.second) ? nlohmann::json(kv.second) : nlohmann::json();
        nlohmann::json meta = {{"step", pos.step},      {"epoch", pos.epoch},
                               {"metric", eo.metric()}, {"value", v},
                               {"mode", eo.mode()},     {"weights", select_ema ? "ema" : "raw"},
                               {"metrics", metrics},    {"task", task.checkpoint_meta()},
                               {"run", run},            {"config", ctx.config_yaml},
                               {"why", "best"}};
        run_checkpoint_save_at(dir, weights, TensorMap{}, meta);
        log_info("best ", eo.metric(), " ", v, " at step ", pos.step, ": ", dir);
      }
      if (ctx.comm) ctx.comm->barrier();
    } else {
      ++best.since;
      if (eo.patience() > 0 && best.since >= eo.patience()) {
        best.stopped = true;
        log_info("early stopping: ", eo.metric(), " has not improved on ", best.value, " (step ",
                 best.step, ") for ", best.since, " evaluations (patience ", eo.patience(), ")");
      }
    }
  };
  auto eval_due = [&] {
    return evaluating && (pos.epoch >= o.epochs() || (eo.every() > 0 && pos.epoch % eo.every() == 0));
  };
  if (best.stopped) log_info("this run stopped early at step ", pos.step, ": nothing left to train");

  // Preemption: `saved` when this step's checkpoint is already written. Every rank gets here at
  // the same step (the flag travels with the step's all-reduce); the checkpoint is the ordinary
  // resumable one, and further signals meanwhile are only counted.
  bool stop_agreed = false;
  auto stop_preempted = [&](bool saved) {
    if (!saved) last_ckpt = save("preempted");
    const int sig = preempt.signal();
    const std::string why = sig ? signal_name(sig) : std::string("a signal to another rank");
    log_warn("preempted by ", why, " after step ", pos.step, ": checkpoint ", last_ckpt, " written (",
             preempt.count(), " signal", preempt.count() == 1 ? "" : "s", " received on this rank)");
    raise<Preempted>("preempted by ", why, " after step ", pos.step, "; checkpoint ", last_ckpt,
                     " written, continue with --resume auto");
  };

  std::map<std::string, double> window;
  int64_t window_n = 0, window_samples = 0;
  auto window_start = std::chrono::steady_clock::now();
  bool first_window = true;
  bool injected = false;

  // A position with less than one step left in its epoch is the start of the next epoch.
  auto epoch_done = [&] { return pos.micro + o.accum_steps() > micro_per_epoch; };
  while (pos.step < stop_step && !best.stopped) {
    if (epoch_done()) ++pos.epoch, pos.micro = 0;
    task.start_epoch(pos.epoch, pos.micro);
    while (pos.step < stop_step && !epoch_done()) {
      if (pos.step == fail_hook.step && rank == fail_hook.rank && !resumed) {
        std::fprintf(stderr, "evax: EVAX_TEST_FAIL_AT_STEP=%lld: rank %d exits abruptly\n",
                     static_cast<long long>(pos.step), rank);
        std::_Exit(1);
      }
      const double lr = schedule.at(pos.step, pos.epoch, pos.micro);
      const double wd = cosine_schedule(opt_opts.weight_decay(), wd_end, pos.step, total_steps, 0);
      opt.zero_grad();
      double loss_sum = 0;
      int64_t samples = 0;
      std::map<std::string, double> extra;
      for (int64_t a = 0; a < o.accum_steps(); ++a) {
        MicroStep ms = task.forward_micro();
        torch::Tensor loss = ms.loss;
        if (!injected && pos.step == o.inject_nan_step()) {
          loss = loss * std::numeric_limits<float>::quiet_NaN();
          injected = true;
        }
        (loss / static_cast<double>(o.accum_steps())).backward();
        loss_sum += loss.item<double>();
        samples += ms.samples;
        for (const auto& kv : ms.logs) extra[kv.first] += kv.second / o.accum_steps();
      }
      pos.micro += o.accum_steps();
      double mean_loss = loss_sum / o.accum_steps();
      double bad = std::isfinite(mean_loss) ? 0.0 : 1.0;
      // A preemption signal seen by now on any rank stops every rank after this step.
      stop_agreed = preempt.signal() != 0;
      if (ctx.comm && world > 1) {
        // One max-reduce: any rank's NaN, any rank's preemption signal, and (as max and -min) the
        // log key sets, which must agree before the logs are reduced as one tensor.
        const double n = static_cast<double>(extra.size()), h = keys_hash(extra);
        const double stop = stop_agreed ? 1.0 : 0.0;
        std::vector<at::Tensor> t{at::tensor({bad, n, -n, h, -h, stop}, at::kDouble)};
        ctx.comm->all_reduce(t, ReduceOp::kMax);
        auto v = t[0].accessor<double, 1>();
        bad = v[0];
        stop_agreed = v[5] > 0;
        EVAX_CHECK(DistError, v[1] == -v[2] && v[3] == -v[4], "step ", pos.step,
                   ": the ranks' tasks returned different log keys (rank ", rank, ": ", n, " keys)");
      }
      if (bad > 0) {
        ++pos.nan_rollbacks;
        const Position skip_to = pos;  // the data position after the offending batch
        log_warn("non-finite loss at step ", pos.step, " (rollback ", pos.nan_rollbacks, " of ",
                 o.max_nan_rollbacks(), "): restoring ", last_ckpt, " and skipping the batch");
        if (pos.nan_rollbacks > o.max_nan_rollbacks())
          raise<DataError>("loss was NaN/Inf ", pos.nan_rollbacks, " times (max_nan_rollbacks = ",
                           o.max_nan_rollbacks(), "); last at step ", pos.step);
        opt.zero_grad();
        restore(run_checkpoint_load(last_ckpt));
        // Continue from the restored weights but past the bad batch.
        pos.epoch = skip_to.epoch;
        pos.micro = skip_to.micro;
        pos.nan_rollbacks = skip_to.nan_rollbacks;
        task.start_epoch(pos.epoch, pos.micro);
        continue;
      }
      if (reducer) reducer->reduce();
      const double gnorm = opt.clip_grad_norm(opt_opts.clip_grad());
      opt.set_lr(lr);
      if (wd_scheduled) opt.set_weight_decay(wd);
      opt.step();
      ++pos.step;
      if (ema) ema->update(pos.step);
      bar.set(pos.step);

      if (ctx.comm && world > 1) {
        // Loss and task logs: plain means over ranks (every rank has the same batch).
        std::vector<double> vals{mean_loss};
        for (const auto& kv : extra) vals.push_back(kv.second);
        std::vector<at::Tensor> t{at::tensor(vals, at::kDouble)};
        ctx.comm->all_reduce_sum(t);
        auto v = t[0].accessor<double, 1>();
        mean_loss = v[0] / world;
        int64_t k = 1;
        for (auto& kv : extra) kv.second = v[k++] / world;
      }
      window["loss"] += mean_loss;
      window["grad_norm"] += gnorm;
      for (const auto& kv : extra) window[kv.first] += kv.second;
      ++window_n;
      window_samples += samples;
      if (pos.step % o.log_every() == 0 || pos.step == stop_step) {
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - window_start).count();
        std::map<std::string, double> row;
        for (const auto& kv : window) row[kv.first] = kv.second / window_n;
        row["lr"] = lr;
        row["wd"] = wd;
        row["images_per_s"] = secs > 0 ? window_samples * world / secs : 0.0;
        row["epoch"] = static_cast<double>(pos.epoch);
        if (first_window) result.first_loss = row["loss"], first_window = false;
        result.last_loss = row["loss"];
        if (main_rank) {
          csv->write(pos.step, row);
          for (const auto& kv : row) tb->scalar("train/" + kv.first, kv.second, pos.step);
          tb->flush();
          std::string line;
          for (const char* k : {"loss", "lr", "grad_norm", "images_per_s"})
            line += std::string(" ") + k + " " + str_cat(row[k]);
          for (const auto& kv : extra) line += " " + kv.first + " " + str_cat(row[kv.first]);
          log_info("step ", pos.step, "/", stop_step, " epoch ", pos.epoch, line);
        }
        window.clear();
        window_n = window_samples = 0;
        window_start = std::chrono::steady_clock::now();
      }
      const bool interval =
          o.checkpoint_every() > 0 && pos.step % o.checkpoint_every() == 0 && pos.step < stop_step;
      if (interval) last_ckpt = save("interval");
      // At an epoch's last step the epoch end (evaluation, its checkpoint) comes first, and at the
      // last step the final checkpoint: a resumed run then decides exactly as an uninterrupted one.
      if (stop_agreed && !epoch_done() && pos.step < stop_step) stop_preempted(interval);
    }
    if (epoch_done()) {
      ++pos.epoch, pos.micro = 0;
      if (eval_due()) run_evaluation();
      if (best.stopped) break;
      if (pos.step < stop_step) {
        last_ckpt = save("epoch end");
        if (stop_agreed) stop_preempted(true);
      }
    }
  }
  bar.finish();
  last_ckpt = save(best.stopped ? "early stop" : pos.step == total_steps ? "end" : "max_steps");
  // A signal after the last step's all-reduce: the ranks agree once more, so that all of them
  // (not some) stop before the command's work after training.
  stop_agreed = stop_agreed || preempt.signal() != 0;
  if (ctx.comm && world > 1) {
    std::vector<at::Tensor> t{at::tensor({stop_agreed ? 1.0 : 0.0}, at::kDouble)};
    ctx.comm->all_reduce(t, ReduceOp::kMax);
    stop_agreed = t[0].item<double>() > 0;
  }
  if (stop_agreed) stop_preempted(true);
  result.best_value = best.value;
  result.best_step = best.step;
  result.stopped_early = best.stopped;
  if (best.step >= 0) result.best_checkpoint = ckpt_root + "/best";
  result.steps = pos.step;
  result.nan_rollbacks = pos.nan_rollbacks;
  result.last_checkpoint = last_ckpt;
  return result;
}

}  // namespace evax
