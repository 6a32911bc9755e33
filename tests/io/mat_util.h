// OpenCV helpers shared by the io tests.
#pragma once

#include <catch2/catch.hpp>
#include <opencv2/core.hpp>

namespace evax::test {

/// Largest absolute difference of two images of the same size and type.
inline double max_abs_mat_diff(const cv::Mat& a, const cv::Mat& b) {
  REQUIRE(a.size() == b.size());
  REQUIRE(a.type() == b.type());
  return cv::norm(a, b, cv::NORM_INF);
}

}  // namespace evax::test
