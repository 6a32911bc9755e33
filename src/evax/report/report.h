// report.html: one self-contained page (inline CSS and SVG, images as data: URIs, no script, no
// network) describing a run directory and every run nested in it (the demo's stages): status,
// headline and per-class metrics of every evaluation, ROC curves, overlays and Grad-CAM galleries,
// loss / lr / throughput / evaluation curves, checkpoints (best marked), the resolved config with
// the origin of each value, the environment and the end of the log.
//
// Every number taken from a metrics.json sits in an element with data-metric="<file>#<path>" (file
// relative to the report's run directory, path '/'-separated inside the JSON) and data-value (the
// exact value), so tests can check the page against the files.
#pragma once

#include <cstddef>
#include <string>

namespace evax {

/// What a report bounds, so that a 900-epoch run stays readable.
struct ReportOptions {
  size_t max_plot_points = 600;  ///< per curve (min/max-preserving buckets)
  int max_gallery = 12;          ///< images per gallery (ROC, overlays, Grad-CAM)
  int max_image_side = 512;      ///< embedded images are downscaled to this longer side
  int log_tail_lines = 40;       ///< last lines of log.txt shown
  std::string generator;         ///< who wrote it, e.g. "evax 0.1.0 (abc123)"; "" = not shown
};

/// The report of `run_dir` as HTML text.
std::string report_html(const std::string& run_dir, const ReportOptions& o = {});

/// Writes report_html(run_dir) to `out` (default `<run_dir>/report.html`) atomically and returns
/// its path. DataError when `run_dir` is not a directory or the file cannot be written.
std::string report_write(const std::string& run_dir, const std::string& out = "",
                         const ReportOptions& o = {});

}  // namespace evax
