// evax predict: per-image probabilities from a finetuned checkpoint, or masks and overlays from a
// segmentation checkpoint, from the checkpoint alone (no config).
#include <filesystem>
#include <iostream>
#include <map>

#include "commands.h"
#include "evax/classify/predict.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/core/strings.h"
#include "evax/eval/report_files.h"
#include "evax/io/image.h"
#include "evax/segment/predict.h"
#include "evax/train/autocast.h"
#include "evax/train/run_checkpoint.h"

namespace fs = std::filesystem;

namespace evax::app {

namespace {

// Masks and overlays of a segmentation checkpoint into `out` (a folder), plus a CSV of the
// foreground fraction of every class per image.
int predict_segmentation(const std::string& checkpoint, const std::string& device,
                         const std::vector<std::string>& inputs, std::string out, bool bf16) {
  if (out.empty()) raise<UsageError>("evax predict: a segmentation checkpoint needs --out DIR");
  LoadedSegmenter s = segmenter_load(checkpoint, device);
  const std::vector<std::string> paths = collect_images(inputs);
  log_info(s.spec.model, " (classes ", join_with(s.spec.classes), ") from ", s.weights, ": ",
           paths.size(), " images");
  fs::create_directories(fs::path(out) / "masks");
  fs::create_directories(fs::path(out) / "overlays");
  std::string csv = "path,mask,overlay";
  for (size_t c = 1; c < s.spec.classes.size(); ++c) csv += "," + csv_field("fraction_" + s.spec.classes[c]);
  csv += "\n";
  std::map<std::string, int> seen;  // same stem in several folders: numbered
  for (const auto& path : paths) {
    cv::Mat unit = image_read_unit(path, {});
    SegPrediction p = segment_predict_image(*s.model, s.spec, unit, s.device, bf16);
    std::string stem = fs::path(path).stem().string();
    if (int n = seen[stem]++; n > 0) stem += "_" + std::to_string(n);
    const std::string mask_path = (fs::path(out) / "masks" / (stem + ".png")).string();
    const std::string overlay_path = (fs::path(out) / "overlays" / (stem + ".png")).string();
    image_write_png(mask_path, segmentation_mask_png(p.classes, static_cast<int64_t>(s.spec.classes.size())));
    image_write_png(overlay_path, segmentation_overlay(unit, p.classes));
    csv += csv_field(path) + "," + csv_field(mask_path) + "," + csv_field(overlay_path);
    const double n = static_cast<double>(p.classes.numel());
    for (size_t c = 1; c < s.spec.classes.size(); ++c)
      csv += "," + format_double_exact((p.classes == static_cast<int64_t>(c)).sum().item<double>() / n);
    csv += "\n";
  }
  write_file_atomic((fs::path(out) / "predictions.csv").string(), csv);
  log_info("wrote ", paths.size(), " masks and overlays and predictions.csv to ", out);
  return 0;
}

}  // namespace

int cmd_predict(const Args& args) {
  std::string checkpoint, out, device = "auto";
  int64_t batch = 32;
  bool bf16 = false;
  std::vector<std::string> inputs;
  ArgParser p("predict",
              "Per-image class probabilities from a finetuned checkpoint (its meta.json holds the\n"
              "classes and the input convention; no config needed). INPUTs are images, DICOMs or\n"
              "folders (searched recursively). Writes a CSV: path, then one column per class.\n"
              "A segmentation checkpoint (evax segment) writes into --out DIR: masks/<name>.png\n"
              "(0/255 for one class, else class ids), overlays/<name>.png and predictions.csv\n"
              "(foreground fraction per class).");
  p.option("--checkpoint", &checkpoint, "K",
           "a checkpoint directory (e.g. <run>/checkpoints/best) or a run directory");
  p.required("--checkpoint");
  p.option("--out", &out, "FILE|DIR",
           "CSV to write (default: standard output); a folder for segmentation");
  p.option("--batch-size", &batch, "N", "images per forward pass");
  p.option("--device", &device, "DEV", "auto, cpu or cuda");
  p.flag("--bf16", &bf16,
         "bf16 autocast on any device (CPU: fast with AVX512-BF16/AMX; a classifier on CUDA "
         "always uses it)");
  p.positional("INPUT", &inputs, "image files, DICOMs or folders").required();
  if (!p.parse(args)) return 0;
  if (batch < 1) raise<UsageError>("--batch-size must be >= 1");
  if (device != "auto" && device != "cpu" && device != "cuda")
    raise<UsageError>("--device must be auto, cpu or cuda");
  if (checkpoint_task_meta(run_weights_path(checkpoint), "evax predict").value("kind", "") ==
      "segmenter")
    return predict_segmentation(checkpoint, device, inputs, out, bf16);
  LoadedClassifier c = classifier_load(checkpoint, device);
  const std::vector<std::string> paths = collect_images(inputs);
  log_info(c.spec.model, " (", c.spec.classes.size(), " classes) from ", c.weights, ": ",
           paths.size(), " images");
  torch::Tensor probs;
  {
    // classifier_predict autocasts on CUDA itself; this region adds the CPU (it nests).
    Autocast ac(bf16, c.device.type());
    probs = classifier_predict(c, paths, batch);
  }
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
