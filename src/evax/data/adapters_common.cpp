// Helpers shared by the dataset adapters (see adapters_internal.h), and the public building
// blocks csv_quote, manifest_path_for and read_id_list.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <sstream>
#include <thread>

#include "evax/core/files.h"
#include "evax/core/log.h"
#include "evax/data/adapters_internal.h"
#include "evax/io/gzip.h"
#include "evax/io/image.h"

namespace evax::adapters_detail {

std::string trim(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && std::isspace(static_cast<unsigned char>(s[b]))) ++b;
  while (e > b && std::isspace(static_cast<unsigned char>(s[e - 1]))) --e;
  return s.substr(b, e - b);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : sep) + s;
  return out;
}

std::vector<std::string> split_blanks(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream is(s);
  for (std::string tok; is >> tok;) out.push_back(tok);
  return out;
}

bool all_digits(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
           return std::isdigit(static_cast<unsigned char>(c)) != 0;
         });
}

// NIH boxes carry 12 decimals; 10 digits keep them exact to well below a pixel.
std::string fmt_num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.10g", v);
  return buf;
}

bool parse_double(const std::string& s, double* out) {
  if (s.empty()) return false;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

std::string at(const std::string& file, int64_t line) { return str_cat(file, ":", line, ": "); }

void check_split(const std::string& split, const char* what) {
  if (split != "train" && split != "val" && split != "test")
    raise<ConfigError>(what, ": unknown split '", split, "' (want train, val or test)");
}

// ---- Files and folders --------------------------------------------------------------------------

fs::path require_root(const std::string& root, const char* dataset) {
  if (root.empty()) raise<ConfigError>(dataset, ": no dataset root given");
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    raise<DataError>(dataset, ": dataset root '", root, "' is not a folder");
  return fs::path(root);
}

bool is_file(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::string normal_abs(const fs::path& p) { return fs::absolute(p).lexically_normal().string(); }

fs::path masks_dir_of(const std::string& out) {
  return fs::absolute(fs::path(out)).lexically_normal().parent_path() / "masks";
}

std::string find_file(const fs::path& root, const std::vector<std::string>& names, int depth) {
  std::vector<fs::path> level = {root};
  for (int d = 0; d <= depth && !level.empty(); ++d) {
    for (const fs::path& dir : level)
      for (const std::string& n : names)
        for (const std::string& name : {n, n + ".gz"}) {  // any input may come gzipped
          std::error_code ec;
          if (fs::is_regular_file(dir / name, ec)) return (dir / name).string();
        }
    if (d == depth) break;
    std::vector<fs::path> next;
    for (const fs::path& dir : level) {
      std::error_code ec;
      for (fs::directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end;
           !ec && it != end; it.increment(ec)) {
        std::error_code ec2;
        if (it->is_directory(ec2)) next.push_back(it->path());
      }
    }
    std::sort(next.begin(), next.end());
    level = std::move(next);
  }
  return "";
}

std::string require_file(const fs::path& root, const std::vector<std::string>& names, int depth,
                         const char* dataset) {
  const std::string f = find_file(root, names, depth);
  if (f.empty())
    raise<DataError>(dataset, ": no ", join(names, " or "), " in '", root.string(), "'",
                     depth > 0 ? " or the folders below it" : "");
  return f;
}

fs::path lists_dir(const std::string& dir, const char* sub, const std::string& probe) {
  std::error_code ec;
  const fs::path d(dir);
  if (fs::is_regular_file(d / sub / probe, ec)) return d / sub;
  if (fs::is_regular_file(d / probe, ec)) return d;
  raise<DataError>("split lists: no ", probe, " in '", dir, "' or '", (d / sub).string(), "'");
}

FileIndex index_files(const fs::path& root, const std::vector<std::string>& exts, bool key_is_stem,
                      const fs::path& skip, const char* dataset) {
  FileIndex idx;
  idx.root = root.string();
  std::unordered_map<std::string, size_t> rank_of;  // key -> rank of the kept file
  int64_t duplicates = 0;
  std::string example;
  const std::string skip_s = skip.empty() ? "" : normal_abs(skip);
  std::error_code ec;
  fs::recursive_directory_iterator it(root,
                                      fs::directory_options::follow_directory_symlink |
                                          fs::directory_options::skip_permission_denied,
                                      ec);
  if (ec) raise<DataError>(dataset, ": cannot list '", root.string(), "': ", ec.message());
  for (const fs::recursive_directory_iterator end; it != end; it.increment(ec)) {
    if (ec) raise<DataError>(dataset, ": cannot list '", root.string(), "': ", ec.message());
    std::error_code ec2;
    if (it->is_directory(ec2)) {
      if (!skip_s.empty() && normal_abs(it->path()) == skip_s) it.disable_recursion_pending();
      continue;
    }
    const fs::path& p = it->path();
    const std::string ext = lower(p.extension().string());
    const auto e = std::find(exts.begin(), exts.end(), ext);
    if (e == exts.end()) continue;
    const size_t rank = static_cast<size_t>(e - exts.begin());
    const std::string key = key_is_stem ? p.stem().string() : p.filename().string();
    const auto [slot, fresh] = idx.by_key.emplace(key, p.string());
    if (fresh) {
      rank_of[key] = rank;
      continue;
    }
    ++duplicates;
    if (example.empty()) example = slot->second + " and " + p.string();
    // Deterministic choice whatever the listing order: preferred extension, then smaller path.
    if (rank < rank_of[key] || (rank == rank_of[key] && p.string() < slot->second)) {
      slot->second = p.string();
      rank_of[key] = rank;
    }
  }
  if (duplicates > 0)
    log_warn(dataset, ": ", duplicates, " image names occur more than once under '", root.string(),
             "' (e.g. ", example, "); using the first by extension preference and path");
  return idx;
}

void parallel_for_n(int64_t n, const std::function<void(int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t threads =
      std::min<int64_t>(n, std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::exception_ptr error;
  int64_t error_at = n;
  const auto work = [&]() {
    for (int64_t i; (i = next++) < n;) {
      try {
        fn(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (i < error_at) error_at = i, error = std::current_exception();
      }
    }
  };
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
}

void write_mask_png(const fs::path& path, const cv::Mat& mask) {
  PngWriteOptions o;
  o.atomic = false;  // one of many files written in a batch
  image_write_png(path.string(), mask, o);
}

void make_dirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) raise<DataError>("cannot create folder '", dir.string(), "': ", ec.message());
}

bool image_present(const std::string& path, const AdapterOptions& o, const std::string& where) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return true;
  if (o.skip_missing_images) return false;
  raise<DataError>(where, "image '", path, "' does not exist (skip such rows with "
                   "--skip-missing)");
}

void skip_missing_image(const AdapterOptions& o, const FileIndex& images, const std::string& where,
                        const std::string& what, int64_t* skipped) {
  if (!o.skip_missing_images)
    raise<DataError>(where, what, " under '", images.root,
                     "' (skip such rows with --skip-missing)");
  ++*skipped;
}

// ---- Metadata files -----------------------------------------------------------------------------

size_t CsvTable::col(const std::string& name) const {
  const int64_t c = find(name);
  if (c < 0) {
    std::vector<std::string> have;
    for (const auto& n : names)
      if (!n.empty()) have.push_back("'" + n + "'");
    raise<DataError>(at(file, records[0].line), "missing column '", name, "' (columns: ",
                     join(have), ")");
  }
  return static_cast<size_t>(c);
}

std::string CsvTable::cell(const CsvRecord& r, size_t c) const {
  if (c >= r.fields.size())
    raise<DataError>(at(file, r.line), r.fields.size(), " fields, but column '", names[c],
                     "' is field ", c + 1);
  return trim(r.fields[c]);
}

CsvTable read_csv_table(const std::string& path) {
  CsvTable t;
  t.file = path;
  t.records = csv_parse(read_file_gunzip(path), path);
  if (t.records.empty()) raise<DataError>(path, ": empty file (no header row)");
  for (size_t c = 0; c < t.records[0].fields.size(); ++c) {
    const std::string n = trim(t.records[0].fields[c]);
    t.names.push_back(n);
    if (!n.empty()) t.cols.emplace(n, c);
  }
  return t;
}

std::vector<TextLine> read_lines(const std::string& path) {
  const std::string text = read_file_gunzip(path);
  std::vector<TextLine> out;
  int64_t line = 0;
  size_t b = 0;
  while (b <= text.size()) {
    size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    ++line;
    std::string s = trim(text.substr(b, e - b));
    if (!s.empty()) out.push_back({line, std::move(s)});
    b = e + 1;
  }
  return out;
}

std::vector<TextLine> read_id_lines(const std::string& path) {
  std::vector<TextLine> lines = read_lines(path);
  std::unordered_map<std::string, int64_t> seen;
  for (const TextLine& l : lines) {
    if (split_blanks(l.text).size() != 1)
      raise<DataError>(at(path, l.line), "want one id per line, got '", l.text, "'");
    const auto [it, fresh] = seen.emplace(l.text, l.line);
    if (!fresh)
      raise<DataError>(at(path, l.line), "id '", l.text, "' repeated (first on line ", it->second,
                       ")");
  }
  return lines;
}

std::vector<ListedId> read_seg_lists(const std::string& dir, const char* sub) {
  const fs::path d = lists_dir(dir, sub, "train.txt");
  std::vector<ListedId> out;
  std::unordered_map<std::string, std::string> where;
  for (const char* split : {"train", "test"}) {
    const std::string file = (d / (std::string(split) + ".txt")).string();
    for (const TextLine& l : read_id_lines(file)) {
      const auto [it, fresh] = where.emplace(l.text, at(file, l.line));
      if (!fresh)
        raise<DataError>(at(file, l.line), "id '", l.text, "' is also listed at ", it->second);
      out.push_back({l.text, split, at(file, l.line)});
    }
  }
  return out;
}

// ---- Writing manifests --------------------------------------------------------------------------

ManifestWriter::ManifestWriter(std::string out, std::vector<std::string> labels, bool view,
                               bool mask, bool boxes)
    : out_(std::move(out)), labels_(std::move(labels)), view_(view), mask_(mask), boxes_(boxes) {
  if (out_.empty()) raise<ConfigError>("no output manifest given");
}

ManifestSummary ManifestWriter::write(int64_t skipped, int64_t masks) {
  ManifestSummary s;
  s.out = out_;
  s.skipped = skipped;
  s.masks = masks;
  std::ostringstream os;
  os << "path,split,patient_id";
  if (view_) os << ",view";
  for (const auto& l : labels_) os << "," << csv_quote(l);
  if (mask_) os << ",mask";
  if (boxes_) os << ",boxes";
  os << "\n";
  std::unordered_map<std::string, std::string> patient_split;
  int64_t mixed = 0;
  std::string mixed_example;
  for (const OutRow& r : rows_) {
    EVAX_ASSERT(r.labels.size() == labels_.size());
    os << csv_quote(manifest_path_for(out_, r.path)) << "," << r.split << ","
       << csv_quote(r.patient);
    if (view_) os << "," << csv_quote(r.view);
    for (float v : r.labels)
      os << "," << (std::isnan(v) ? "" : v > 0.5f ? "1" : v < -0.5f ? "-1" : "0");
    if (mask_) os << "," << (r.mask.empty() ? "" : csv_quote(manifest_path_for(out_, r.mask)));
    if (boxes_) os << "," << csv_quote(r.boxes);
    os << "\n";
    ++s.rows;
    if (r.split == "train") ++s.train;
    else if (r.split == "val") ++s.val;
    else if (r.split == "test") ++s.test;
    else EVAX_ASSERT(false, "split ", r.split);
    const auto [it, fresh] = patient_split.emplace(r.patient, r.split);
    if (!fresh && it->second != r.split && mixed++ == 0) mixed_example = r.patient;
  }
  if (mixed > 0)
    log_warn(out_, ": ", mixed, " rows share a patient with another split (e.g. '",
             mixed_example, "'); manifest_load rejects this unless check_patient_splits is off");
  const fs::path parent = fs::path(out_).parent_path();
  if (!parent.empty()) make_dirs(parent);
  write_file_atomic(out_, os.str());
  return s;
}

// ---- Boxes and mask datasets --------------------------------------------------------------------

std::string boxes_text(const std::vector<SrcBox>& boxes) {
  std::string s;
  for (const SrcBox& b : boxes)
    s += (s.empty() ? "" : ";") + b.label + ":" + fmt_num(b.x) + "," + fmt_num(b.y) + "," +
         fmt_num(b.w) + "," + fmt_num(b.h);
  return s;
}

MaskSource open_mask_source(const MaskAdapterOptions& o, const std::vector<std::string>& csv_names,
                            const char* dataset) {
  MaskSource src;
  src.root = require_root(o.root, dataset);
  if (o.mask_size < 1 || o.mask_size > 16384)
    raise<ConfigError>(dataset, ": mask size ", o.mask_size, " is out of [1, 16384]");
  src.csv = require_file(src.root, csv_names, 1, dataset);
  src.out_masks = masks_dir_of(o.out);
  src.images =
      index_files(src.root, {".dcm", ".png", ".jpg", ".jpeg"}, true, src.out_masks, dataset);
  return src;
}

}  // namespace evax::adapters_detail

namespace evax {

using namespace adapters_detail;

std::string csv_quote(const std::string& field) {
  const bool quote = field.find_first_of(",\"\r\n") != std::string::npos ||
                     (!field.empty() && (std::isspace(static_cast<unsigned char>(field.front())) ||
                                         std::isspace(static_cast<unsigned char>(field.back()))));
  if (!quote) return field;
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string manifest_path_for(const std::string& manifest, const std::string& file) {
  const fs::path dir = fs::absolute(fs::path(manifest)).lexically_normal().parent_path();
  const fs::path p = fs::absolute(fs::path(file)).lexically_normal();
  const fs::path rel = p.lexically_relative(dir);
  if (!rel.empty() && *rel.begin() != ".." && *rel.begin() != ".") return rel.generic_string();
  return p.string();
}

std::vector<std::string> read_id_list(const std::string& path) {
  std::vector<std::string> out;
  for (TextLine& l : read_id_lines(path)) out.push_back(std::move(l.text));
  return out;
}

}  // namespace evax
