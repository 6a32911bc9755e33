// evax cam-eval: how well a finetuned classifier's Grad-CAM localises a manifest's boxes
// (EVA-X's Grad-CAM protocol: mIoU, AP25, AP50, mAP), next to chance baselines.
#include <cmath>
#include <filesystem>
#include <iostream>
#include <limits>

#include "commands.h"
#include "evax/core/log.h"
#include "evax/data/manifest.h"
#include "evax/explain/cam_eval.h"

namespace fs = std::filesystem;

namespace evax::app {

int cmd_cam_eval(const Args& args) {
  std::string checkpoint, model, manifest, split = "test", threshold_split = "val", protocol;
  std::string out, box_scale = "image", resize = "bicubic", method = "gradcam", device = "auto";
  std::vector<std::string> layers;
  double threshold = std::numeric_limits<double>::quiet_NaN();
  double mean = threshold, std = threshold;
  int64_t batch = 16, image_size = 0, gallery = 8;
  ArgParser p("cam-eval",
              "Grad-CAM localisation of a manifest's boxes (the `boxes` column; the synthetic\n"
              "classification.csv has Nodule boxes, `evax manifest nih-bbox` builds ChestX-ray14's;\n"
              "box labels map to the checkpoint's classes by name, Infiltrate = Infiltration).\n"
              "Per box, the map of its class thresholded (map > t) against the box at the map's\n"
              "resolution gives an IoU; per class and overall: mIoU, AP25 / AP50 (fraction of\n"
              "boxes with IoU > 0.25 / 0.5) and mAP = (AP25 + AP50) / 2, EVA-X's definitions; the\n"
              "same for chance baselines (a uniform map and a centred Gaussian). The threshold\n"
              "(0.01 … 0.60) maximises the mAP on --threshold-split and is applied to --split;\n"
              "--protocol paper searches it on --split itself, as EVA-X did (optimistic);\n"
              "--threshold T fixes it. Images are resized to the model's size without crop.\n"
              "EVA-X's recipe: --protocol paper --box-scale 1024 --resize bilinear --mean 0.5056\n"
              "--std 0.252. Writes metrics.json, boxes.csv and gallery/ into --out; prints a table.");
  p.option("--checkpoint", &checkpoint, "K", "an evax classifier checkpoint or run directory");
  p.required("--checkpoint");
  p.option("--model", &model, "NAME", "registered model, for a checkpoint without meta.json "
           "(classes are then the indices 0 … K-1)");
  p.option("--manifest", &manifest, "M", "manifest CSV with a boxes column");
  p.required("--manifest");
  p.option("--split", &split, "SPLIT", "the evaluated split");
  p.option("--threshold-split", &threshold_split, "SPLIT", "split the threshold is chosen on");
  p.option("--protocol", &protocol, "P", "split (the default), paper, or fixed (with --threshold)");
  p.option("--threshold", &threshold, "T", "a fixed threshold; nan = search one");
  p.option("--out", &out, "DIR", "output folder (default: <run>/cam_eval/<split> for a run "
           "directory)");
  p.option("--box-scale", &box_scale, "S", "image (from the image's size) or 1024 (EVA-X)");
  p.option("--resize", &resize, "R", "bicubic (PIL-like, antialiased) or bilinear (EVA-X)");
  p.option("--mean", &mean, "X", "normalisation mean; nan = the checkpoint's");
  p.option("--std", &std, "Y", "normalisation std; nan = the checkpoint's");
  p.option("--image-size", &image_size, "N", "input side, a multiple of 16; 0 = the checkpoint's");
  p.option("--method", &method, "M", "gradcam or gradcam++");
  p.option("--layer", &layers, "NAME", "target layer, as evax cam takes it (none: blocks.<last>.norm1)");
  p.option("--batch-size", &batch, "N", "images per forward/backward pass");
  p.option("--gallery", &gallery, "N", "images in the gallery");
  p.option("--device", &device, "DEV", "auto, cpu or cuda");
  if (!p.parse(args)) return 0;
  if (!std::isnan(threshold)) {
    if (!protocol.empty() && protocol != "fixed")
      raise<UsageError>("evax cam-eval: --threshold fixes the threshold; it cannot go with "
                        "--protocol ", protocol);
    protocol = "fixed";
  }
  if (protocol.empty()) protocol = "split";
  if (protocol == "fixed" && std::isnan(threshold))
    raise<UsageError>("evax cam-eval: --protocol fixed needs --threshold T");
  if (batch < 1) raise<UsageError>("evax cam-eval: --batch-size must be >= 1");
  if (gallery < 0) raise<UsageError>("evax cam-eval: --gallery must be >= 0");
  if (device != "auto" && device != "cpu" && device != "cuda")
    raise<UsageError>("evax cam-eval: --device must be auto, cpu or cuda");
  if (out.empty()) {
    if (!fs::is_directory(fs::path(checkpoint) / "checkpoints"))
      raise<UsageError>("evax cam-eval: give --out DIR (the default, <run>/cam_eval/<split>, "
                        "needs a run directory as --checkpoint)");
    out = (fs::path(checkpoint) / "cam_eval" / split).string();
  }

  LoadedClassifier c = cam_classifier_load(checkpoint, model, device, image_size);
  ManifestOptions mo;
  mo.allow_uncertain = true;
  mo.check_patient_splits = false;
  const Manifest m = manifest_load(manifest, mo);
  CamEvalOptions o = CamEvalOptions()
                         .split(split)
                         .protocol(protocol)
                         .threshold_split(threshold_split)
                         .box_scale(box_scale)
                         .input(CamInputOptions().resize(resize).mean(mean).std(std).size(image_size))
                         .cam(GradCamOptions().method(method).layers(layers))
                         .batch_size(batch)
                         .gallery(gallery);
  if (protocol == "fixed") o.threshold(threshold);
  log_info(c.spec.model, " (", c.spec.classes.size(), " classes) from ", c.weights, " on ",
           manifest, " split ", split, ", protocol ", protocol);
  const CamEvalResult r = cam_evaluate(c, m, o);
  cam_eval_write(r, out);
  std::cout << cam_eval_table(r);
  log_info("wrote metrics.json, boxes.csv and gallery/ to ", out);
  return 0;
}

}  // namespace evax::app
