# OpenCV without OpenCVConfig.cmake: Debian ships that file only in libopencv-dev, which depends
# on every OpenCV module's -dev package (138 more packages: VTK, Qt, FFmpeg, GStreamer …). evax
# uses two modules, whose -dev packages carry the headers and the .so links: find those. Not
# imgcodecs, which pulls in some 150 libraries (GDAL, HDF5, poppler, x265 …): evax decodes PNG and
# JPEG itself (src/evax/io/png.h, jpeg.h).
find_path(EVAX_OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4 REQUIRED)
set(OpenCV_LIBS "")
foreach(module core imgproc)
  find_library(EVAX_OPENCV_${module}_LIBRARY opencv_${module} REQUIRED)
  add_library(evax::opencv_${module} UNKNOWN IMPORTED)
  set_target_properties(evax::opencv_${module} PROPERTIES
    IMPORTED_LOCATION "${EVAX_OPENCV_${module}_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${EVAX_OPENCV_INCLUDE_DIR}")
  list(APPEND OpenCV_LIBS evax::opencv_${module})
endforeach()
