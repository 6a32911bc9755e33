// A JPEG writer for the io tests, on libjpeg's compressor (evax itself only decodes JPEG).
// Valid input only: libjpeg's default error handler (exit) stays, which is fine in a test.
#pragma once

// jpeglib.h needs FILE and size_t declared first.
#include <jpeglib.h>

#include <cstdio>
#include <cstdlib>
#include <opencv2/core.hpp>
#include <string>

namespace evax::test {

struct JpegWriteOptions {
  int quality = 90;
  int h_samp = 2, v_samp = 2;  ///< luma sampling factors of a colour image (2, 2: 4:2:0)
  bool progressive = false;
  int restart_rows = 0;   ///< a restart marker every this many MCU rows (0: none)
  bool optimize = false;  ///< optimised Huffman tables
};

/// `img` (CV_8UC1 grey or CV_8UC3 BGR) as a JPEG file.
inline std::string jpeg_write(const cv::Mat& img, const JpegWriteOptions& o = {}) {
  jpeg_compress_struct c;
  jpeg_error_mgr err;
  c.err = jpeg_std_error(&err);
  jpeg_create_compress(&c);
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  jpeg_mem_dest(&c, &buf, &size);
  c.image_width = static_cast<JDIMENSION>(img.cols);
  c.image_height = static_cast<JDIMENSION>(img.rows);
  c.input_components = img.channels();
  c.in_color_space = img.channels() == 1 ? JCS_GRAYSCALE : JCS_EXT_BGR;
  jpeg_set_defaults(&c);
  jpeg_set_quality(&c, o.quality, TRUE);
  if (img.channels() == 3) {
    c.comp_info[0].h_samp_factor = o.h_samp;
    c.comp_info[0].v_samp_factor = o.v_samp;
  }
  if (o.progressive) jpeg_simple_progression(&c);
  c.restart_in_rows = o.restart_rows;
  c.optimize_coding = o.optimize ? TRUE : FALSE;
  jpeg_start_compress(&c, TRUE);
  while (c.next_scanline < c.image_height) {
    JSAMPROW row = const_cast<JSAMPROW>(img.ptr<uint8_t>(static_cast<int>(c.next_scanline)));
    jpeg_write_scanlines(&c, &row, 1);
  }
  jpeg_finish_compress(&c);
  std::string out(reinterpret_cast<const char*>(buf), size);
  jpeg_destroy_compress(&c);
  std::free(buf);
  return out;
}

}  // namespace evax::test
