// read_file_gunzip: plain files pass through, gzip (one or several members) is inflated, damaged
// or truncated gzip data is a DataError naming the file.
#include "evax/io/gzip.h"

#include <zlib.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>

#include "evax/core/error.h"
#include "test_util.h"

using Catch::Matchers::Contains;

namespace {

std::string gzip(const std::string& text, int level) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY) == Z_OK);
  std::string out(deflateBound(&z, static_cast<uLong>(text.size())) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(text.data()));
  z.avail_in = static_cast<uInt>(text.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

std::string put(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

}  // namespace

TEST_CASE("read_file_gunzip: plain, gzip, multi-member, damaged") {
  evax::test::TempDir dir("gzip");
  std::string text = "dicom_id,split\n";
  for (int i = 0; i < 20000; ++i) text += "d" + std::to_string(i) + ",train\n";  // > one buffer

  CHECK(evax::read_file_gunzip(put(dir / "plain.csv", text)) == text);
  CHECK(evax::read_file_gunzip(put(dir / "a.csv.gz", gzip(text, 6))) == text);
  CHECK(evax::read_file_gunzip(put(dir / "stored.gz", gzip(text, 0))) == text);
  // Name does not matter: the magic does.
  CHECK(evax::read_file_gunzip(put(dir / "named.csv", gzip(text, 9))) == text);
  // `cat a.gz b.gz` is one valid gzip file of both texts.
  CHECK(evax::read_file_gunzip(put(dir / "two.gz", gzip("first\n", 6) + gzip("second\n", 6))) ==
        "first\nsecond\n");
  CHECK(evax::read_file_gunzip(put(dir / "empty.gz", gzip("", 6))).empty());

  const std::string good = gzip(text, 6);
  auto error = [&](const std::string& bytes) {
    try {
      evax::read_file_gunzip(put(dir / "bad.csv.gz", bytes));
    } catch (const evax::DataError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  CHECK_THAT(error(good.substr(0, good.size() / 2)), Contains("bad.csv.gz") && Contains("gzip"));
  CHECK_THAT(error(good.substr(0, good.size() - 3)), Contains("bad gzip data"));  // CRC/size cut
  std::string flipped = good;
  flipped[good.size() / 2] ^= 0x55;
  CHECK_THAT(error(flipped), Contains("bad gzip data"));
  CHECK_THAT(error(good + "trailing junk"), Contains("bad gzip data"));
}
