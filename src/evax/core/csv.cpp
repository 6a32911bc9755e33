#include "evax/core/csv.h"

#include "evax/core/error.h"

namespace evax {

std::vector<CsvRecord> csv_parse(const std::string& text, const std::string& origin) {
  std::vector<CsvRecord> records;
  const size_t n = text.size();
  size_t i = text.compare(0, 3, "\xEF\xBB\xBF") == 0 ? 3 : 0;
  int64_t line = 1;
  // Consumes a line end at i ("\n" or "\r\n"); false when there is none.
  const auto eat_newline = [&]() {
    if (i < n && text[i] == '\n') return ++i, ++line, true;
    if (i + 1 < n && text[i] == '\r' && text[i + 1] == '\n') return i += 2, ++line, true;
    return false;
  };
  while (i < n) {
    if (eat_newline()) continue;  // blank line
    CsvRecord rec;
    rec.line = line;
    while (true) {
      std::string field;
      if (i < n && text[i] == '"') {
        const int64_t open_line = line;
        ++i;
        while (true) {
          if (i >= n)
            raise<DataError>(origin, ":", open_line, ": unterminated quoted field");
          const char c = text[i];
          if (c == '"') {
            if (i + 1 < n && text[i + 1] == '"') {
              field += '"';
              i += 2;
              continue;
            }
            ++i;
            break;
          }
          if (c == '\n') ++line;
          field += c;
          ++i;
        }
        if (i < n && text[i] != ',' && text[i] != '\n' && text.compare(i, 2, "\r\n") != 0)
          raise<DataError>(origin, ":", line, ": text after a closing quote");
      } else {
        while (i < n && text[i] != ',' && text[i] != '\n' && text.compare(i, 2, "\r\n") != 0)
          field += text[i++];
      }
      rec.fields.push_back(std::move(field));
      if (i < n && text[i] == ',') {
        ++i;
        continue;
      }
      eat_newline();
      break;
    }
    records.push_back(std::move(rec));
  }
  return records;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\r\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char ch : s) q += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return q + "\"";
}

}  // namespace evax
