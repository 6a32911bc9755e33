// Reading files that may be gzip-compressed (MIMIC-CXR ships its metadata as .csv.gz).
#pragma once

#include <string>

namespace evax {

/// The contents of `path`, gunzipped when it starts with the gzip magic (1f 8b), whatever its
/// name; several concatenated gzip members are read as one stream. DataError naming the path when
/// it cannot be read or the compressed data is damaged or truncated.
std::string read_file_gunzip(const std::string& path);

}  // namespace evax
