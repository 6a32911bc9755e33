#include "evax/segment/predict.h"

#include <opencv2/imgproc.hpp>

#include <filesystem>

#include "evax/core/log.h"
#include "evax/io/weight_file.h"
#include "evax/train/run_checkpoint.h"
#include "evax/train/runtime.h"

namespace evax {

LoadedSegmenter segmenter_load(const std::string& checkpoint, const std::string& device) {
  LoadedSegmenter s;
  s.weights = run_weights_path(checkpoint);
  s.spec = SegmenterSpec::from_json(checkpoint_task_meta(s.weights, "evax predict"), s.weights);
  s.model = UperNet(s.spec.net);
  upernet_load_file(*s.model, s.weights, /*strict=*/true);
  s.device = select_device(device, 0);
  s.model->to(s.device);
  s.model->set_channels_last(s.device.is_cuda());  // NHWC convolutions for tensor cores
  s.model->eval();
  return s;
}

UperNet upernet_for_checkpoint(const std::string& name, const std::string& checkpoint,
                               int64_t img_size, WeightLoadReport* report) {
  UperNetOptions o = upernet_options(name);
  o.drop_path_rate(0);
  std::string weights;
  if (!checkpoint.empty()) {
    weights = run_weights_path(checkpoint);
    const std::string meta = (std::filesystem::path(weights).parent_path() / "meta.json").string();
    if (std::filesystem::exists(meta)) {
      o = SegmenterSpec::from_json(checkpoint_task_meta(weights, "evax embed"), weights).net;
    } else {
      const TensorMap sd = weight_file_state_dict(weight_file_read(weights));
      auto get = [&](const std::string& k) -> const at::Tensor* {
        const at::Tensor* t = find(sd, k);
        return t ? t : find(sd, "module." + k);
      };
      if (const at::Tensor* w = get("decode_head.conv_seg.weight"); w && w->dim() == 4)
        o.out_channels(w->size(0)).channels(w->size(1))
            .num_classes(w->size(0) == 1 ? 2 : w->size(0));
      o.aux_head(get("auxiliary_head.conv_seg.weight") != nullptr);
      int64_t depth = 0;
      while (get("backbone.blocks." + std::to_string(depth) + ".norm1.weight")) ++depth;
      if (depth > 0) o.depth(depth);
    }
  }
  if (img_size > 0) o.img_size(img_size);
  UperNet model(o);
  if (!weights.empty()) {
    WeightLoadReport r = upernet_load_file(*model, weights, /*strict=*/true);
    if (report) *report = r;
  }
  return model;
}

cv::Mat segmentation_mask_png(const torch::Tensor& classes, int64_t num_classes) {
  auto c = classes.to(torch::kUInt8).contiguous();
  if (num_classes == 2) c = c * 255;
  cv::Mat m(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8U);
  std::memcpy(m.data, c.data_ptr<uint8_t>(), static_cast<size_t>(c.numel()));
  return m;
}

cv::Mat segmentation_overlay(const cv::Mat& unit, const torch::Tensor& classes) {
  static const cv::Vec3b kColours[] = {{60, 200, 60},  {60, 60, 230},  {230, 160, 40},
                                       {200, 60, 200}, {40, 200, 220}, {180, 180, 60}};
  cv::Mat grey8, bgr;
  unit.convertTo(grey8, CV_8U, 255.0);
  cv::cvtColor(grey8, bgr, cv::COLOR_GRAY2BGR);
  auto c = classes.to(torch::kUInt8).contiguous();
  cv::Mat ids(static_cast<int>(c.size(0)), static_cast<int>(c.size(1)), CV_8U, c.data_ptr<uint8_t>());
  const int max_id = static_cast<int>(c.max().item<uint8_t>());
  for (int k = 1; k <= max_id; ++k) {
    cv::Mat mask = ids == k;
    if (cv::countNonZero(mask) == 0) continue;
    const cv::Vec3b col = kColours[(k - 1) % 6];
    cv::Mat tint(bgr.size(), bgr.type(), cv::Scalar(col[0], col[1], col[2]));
    cv::Mat blended;
    cv::addWeighted(bgr, 0.6, tint, 0.4, 0, blended);
    blended.copyTo(bgr, mask);
    std::vector<std::vector<cv::Point>> contours;
    cv::findContours(mask, contours, cv::RETR_EXTERNAL, cv::CHAIN_APPROX_NONE);
    cv::drawContours(bgr, contours, -1, cv::Scalar(col[0], col[1], col[2]), 1);
  }
  return bgr;
}

cv::Mat segmentation_truth_overlay(const cv::Mat& unit, const torch::Tensor& pred,
                                   const torch::Tensor& truth) {
  cv::Mat bgr = segmentation_overlay(unit, pred);
  auto t = truth.to(torch::kUInt8).contiguous();
  cv::Mat ids(static_cast<int>(t.size(0)), static_cast<int>(t.size(1)), CV_8U, t.data_ptr<uint8_t>());
  // Every foreground class of the label (255 = ignored pixels are not outlined).
  cv::Mat fg = (ids > 0) & (ids != 255);
  std::vector<std::vector<cv::Point>> contours;
  cv::findContours(fg, contours, cv::RETR_LIST, cv::CHAIN_APPROX_NONE);
  cv::drawContours(bgr, contours, -1, cv::Scalar(40, 40, 255), 1);
  return bgr;
}

}  // namespace evax
