// evax demo: the main job on the embedded default (synthetic chest X-rays). Today it generates the
// dataset into the run directory; the pretrain, finetune, evaluate and Grad-CAM stages join it as
// those pipelines land.
#include "commands.h"
#include "evax/core/log.h"
#include "evax/data/synth.h"
#include "evax/data/synth_config.h"

namespace evax::app {

SynthSummary run_synth(const SynthOptions& o);
void log_synth_summary(const SynthSummary& s, const std::string& out);

int cmd_demo(const Args& args) {
  RunArgs ra;
  ArgParser p("demo",
              "Run the main job on the embedded default: generate synthetic chest X-rays into\n"
              "<run-dir>/data (config: configs/demo.yaml). Later stages are added as they land.");
  add_run_args(p, ra);
  if (!p.parse(args)) return 0;
  Config cfg = load_run_config(ra, "demo.yaml");
  SynthOptions so = synth_options_from_config(cfg.view("synth"));
  cfg.reject_unknown();  // before any work: a typo never runs with defaults
  std::string dir = start_run(ra, cfg);
  so.out_dir = dir + "/data";
  log_info("stage 1/1: synthetic chest X-rays (", so.n, " images at ", so.size, "x", so.size,
           ", seed ", so.seed, ")");
  log_synth_summary(run_synth(so), so.out_dir);
  log_info("done: ", dir);
  return 0;
}

}  // namespace evax::app
