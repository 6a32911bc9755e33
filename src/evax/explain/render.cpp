#include "evax/explain/render.h"

#include <algorithm>
#include <cmath>
#include <opencv2/imgproc.hpp>

#include "evax/core/error.h"

namespace evax {

cv::Mat cam_to_mat(const torch::Tensor& map) {
  EVAX_ASSERT(map.dim() == 2, "a map is (H, W), got ", map.sizes());
  auto m = map.detach().to(torch::kCPU, torch::kFloat32).contiguous();
  return cv::Mat(static_cast<int>(m.size(0)), static_cast<int>(m.size(1)), CV_32F, m.data_ptr<float>())
      .clone();
}

cv::Mat cam_heatmap(const cv::Mat& map) {
  EVAX_ASSERT(map.type() == CV_32F, "cam_heatmap wants a CV_32F map");
  cv::Mat u8(map.size(), CV_8U);
  for (int y = 0; y < map.rows; ++y) {
    const float* src = map.ptr<float>(y);
    uint8_t* dst = u8.ptr<uint8_t>(y);
    for (int x = 0; x < map.cols; ++x) {
      const float v = std::isnan(src[x]) ? 0.0f : std::clamp(src[x], 0.0f, 1.0f);
      dst[x] = static_cast<uint8_t>(255.0f * v);  // np.uint8: truncation
    }
  }
  cv::Mat heat;
  cv::applyColorMap(u8, heat, cv::COLORMAP_JET);
  return heat;
}

cv::Mat cam_overlay(const cv::Mat& unit, const cv::Mat& map, double image_weight) {
  EVAX_ASSERT(unit.type() == CV_32F && map.type() == CV_32F, "cam_overlay wants CV_32F images");
  EVAX_ASSERT(image_weight >= 0 && image_weight <= 1, "image_weight ", image_weight);
  cv::Mat m = map;
  if (map.size() != unit.size()) cv::resize(map, m, unit.size(), 0, 0, cv::INTER_LINEAR);
  cv::Mat heat = cam_heatmap(m);
  const float wi = static_cast<float>(image_weight), wh = 1.0f - wi;
  cv::Mat mix(unit.size(), CV_32FC3);
  float top = 0;
  for (int y = 0; y < unit.rows; ++y) {
    const float* g = unit.ptr<float>(y);
    const cv::Vec3b* h = heat.ptr<cv::Vec3b>(y);
    cv::Vec3f* o = mix.ptr<cv::Vec3f>(y);
    for (int x = 0; x < unit.cols; ++x)
      for (int c = 0; c < 3; ++c) {
        o[x][c] = wh * (static_cast<float>(h[x][c]) / 255.0f) + wi * g[x];
        top = std::max(top, o[x][c]);
      }
  }
  cv::Mat out(unit.size(), CV_8UC3);
  for (int y = 0; y < unit.rows; ++y) {
    const cv::Vec3f* o = mix.ptr<cv::Vec3f>(y);
    cv::Vec3b* d = out.ptr<cv::Vec3b>(y);
    for (int x = 0; x < unit.cols; ++x)
      for (int c = 0; c < 3; ++c)
        d[x][c] = static_cast<uint8_t>(std::clamp(255.0f * (o[x][c] / top), 0.0f, 255.0f));
  }
  return out;
}

cv::Mat unit_to_bgr(const cv::Mat& unit) {
  cv::Mat grey8, bgr;
  unit.convertTo(grey8, CV_8U, 255.0);
  cv::cvtColor(grey8, bgr, cv::COLOR_GRAY2BGR);
  return bgr;
}

void draw_box(cv::Mat& bgr, double x, double y, double w, double h, const cv::Scalar& colour) {
  const int t = std::max(1, std::max(bgr.cols, bgr.rows) / 256);
  const cv::Point p0(static_cast<int>(std::floor(x)), static_cast<int>(std::floor(y)));
  const cv::Point p1(static_cast<int>(std::ceil(x + w)) - 1, static_cast<int>(std::ceil(y + h)) - 1);
  cv::rectangle(bgr, p0, p1, colour, t);
}

}  // namespace evax
