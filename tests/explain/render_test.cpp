// The heat map and overlay follow the grad-cam package's show_cam_on_image arithmetic (by hand,
// pixel by pixel, from OpenCV's JET colormap).
#include <catch2/catch.hpp>

#include <opencv2/imgproc.hpp>

#include "evax/explain/render.h"

using namespace evax;

TEST_CASE("render: heat map and overlay are show_cam_on_image's") {
  cv::Mat map(2, 3, CV_32F);
  const float vals[6] = {0.0f, 0.2f, 0.5f, 0.999f, 1.0f, 0.7f};
  for (int i = 0; i < 6; ++i) map.at<float>(i / 3, i % 3) = vals[i];
  // np.uint8(255 * map) truncates: 0.999 → 254, 1.0 → 255, 0.7 → 178 (178.5).
  cv::Mat u8(2, 3, CV_8U);
  const uint8_t want_u8[6] = {0, 51, 127, 254, 255, 178};
  for (int i = 0; i < 6; ++i) u8.at<uint8_t>(i / 3, i % 3) = want_u8[i];
  cv::Mat jet;
  cv::applyColorMap(u8, jet, cv::COLORMAP_JET);
  const cv::Mat heat = cam_heatmap(map);
  REQUIRE(heat.type() == CV_8UC3);
  CHECK(cv::norm(heat, jet, cv::NORM_INF) == 0);

  // Overlay with image_weight 0.5 on a grey ramp: 0.5·heat/255 + 0.5·img, / its max, uint8(255·x).
  cv::Mat unit(2, 3, CV_32F);
  for (int i = 0; i < 6; ++i) unit.at<float>(i / 3, i % 3) = 0.1f * static_cast<float>(i);
  const cv::Mat over = cam_overlay(unit, map);
  float mix[6][3], top = 0;
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c) {
      mix[i][c] = 0.5f * (jet.at<cv::Vec3b>(i / 3, i % 3)[c] / 255.0f) + 0.5f * unit.at<float>(i / 3, i % 3);
      top = std::max(top, mix[i][c]);
    }
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c)
      CHECK(over.at<cv::Vec3b>(i / 3, i % 3)[c] == static_cast<uint8_t>(255.0f * (mix[i][c] / top)));
  // A map of another size is resized to the image first.
  cv::Mat big(4, 6, CV_32F, cv::Scalar(0.3f));
  CHECK(cam_overlay(big, map).size() == big.size());
}
