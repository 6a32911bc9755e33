// evax predict: per-image probabilities from a finetuned checkpoint alone (no config).
#include <iostream>

#include "commands.h"
#include "evax/classify/predict.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/eval/report_files.h"

namespace evax::app {

int cmd_predict(const Args& args) {
  std::string checkpoint, out, device = "auto";
  int64_t batch = 32;
  std::vector<std::string> inputs;
  ArgParser p("predict",
              "Per-image class probabilities from a finetuned checkpoint (its meta.json holds the\n"
              "classes and the input convention; no config needed). INPUTs are images, DICOMs or\n"
              "folders (searched recursively). Writes a CSV: path, then one column per class.");
  p.option("--checkpoint", &checkpoint, "K",
           "a checkpoint directory (e.g. <run>/checkpoints/best) or a run directory");
  p.required("--checkpoint");
  p.option("--out", &out, "FILE", "CSV to write (default: standard output)");
  p.option("--batch-size", &batch, "N", "images per forward pass");
  p.option("--device", &device, "DEV", "auto, cpu or cuda");
  p.positional("INPUT", &inputs, "image files, DICOMs or folders").required();
  if (!p.parse(args)) return 0;
  if (batch < 1) raise<UsageError>("--batch-size must be >= 1");
  if (device != "auto" && device != "cpu" && device != "cuda")
    raise<UsageError>("--device must be auto, cpu or cuda");
  LoadedClassifier c = classifier_load(checkpoint, device);
  const std::vector<std::string> paths = collect_images(inputs);
  log_info(c.spec.model, " (", c.spec.classes.size(), " classes) from ", c.weights, ": ",
           paths.size(), " images");
  torch::Tensor probs = classifier_predict(c, paths, batch);
  std::string csv = "path";
  for (const auto& name : c.spec.classes) csv += "," + csv_field(name);
  csv += "\n";
  auto a = probs.to(torch::kFloat64).contiguous();
  const double* v = a.data_ptr<double>();
  const size_t k = c.spec.classes.size();
  for (size_t i = 0; i < paths.size(); ++i) {
    csv += csv_field(paths[i]);
    for (size_t j = 0; j < k; ++j) csv += "," + format_double_exact(v[i * k + j]);
    csv += "\n";
  }
  if (out.empty()) {
    std::cout << csv;
  } else {
    write_file_atomic(out, csv);
    log_info("wrote ", out);
  }
  return 0;
}

}  // namespace evax::app
