// Pictures of CAMs: the `grad-cam` package's heat map and overlay (utils/image.py
// show_cam_on_image with OpenCV's JET colormap) for the grey radiographs evax reads, and boxes.
#pragma once

#include <opencv2/core.hpp>
#include <torch/torch.h>

namespace evax {

/// A (H, W) map tensor (any device, floating) as a CV_32F Mat (a copy).
cv::Mat cam_to_mat(const torch::Tensor& map);

/// applyColorMap(np.uint8(255 · map), COLORMAP_JET) of a CV_32F map in [0, 1]: CV_8UC3, BGR
/// (values truncated like np.uint8; outside [0, 1] clamped).
cv::Mat cam_heatmap(const cv::Mat& map);

/// show_cam_on_image(img, map, use_rgb=False, COLORMAP_JET, image_weight) with img the grey
/// [0, 1] `unit` replicated to BGR: (1 − w)·heat/255 + w·img, divided by its maximum, then
/// np.uint8(255·x). The map is first resized to the image's size (cv::resize INTER_LINEAR) when
/// the sizes differ. CV_8UC3, BGR.
cv::Mat cam_overlay(const cv::Mat& unit, const cv::Mat& map, double image_weight = 0.5);

/// A grey [0, 1] CV_32F image as 8-bit BGR (rounded).
cv::Mat unit_to_bgr(const cv::Mat& unit);

/// Draws the rectangle [x, x + w) × [y, y + h) (pixels) on a BGR image, 1 px wide per 256 px of
/// the image's larger side (at least 1).
void draw_box(cv::Mat& bgr, double x, double y, double w, double h,
              const cv::Scalar& colour = cv::Scalar(0, 255, 0));

}  // namespace evax
