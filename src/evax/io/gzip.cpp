#include "evax/io/gzip.h"

#include <zlib.h>

#include "evax/core/error.h"
#include "evax/core/files.h"

namespace evax {

std::string read_file_gunzip(const std::string& path) {
  std::string in = read_file(path);
  if (in.size() < 2 || static_cast<unsigned char>(in[0]) != 0x1f ||
      static_cast<unsigned char>(in[1]) != 0x8b)
    return in;
  std::string out;
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK)  // 16: gzip header and trailer
    raise<DataError>("'", path, "': cannot start gzip decompression");
  z.next_in = reinterpret_cast<Bytef*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  char buf[1 << 16];
  int rc = Z_OK;
  for (;;) {
    z.next_out = reinterpret_cast<Bytef*>(buf);
    z.avail_out = sizeof buf;
    rc = inflate(&z, Z_NO_FLUSH);
    out.append(buf, sizeof buf - z.avail_out);
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) break;
      inflateReset(&z);  // another gzip member follows
      continue;
    }
    if (rc != Z_OK) break;
    if (z.avail_in == 0 && z.avail_out != 0) {
      rc = Z_BUF_ERROR;  // input ended inside a member
      break;
    }
  }
  const std::string why = z.msg ? z.msg : rc == Z_BUF_ERROR ? "truncated" : "damaged";
  inflateEnd(&z);
  if (rc != Z_STREAM_END) raise<DataError>("'", path, "': bad gzip data (", why, ")");
  return out;
}

}  // namespace evax
