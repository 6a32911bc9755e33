// evax cam: Grad-CAM heat maps of a finetuned classifier for images, DICOMs, folders, or
// pre-normalised pixel tensors.
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>

#include "commands.h"
#include "evax/core/csv.h"
#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/core/progress.h"
#include "evax/core/strings.h"
#include "evax/eval/report_files.h"
#include "evax/explain/cam.h"
#include "evax/explain/render.h"
#include "evax/io/image.h"
#include "evax/io/safetensors.h"
#include "evax/train/autocast.h"

namespace fs = std::filesystem;

namespace evax::app {

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// The grey image the model saw under the crop transform (de-normalised first channel).
cv::Mat model_view(const torch::Tensor& input, double mean, double std) {
  auto g = (input[0] * std + mean).clamp(0, 1).to(torch::kFloat32).contiguous();
  return cv::Mat(static_cast<int>(g.size(0)), static_cast<int>(g.size(1)), CV_32F, g.data_ptr<float>())
      .clone();
}

}  // namespace

int cmd_cam(const Args& args) {
  std::string checkpoint, model, out, cls, method = "gradcam", device = "auto", resize = "bicubic";
  std::vector<std::string> inputs, positional, layers;
  int64_t batch = 16, image_size = 0;
  double mean = std::numeric_limits<double>::quiet_NaN(), std = mean;
  bool crop = false, bf16 = false;
  ArgParser p("cam",
              "Grad-CAM heat maps of a finetuned classifier, computed as the grad-cam package\n"
              "(pytorch-grad-cam) does for a ViT with EVA-X's reshape transform: target layer\n"
              "blocks.<last>.norm1 by default, raw class logit, ReLU, per-image min-max scaling,\n"
              "bilinear resize to the input. INPUTs are images, DICOMs or folders (searched\n"
              "recursively); each is resized to the checkpoint's size × size WITHOUT centre crop\n"
              "(so the map covers the whole image; --crop: the evaluation transform) and normalised\n"
              "with its mean/std. Writes into --out DIR: heatmaps/<name>.png (JET, input size),\n"
              "overlays/<name>.png (on the original image, map resized to it; with --crop on the\n"
              "model's view), cams.safetensors (`cam` [N,S,S] float32, `class`, `logits`; the\n"
              "paths in its metadata) and index.csv (path, class, score = the class probability).\n"
              "Default class: each image's top one.\n"
              "With --input X.safetensors (`pixel_values` [N,3,H,W], normalised, as evax embed\n"
              "takes) and --out Y.safetensors, writes `cam` [N,H,W] float32 (and `logits`) for\n"
              "--class (required then).\n"
              "--bf16 runs the forward and backward passes under bf16 autocast; the maps are\n"
              "computed from the activations and gradients in float32.");
  p.option("--checkpoint", &checkpoint, "K",
           "an evax classifier checkpoint (directory, run directory) or, with --model, any "
           "weight file with a classifier head");
  p.required("--checkpoint");
  p.option("--model", &model, "NAME", "registered model, for a checkpoint without meta.json");
  p.option("--input", &inputs, "INPUT", "image, DICOM, folder or .safetensors");
  p.option("--out", &out, "DIR|FILE", "output folder (a .safetensors for pixel_values input)");
  p.required("--out");
  p.option("--class", &cls, "NAME|INDEX", "class to explain (default: each image's top class)");
  p.option("--method", &method, "M", "gradcam or gradcam++");
  p.option("--layer", &layers, "NAME",
           "target layer: blocks.<i>.norm1, blocks.<i>.norm2 or blocks.<i>; several are "
           "averaged as the package does (none: blocks.<last>.norm1)");
  p.option("--batch-size", &batch, "N", "images per forward/backward pass");
  p.option("--device", &device, "DEV", "auto, cpu or cuda");
  p.option("--image-size", &image_size, "N", "input side, a multiple of 16; 0 = the checkpoint's");
  p.option("--resize", &resize, "R", "bicubic (PIL-like, antialiased) or bilinear (EVA-X cam)");
  p.option("--mean", &mean, "X", "normalisation mean; nan = the checkpoint's");
  p.option("--std", &std, "Y", "normalisation std; nan = the checkpoint's");
  p.flag("--crop", &crop, "use the evaluation transform (resize shorter side, centre crop)");
  p.flag("--bf16", &bf16, "bf16 autocast (CPU: fast with AVX512-BF16/AMX)");
  p.positional("INPUT", &positional, "more inputs");
  if (!p.parse(args)) return 0;
  inputs.insert(inputs.end(), positional.begin(), positional.end());
  if (inputs.empty()) raise<UsageError>("evax cam: give at least one --input");
  if (batch < 1) raise<UsageError>("evax cam: --batch-size must be >= 1");
  if (device != "auto" && device != "cpu" && device != "cuda")
    raise<UsageError>("evax cam: --device must be auto, cpu or cuda");
  if (image_size < 0 || image_size % 16)
    raise<UsageError>("evax cam: --image-size must be a positive multiple of 16, got ", image_size);
  const GradCamOptions cam_opts = GradCamOptions().method(method).layers(layers);
  const CamInputOptions in =
      CamInputOptions().resize(resize).crop(crop).mean(mean).std(std).size(image_size);

  LoadedClassifier c = cam_classifier_load(checkpoint, model, device, image_size);
  std::vector<int64_t> classes;
  if (!cls.empty()) classes.push_back(cam_class_index(c.spec, cls));

  // Pixel tensors in, a tensor out.
  if (inputs.size() == 1 && ends_with(inputs[0], ".safetensors")) {
    if (!ends_with(out, ".safetensors"))
      raise<UsageError>("evax cam: a .safetensors input needs --out Y.safetensors");
    if (classes.empty())
      raise<UsageError>("evax cam: a .safetensors input needs --class NAME|INDEX");
    TensorMap t = safetensors_load(inputs[0]);
    const at::Tensor* pv = find(t, "pixel_values");
    if (!pv) raise<DataError>("'", inputs[0], "' has no tensor `pixel_values`");
    if (pv->dim() != 4 || pv->size(1) != 3 || pv->size(0) == 0 || pv->size(2) % 16 ||
        pv->size(3) % 16)
      raise<DataError>("'", inputs[0], "': pixel_values must be (N, 3, H, W) with N > 0 and H, W "
                       "multiples of 16, got ", pv->sizes());
    GradCamResult r;
    {
      Autocast ac(bf16, c.device.type());
      r = cam_pixels(c, pv->to(torch::kFloat32), classes, cam_opts, batch);
    }
    safetensors_save(out, TensorMap{{"cam", r.maps.contiguous()}, {"logits", r.logits.contiguous()}},
                     {{"model", c.spec.model},
                      {"checkpoint", c.weights},
                      {"class", c.spec.classes[static_cast<size_t>(classes[0])]},
                      {"method", method},
                      {"precision", bf16 ? "bf16 autocast" : "float32"}});
    log_info("wrote cam ", r.maps.sizes(), " to ", out);
    return 0;
  }

  const std::vector<std::string> paths = collect_images(inputs);
  log_info(c.spec.model, " (", c.spec.classes.size(), " classes) from ", c.weights, ": ",
           paths.size(), " images, ", method);
  fs::create_directories(fs::path(out) / "heatmaps");
  fs::create_directories(fs::path(out) / "overlays");
  std::string csv = "index,path,class,class_index,score,heatmap,overlay\n";
  std::vector<torch::Tensor> maps, logits, chosen;
  std::map<std::string, int> seen;  // the same stem in several folders: numbered
  ProgressOptions po;
  po.unit = "img";
  Progress bar("cam", static_cast<int64_t>(paths.size()), po);
  const double m_used = std::isnan(mean) ? c.spec.mean : mean;
  const double s_used = std::isnan(std) ? c.spec.std : std;
  for (size_t start = 0; start < paths.size(); start += static_cast<size_t>(batch)) {
    const size_t end = std::min(paths.size(), start + static_cast<size_t>(batch));
    std::vector<cv::Mat> units;
    for (size_t i = start; i < end; ++i) units.push_back(image_read_unit(paths[i], {}));
    GradCamResult r;
    {
      Autocast ac(bf16, c.device.type());
      r = cam_units(c, units, classes, in, cam_opts);
    }
    const torch::Tensor scores = cam_class_scores(c.spec, r.logits, r.classes);
    for (size_t i = start; i < end; ++i) {
      const int64_t j = static_cast<int64_t>(i - start);
      const cv::Mat map = cam_to_mat(r.maps[j]);
      std::string stem = fs::path(paths[i]).stem().string();
      if (int n = seen[stem]++; n > 0) stem += "_" + std::to_string(n);
      const std::string heat = (fs::path(out) / "heatmaps" / (stem + ".png")).string();
      const std::string over = (fs::path(out) / "overlays" / (stem + ".png")).string();
      image_write_png(heat, cam_heatmap(map));
      const cv::Mat base = crop ? model_view(cam_input(units[j], c.spec, in), m_used, s_used)
                                : units[j];
      image_write_png(over, cam_overlay(base, map));
      const int64_t k = r.classes[j].item<int64_t>();
      csv += std::to_string(i) + "," + csv_field(paths[i]) + "," +
             csv_field(c.spec.classes[static_cast<size_t>(k)]) + "," + std::to_string(k) + "," +
             format_double_exact(scores[j].item<double>()) + "," + csv_field(heat) + "," +
             csv_field(over) + "\n";
    }
    maps.push_back(r.maps), logits.push_back(r.logits), chosen.push_back(r.classes);
    bar.advance(static_cast<int64_t>(end - start));
  }
  bar.finish();
  safetensors_save((fs::path(out) / "cams.safetensors").string(),
                   TensorMap{{"cam", torch::cat(maps).contiguous()},
                             {"class", torch::cat(chosen).contiguous()},
                             {"logits", torch::cat(logits).contiguous()}},
                   {{"model", c.spec.model},
                    {"checkpoint", c.weights},
                    {"method", method},
                    {"precision", bf16 ? "bf16 autocast" : "float32"},
                    {"classes", join_with(c.spec.classes, "\n")},
                    {"inputs", join_with(paths, "\n")}});
  write_file_atomic((fs::path(out) / "index.csv").string(), csv);
  log_info("wrote ", paths.size(), " heat maps, overlays, cams.safetensors and index.csv to ", out);
  return 0;
}

}  // namespace evax::app
