// Line plots as inline SVG (no script, no fonts to fetch), with the points bounded however long
// the run: each series is cut into buckets along x and only each bucket's extremes are kept.
#pragma once

#include <string>
#include <vector>

namespace evax {

/// One line of a plot: points (x[i], y[i]); NaN y values are gaps and are left out.
struct PlotSeries {
  std::string name;
  std::vector<double> x, y;
};

/// At most `max_points` points of (x, y) (x ascending) that keep the series' shape: the first and
/// last points, and in each of max_points / 2 equal-width x buckets the points with the smallest
/// and the largest y, in x order. NaN y values are dropped. Returns the input (without NaNs) when
/// it is already small enough.
PlotSeries downsample_minmax(const PlotSeries& s, size_t max_points);

/// How svg_line_plot draws.
struct PlotOptions {
  std::string title;
  std::string x_label = "step";
  int width = 640;          ///< SVG user units (the page scales it to the column width)
  int height = 260;
  size_t max_points = 600;  ///< per series, after downsample_minmax
  bool log_y = false;       ///< log10 y axis (only when every y > 0)
};

/// An <svg> element with axes, ticks, one polyline per series (dots as well when a series has
/// few points, e.g. evaluations) and a legend. Names are HTML-escaped. A plot without any finite
/// point says so instead of drawing axes.
std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& o);

}  // namespace evax
