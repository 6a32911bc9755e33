#include "evax/report/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "evax/report/html.h"

namespace evax {

PlotSeries downsample_minmax(const PlotSeries& s, size_t max_points) {
  PlotSeries clean{s.name, {}, {}};
  const size_t n = std::min(s.x.size(), s.y.size());
  for (size_t i = 0; i < n; ++i)
    if (std::isfinite(s.x[i]) && std::isfinite(s.y[i])) {
      clean.x.push_back(s.x[i]);
      clean.y.push_back(s.y[i]);
    }
  max_points = std::max<size_t>(max_points, 4);
  if (clean.x.size() <= max_points) return clean;
  const size_t buckets = (max_points - 2) / 2;
  const double x0 = clean.x.front(), x1 = clean.x.back();
  const size_t last = clean.x.size() - 1;
  // Per bucket, the index of its smallest and of its largest y (npos: empty).
  const size_t none = static_cast<size_t>(-1);
  std::vector<size_t> lo(buckets, none), hi(buckets, none);
  for (size_t i = 1; i < last; ++i) {
    const double f = x1 > x0 ? (clean.x[i] - x0) / (x1 - x0) : 0.0;
    const size_t b = std::min(buckets - 1, static_cast<size_t>(f * static_cast<double>(buckets)));
    if (lo[b] == none || clean.y[i] < clean.y[lo[b]]) lo[b] = i;
    if (hi[b] == none || clean.y[i] > clean.y[hi[b]]) hi[b] = i;
  }
  std::vector<size_t> keep = {0, last};
  for (size_t b = 0; b < buckets; ++b)
    if (lo[b] != none) keep.insert(keep.end(), {lo[b], hi[b]});
  std::sort(keep.begin(), keep.end());
  keep.erase(std::unique(keep.begin(), keep.end()), keep.end());
  PlotSeries out{s.name, {}, {}};
  for (size_t k : keep) {
    out.x.push_back(clean.x[k]);
    out.y.push_back(clean.y[k]);
  }
  return out;
}

namespace {

// Round tick positions covering [lo, hi]: steps of 1, 2 or 5 times a power of ten (`*step`).
std::vector<double> nice_ticks(double lo, double hi, double* step_out, int target = 5) {
  *step_out = 1;
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  *step_out = step;
  std::vector<double> t;
  for (double v = std::ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    t.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  return t;
}

// A tick's text with just the digits its step needs (0.000152 and 0.000154 stay apart).
std::string tick_label(double v, double step) {
  char buf[32];
  const double a = std::fabs(v);
  if (a == 0) return "0";
  const int step_exp = static_cast<int>(std::floor(std::log10(step) + 1e-9));
  if (a >= 1e5 || step < 1e-3) {
    const int digits = std::max(0, static_cast<int>(std::floor(std::log10(a))) - step_exp);
    std::snprintf(buf, sizeof buf, "%.*e", std::min(digits, 6), v);
  } else {
    std::snprintf(buf, sizeof buf, "%.*f", std::max(0, -step_exp), v);
  }
  return buf;
}

const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};

}  // namespace

std::string svg_line_plot(const std::vector<PlotSeries>& series, const PlotOptions& o) {
  std::vector<PlotSeries> pts;
  double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
  bool log_y = o.log_y;
  for (const auto& s : series) {
    pts.push_back(downsample_minmax(s, o.max_points));
    for (double y : pts.back().y) log_y = log_y && y > 0;
  }
  for (auto& s : pts) {
    if (log_y)
      for (double& y : s.y) y = std::log10(y);
    for (size_t i = 0; i < s.x.size(); ++i) {
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, s.y[i]);
      ymax = std::max(ymax, s.y[i]);
    }
  }
  const int W = o.width, H = o.height;
  std::ostringstream svg;
  svg << "<svg class=\"plot\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " << W << " " << H
      << "\" width=\"" << W << "\" height=\"" << H << "\" role=\"img\" aria-label=\""
      << html_escape(o.title) << "\">";
  svg << "<text x=\"" << W / 2 << "\" y=\"16\" text-anchor=\"middle\" class=\"pt\">"
      << html_escape(o.title) << "</text>";
  if (!std::isfinite(xmin)) {
    svg << "<text x=\"" << W / 2 << "\" y=\"" << H / 2
        << "\" text-anchor=\"middle\">no finite values</text></svg>";
    return svg.str();
  }
  if (xmax == xmin) xmin -= 1, xmax += 1;
  if (ymax == ymin) {
    const double d = ymin == 0 ? 1 : std::fabs(ymin) * 0.05;
    ymin -= d, ymax += d;
  } else {
    const double pad = (ymax - ymin) * 0.05;
    ymin -= pad, ymax += pad;
  }
  const double L = 62, R = 12, T = 26, B = 40;
  const double pw = W - L - R, ph = H - T - B;
  auto sx = [&](double x) { return L + (x - xmin) / (xmax - xmin) * pw; };
  auto sy = [&](double y) { return T + (1 - (y - ymin) / (ymax - ymin)) * ph; };
  char buf[64];
  auto num = [&](double v) {
    std::snprintf(buf, sizeof buf, "%.1f", v);
    return std::string(buf);
  };
  svg << "<rect x=\"" << L << "\" y=\"" << T << "\" width=\"" << pw << "\" height=\"" << ph
      << "\" fill=\"#fff\" stroke=\"#999\"/>";
  double step = 1;
  const std::vector<double> xt = nice_ticks(xmin, xmax, &step);
  const double xstep = step;
  for (double t : xt) {
    svg << "<line x1=\"" << num(sx(t)) << "\" x2=\"" << num(sx(t)) << "\" y1=\"" << T
        << "\" y2=\"" << T + ph << "\" class=\"grid\"/><text x=\"" << num(sx(t)) << "\" y=\""
        << T + ph + 14 << "\" text-anchor=\"middle\">" << tick_label(t, xstep) << "</text>";
  }
  const std::vector<double> yt = nice_ticks(ymin, ymax, &step);
  for (double t : yt) {
    char buf3[32];
    std::snprintf(buf3, sizeof buf3, "%.3g", std::pow(10.0, t));
    const std::string label = log_y ? std::string(buf3) : tick_label(t, step);
    svg << "<line x1=\"" << L << "\" x2=\"" << L + pw << "\" y1=\"" << num(sy(t)) << "\" y2=\""
        << num(sy(t)) << "\" class=\"grid\"/><text x=\"" << L - 4 << "\" y=\"" << num(sy(t) + 4)
        << "\" text-anchor=\"end\">" << label << "</text>";
  }
  svg << "<text x=\"" << L + pw / 2 << "\" y=\"" << H - 6 << "\" text-anchor=\"middle\">"
      << html_escape(o.x_label) << (log_y ? " (log y)" : "") << "</text>";
  for (size_t k = 0; k < pts.size(); ++k) {
    const auto& s = pts[k];
    const char* colour = kColours[k % (sizeof kColours / sizeof *kColours)];
    svg << "<polyline fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"1.5\" points=\"";
    for (size_t i = 0; i < s.x.size(); ++i) svg << (i ? " " : "") << num(sx(s.x[i])) << "," << num(sy(s.y[i]));
    svg << "\"/>";
    if (s.x.size() <= 40)
      for (size_t i = 0; i < s.x.size(); ++i)
        svg << "<circle cx=\"" << num(sx(s.x[i])) << "\" cy=\"" << num(sy(s.y[i]))
            << "\" r=\"2.5\" fill=\"" << colour << "\"/>";
    if (pts.size() > 1) {
      const double ly = T + 12 + 13.0 * k;
      svg << "<line x1=\"" << L + 8 << "\" x2=\"" << L + 24 << "\" y1=\"" << num(ly - 4)
          << "\" y2=\"" << num(ly - 4) << "\" stroke=\"" << colour
          << "\" stroke-width=\"2\"/><text x=\"" << L + 28 << "\" y=\"" << num(ly) << "\">"
          << html_escape(s.name) << "</text>";
    }
  }
  svg << "</svg>";
  return svg.str();
}

}  // namespace evax
