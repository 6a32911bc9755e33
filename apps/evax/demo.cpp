// evax demo: the main job on the embedded default. Generates synthetic chest X-rays into the run
// directory, then pretrains a small EVA-X student on them (MIM). Finetuning, evaluation and
// Grad-CAM stages join as those pipelines land.
#include "commands.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/data/synth.h"
#include "evax/data/synth_config.h"
#include "pretrain_run.h"

namespace evax::app {

SynthSummary run_synth(const SynthOptions& o);
void log_synth_summary(const SynthSummary& s, const std::string& out);

int cmd_demo(const Args& args) {
  RunArgs ra;
  ArgParser p("demo",
              "Run the main job on the embedded default (config: configs/demo.yaml):\n"
              "  1. synthetic chest X-rays into <run-dir>/data (evax synth)\n"
              "  2. MIM pretraining of a small EVA-X student on them (evax pretrain)");
  add_run_args(p, ra);
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "demo.yaml");
  ra.run_dir = run_dir_resolve(ra.run_dir, cfg.name());
  cfg.apply_override("data.manifest=" + ra.run_dir + "/data/pretrain.csv");
  // Before any work, and unknown keys before bad values: a typo never runs with defaults.
  auto [so, plan] = cfg.decode_all([](Config& c) {
    return std::make_pair(synth_options_from_config(c.view("synth")), pretrain_plan(c));
  });
  so.out_dir = ra.run_dir + "/data";
  const std::string dir = start_run(ra, cfg);

  log_info("stage 1/2: synthetic chest X-rays (", so.n, " images at ", so.size, "x", so.size,
           ", seed ", so.seed, ")");
  log_synth_summary(run_synth(so), so.out_dir);
  log_info("stage 2/2: MIM pretraining");
  DistEnv single;
  FitResult r = pretrain_execute(plan, dir, single, nullptr, cfg.dump());
  log_info("done: ", dir, " (masked cosine loss ", r.first_loss, " → ", r.last_loss, ")");
  return 0;
}

}  // namespace evax::app
