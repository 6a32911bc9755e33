// evax synth: the synthetic chest X-ray generator.
#include <memory>

#include "commands.h"
#include "evax/core/log.h"
#include "evax/core/progress.h"
#include "evax/data/synth.h"
#include "evax/data/synth_config.h"

namespace evax::app {

void log_synth_summary(const SynthSummary& s, const std::string& out) {
  log_info("wrote ", s.images, " images of ", s.patients, " patients to ", out, " in ", s.seconds,
           " s (", s.seconds > 0 ? s.images / s.seconds : 0.0, " img/s)");
  log_info("splits (images): train ", s.split_images[0], ", val ", s.split_images[1], ", test ",
           s.split_images[2]);
  std::string counts;
  for (int f = 0; f < kSynthFindings; ++f)
    counts += std::string(f ? ", " : "") + synth_finding_name(f) + " " + std::to_string(s.positives[f]);
  log_info("positives: ", counts, "; No Finding ", s.no_finding);
}

SynthSummary run_synth(const SynthOptions& o) {
  ProgressOptions po;
  po.unit = "img";
  Progress bar("synth", static_cast<int64_t>(o.n), po);
  SynthSummary s = synth_generate(o, [&bar](size_t done, size_t) { bar.set(done); });
  bar.finish();
  return s;
}

int cmd_synth(const Args& args) {
  SynthOptions o;
  int64_t n = static_cast<int64_t>(o.n), size = o.size, seed = 0, threads = 0;
  bool no_dicom = false, no_png = false;
  ArgParser p("synth",
              "Generate phantom chest radiographs with known findings (Cardiomegaly, Effusion,\n"
              "Nodule + box, Pneumothorax + mask, Consolidation + mask) as 16-bit DICOM and 8-bit\n"
              "PNG, lung masks, and manifests split by patient. The same seed gives identical files.");
  p.option("--out", &o.out_dir, "DIR", "output directory").required();
  p.option("--n", &n, "N", "number of images");
  p.option("--size", &size, "S", "image side in pixels (multiple of 16, >= 64)");
  p.option("--seed", &seed, "K", "random seed");
  p.option("--threads", &threads, "T", "worker threads (0 = all cores)");
  p.option("--conspicuity", &o.conspicuity, "C",
           "findings larger and denser by C in [1, 4] (1 = subtle, as published)");
  p.flag("--no-dicom", &no_dicom, "skip the DICOM files");
  p.flag("--no-png", &no_png, "skip the PNG files");
  if (!p.parse(args)) return 0;
  if (n < 1) raise<UsageError>("evax synth: --n must be >= 1, got ", n);
  if (seed < 0) raise<UsageError>("evax synth: --seed must be >= 0, got ", seed);
  if (threads < 0) raise<UsageError>("evax synth: --threads must be >= 0, got ", threads);
  if (size < 64 || size % 16 != 0 || size > 8192)
    raise<UsageError>("evax synth: --size must be a multiple of 16 in [64, 8192], got ", size);
  if (no_dicom && no_png) raise<UsageError>("evax synth: --no-dicom and --no-png together write nothing");
  o.n = static_cast<size_t>(n);
  o.size = static_cast<int>(size);
  o.seed = static_cast<uint64_t>(seed);
  o.threads = static_cast<int>(threads);
  o.write_dicom = !no_dicom;
  o.write_png = !no_png;
  synth_validate(o);
  log_synth_summary(run_synth(o), o.out_dir);
  return 0;
}

}  // namespace evax::app
