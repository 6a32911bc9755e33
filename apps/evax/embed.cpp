// evax embed: the feature-extractor API. Token features and pooled features of images, DICOMs,
// folders of them, or pre-normalised pixel tensors, with any supported checkpoint.
#include <algorithm>
#include <filesystem>

#include "commands.h"
#include "evax/core/log.h"
#include "evax/core/progress.h"
#include "evax/data/preprocess.h"
#include "evax/io/image.h"
#include "evax/io/safetensors.h"
#include "evax/io/weight_file.h"
#include "evax/models/load.h"
#include "evax/segment/inference.h"
#include "evax/segment/predict.h"
#include "evax/train/autocast.h"
#include "evax/train/runtime.h"

namespace fs = std::filesystem;

namespace evax::app {
namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg" || ext == ".dcm" || ext == ".dicom";
}

}  // namespace

int cmd_embed(const Args& args) {
  std::string model_name, ckpt, input, out, device_name = "cpu";
  int64_t image_size = 0, batch_size = 16;
  bool bf16 = false;
  ArgParser p("embed",
              "Extract features: `tokens` = timm forward_features (EVA-X: last block output with\n"
              "cls; plain ViT: after the final norm) and `pooled` = timm forward_head(pre_logits).\n"
              "IN is an image (PNG/JPEG/DICOM), a folder of them, or a .safetensors holding\n"
              "`pixel_values` (B,3,H,W), already normalised. Images get the EVA-X evaluation\n"
              "transform (resize, centre crop, model normalisation). A checkpoint with a\n"
              "classifier head (e.g. from evax finetune) also gives `logits`.\n"
              "With a segmentation model (upernet_*) and a `pixel_values` input, writes\n"
              "`logits` (B, K, H, W) at the input's resolution (bilinear, align_corners false),\n"
              "as mmseg's whole-image inference does before thresholding.\n"
              "--bf16 runs the model under bf16 autocast (torch.autocast's policy: matmuls and\n"
              "attention in bf16, norms and softmax in float32); outputs are stored as float32.");
  p.option("--model", &model_name, "NAME", "registered model (eva_x_small_patch16, …)").required();
  p.option("--checkpoint", &ckpt, "CKPT", "weights (.pt/.pth/.ckpt/.safetensors, any naming)");
  p.option("--input", &input, "IN", "image, DICOM, folder or .safetensors").required();
  p.option("--out", &out, "OUT", "output .safetensors").required();
  p.option("--image-size", &image_size, "N", "input side, a multiple of 16 (default: model's)");
  p.option("--batch-size", &batch_size, "B", "images per forward pass");
  p.option("--device", &device_name, "DEV", "cpu, cuda or auto");
  p.flag("--bf16", &bf16,
         "bf16 autocast (CPU: fast with AVX512-BF16/AMX, ~1e-2 relative feature error)");
  if (!p.parse(args)) return 0;
  if (device_name != "auto" && device_name != "cpu" && device_name != "cuda")
    raise<UsageError>("evax embed: --device must be auto, cpu or cuda, got '", device_name, "'");
  const torch::Device device = select_device(device_name, 0);
  if (batch_size < 1) raise<UsageError>("evax embed: --batch-size must be >= 1");
  if (image_size < 0 || image_size % 16)
    raise<UsageError>("evax embed: --image-size must be a positive multiple of 16, got ", image_size);

  if (model_name.rfind("upernet_", 0) == 0) {
    if (fs::path(input).extension() != ".safetensors")
      raise<UsageError>("evax embed: a segmentation model takes --input X.safetensors "
                        "(pixel_values); for images use evax predict");
    TensorMap t = safetensors_load(input);
    const at::Tensor* pv = find(t, "pixel_values");
    if (!pv) raise<DataError>("'", input, "' has no tensor `pixel_values`");
    if (pv->dim() != 4 || pv->size(1) != 3 || pv->size(2) % 16 || pv->size(3) % 16)
      raise<DataError>("'", input, "': pixel_values must be (B, 3, H, W) with H, W multiples of "
                       "16, got ", pv->sizes());
    WeightLoadReport rep;
    UperNet net = upernet_for_checkpoint(model_name, ckpt, pv->size(2), &rep);
    if (!ckpt.empty()) log_info(ckpt, ": ", rep.summary());
    else log_warn("no --checkpoint: random weights");
    net->to(device);
    net->eval();
    torch::NoGradGuard ng;
    auto pixels = pv->to(torch::kFloat32);
    std::vector<torch::Tensor> logits;
    for (int64_t i = 0; i < pixels.size(0); i += batch_size) {
      auto x = pixels.slice(0, i, std::min(i + batch_size, pixels.size(0))).to(device);
      Autocast ac(bf16, device.type());
      logits.push_back(seg_whole_logits([&](const torch::Tensor& in) { return net->forward(in); }, x)
                           .to(torch::kFloat32)
                           .cpu());
    }
    auto all = torch::cat(logits);
    std::map<std::string, std::string> meta{{"model", model_name}};
    if (bf16) meta["precision"] = "bf16 autocast";
    if (!ckpt.empty()) meta["checkpoint"] = ckpt;
    safetensors_save(out, TensorMap{{"logits", all}}, meta);
    log_info("wrote logits ", all.sizes(), " to ", out);
    return 0;
  }

  const InputSpec spec = model_input_spec(model_name);
  const int64_t size = image_size > 0 ? image_size : spec.size;
  // A checkpoint with a classifier head (a finetuned one) also gives `logits`.
  int64_t num_classes = 0;
  if (!ckpt.empty()) {
    const TensorMap sd = weight_file_state_dict(weight_file_read(ckpt));
    if (const at::Tensor* head = find(sd, "head.weight"); head && head->dim() == 2)
      num_classes = head->size(0);
  }
  LoadedModel lm = model_load(model_name, ckpt, num_classes, size);
  if (!ckpt.empty()) log_info(ckpt, ": ", lm.report.summary());
  else log_warn("no --checkpoint: random weights");
  lm.model->to(device);
  lm.model->eval();
  torch::NoGradGuard ng;

  torch::Tensor pixels;
  std::vector<std::string> names;
  if (fs::path(input).extension() == ".safetensors") {
    TensorMap t = safetensors_load(input);
    const at::Tensor* pv = find(t, "pixel_values");
    if (!pv) raise<DataError>("'", input, "' has no tensor `pixel_values`");
    if (pv->dim() != 4 || pv->size(1) != 3)
      raise<DataError>("'", input, "': pixel_values must be (B, 3, H, W), got ", pv->sizes());
    pixels = pv->to(torch::kFloat32);
  } else {
    std::vector<fs::path> files;
    if (fs::is_directory(input)) {
      for (const auto& e : fs::recursive_directory_iterator(input))
        if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      if (files.empty()) raise<DataError>("no PNG/JPEG/DICOM files under '", input, "'");
    } else {
      if (!fs::exists(input)) raise<DataError>("input '", input, "' does not exist");
      files.push_back(input);
    }
    std::vector<torch::Tensor> items;
    for (const auto& f : files) {
      cv::Mat unit = image_read_unit(f.string(), {});
      items.push_back(eval_transform(unit, size, eval_crop_pct(size), spec.mean, spec.std));
      names.push_back(f.string());
    }
    pixels = torch::stack(items);
  }

  std::vector<torch::Tensor> tokens, pooled, logits;
  ProgressOptions po;
  po.unit = "img";
  Progress bar("embed", pixels.size(0), po);
  for (int64_t i = 0; i < pixels.size(0); i += batch_size) {
    auto x = pixels.slice(0, i, std::min(i + batch_size, pixels.size(0))).to(device);
    // Under autocast the features come out in bf16; they are stored as float32 either way.
    Autocast ac(bf16, device.type());
    auto t = lm.model->forward_features(x);
    tokens.push_back(t.to(torch::kFloat32).cpu());
    pooled.push_back(lm.model->forward_head(t, /*pre_logits=*/true).to(torch::kFloat32).cpu());
    if (num_classes > 0)
      logits.push_back(lm.model->forward_head(t, /*pre_logits=*/false).to(torch::kFloat32).cpu());
    bar.advance(x.size(0));
  }
  bar.finish();
  std::map<std::string, std::string> meta{{"model", model_name}, {"image_size", std::to_string(size)}};
  if (!ckpt.empty()) meta["checkpoint"] = ckpt;
  if (bf16) meta["precision"] = "bf16 autocast";
  if (!names.empty()) {
    std::string joined;
    for (const auto& n : names) joined += (joined.empty() ? "" : "\n") + n;
    meta["inputs"] = joined;
  }
  TensorMap result{{"tokens", torch::cat(tokens)}, {"pooled", torch::cat(pooled)}};
  if (num_classes > 0) result.emplace_back("logits", torch::cat(logits));
  safetensors_save(out, result, meta);
  log_info("wrote tokens ", torch::cat(tokens).sizes(), ", pooled ", torch::cat(pooled).sizes(),
           num_classes > 0 ? " and logits " + str_cat(torch::cat(logits).sizes()) : std::string(),
           " to ", out);
  return 0;
}

}  // namespace evax::app
