// RFC 4180 CSV parsing, shared by the manifest reader and the prediction CSVs of `evax metrics`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace evax {

/// One CSV record.
struct CsvRecord {
  std::vector<std::string> fields;  ///< unquoted field values
  int64_t line = 0;                 ///< 1-based line where the record starts
};

/// Parses CSV text (RFC 4180: quoted fields may hold commas, doubled quotes and newlines; CRLF and
/// a UTF-8 BOM are accepted). `origin` names the text in DataErrors (unterminated quote, text
/// after a closing quote). Blank lines between records are skipped.
std::vector<CsvRecord> csv_parse(const std::string& text, const std::string& origin);

/// One CSV field, quoted as RFC 4180 says when it holds a comma, a quote, CR or LF.
std::string csv_field(const std::string& s);

}  // namespace evax
