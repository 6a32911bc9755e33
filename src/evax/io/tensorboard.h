// TensorBoard event files with scalar summaries, written without protobuf or TensorFlow: TFRecord
// framing (length, masked CRC-32C, payload, masked CRC-32C) around hand-encoded `Event` messages.
#pragma once

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace evax {

/// CRC-32C (Castagnoli), as TFRecord uses.
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

/// Appends scalars to `<dir>/events.out.tfevents.<time>.<host>.evax` (one file per writer).
class TensorBoardWriter {
 public:
  /// Creates the directory and the file and writes the `brain.Event:2` header record.
  explicit TensorBoardWriter(const std::string& dir);
  /// One scalar at a global step.
  void scalar(const std::string& tag, double value, int64_t step, double wall_time = -1);
  /// Pushes buffered records to disk.
  void flush();
  const std::string& path() const { return path_; }

 private:
  void record(const std::string& payload);
  std::string path_;
  std::ofstream out_;
};

/// One decoded scalar event (for tests and tooling).
struct TensorBoardScalar {
  std::string tag;
  double value = 0;
  int64_t step = 0;
};

/// Reads every scalar of an event file; DataError on bad framing or CRC.
std::vector<TensorBoardScalar> tensorboard_read_scalars(const std::string& path);

}  // namespace evax
