# The PyPI torch wheel is a CUDA build: its TorchConfig runs FindCUDA, enable_language(CUDA) and
# FindCUDAToolkit, so configuring needs a CUDA toolkit even though evax compiles no CUDA code.
# The venv carries one from PyPI (cuda-toolkit[nvcc,crt,cccl,nvvm], tools/requirements.txt) in
# site-packages/nvidia/cu13, next to the CUDA libraries torch itself loads. Point every CUDA
# lookup there explicitly, so /usr/local/cuda, CUDA_HOME, PATH and LIBRARY_PATH play no part.
#
# EVAX_CUDA_ROOT: the toolkit root (default: nvidia/cu13 beside the torch of CMAKE_PREFIX_PATH).
# EVAX_CUDA_ARCHITECTURES: the architectures CMake's CUDA language is configured for (evax has no
# kernels; set explicitly because detecting a default needs a working toolkit and a GPU).
set(EVAX_CUDA_ROOT "" CACHE PATH "CUDA toolkit root (default: the torch wheel's nvidia/cu13)")
set(EVAX_CUDA_ARCHITECTURES "80;90;100" CACHE STRING "CUDA architectures for CMake's CUDA language")

if(NOT EVAX_CUDA_ROOT)
  foreach(prefix ${CMAKE_PREFIX_PATH})
    # torch.utils.cmake_prefix_path is site-packages/torch/share/cmake.
    get_filename_component(site "${prefix}/../../.." ABSOLUTE)
    if(EXISTS "${site}/torch" AND EXISTS "${site}/nvidia/cu13/bin/nvcc")
      set(EVAX_CUDA_ROOT "${site}/nvidia/cu13" CACHE PATH "" FORCE)
      break()
    endif()
  endforeach()
endif()

if(EVAX_CUDA_ROOT)
  if(NOT EXISTS "${EVAX_CUDA_ROOT}/bin/nvcc" OR NOT EXISTS "${EVAX_CUDA_ROOT}/include/crt/host_config.h")
    message(FATAL_ERROR "EVAX_CUDA_ROOT=${EVAX_CUDA_ROOT} lacks bin/nvcc or include/crt/host_config.h: "
                        "install tools/requirements.txt (cuda-toolkit[nvcc,crt,cccl,nvvm]) into the venv")
  endif()
  set(CUDA_TOOLKIT_ROOT_DIR "${EVAX_CUDA_ROOT}" CACHE PATH "" FORCE)
  set(CUDAToolkit_ROOT "${EVAX_CUDA_ROOT}")
  set(CMAKE_CUDA_COMPILER "${EVAX_CUDA_ROOT}/bin/nvcc" CACHE FILEPATH "" FORCE)
  set(CMAKE_CUDA_ARCHITECTURES "${EVAX_CUDA_ARCHITECTURES}" CACHE STRING "" FORCE)
  # nvcc.profile links from lib64/, a toolkit's symlink that the wheels lack: name lib/ instead.
  set(CMAKE_CUDA_FLAGS "-L${EVAX_CUDA_ROOT}/lib" CACHE STRING "" FORCE)
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0;10.0" CACHE STRING "")
  # The wheels ship versioned sonames only (libcudart.so.13): let find_library match those while
  # TorchConfig looks (restored after find_package(Torch)).
  set(EVAX_SAVED_FIND_SUFFIXES "${CMAKE_FIND_LIBRARY_SUFFIXES}")
  list(APPEND CMAKE_FIND_LIBRARY_SUFFIXES .so.13 .so.12 .so.10)
  message(STATUS "evax: CUDA toolkit from the venv: ${EVAX_CUDA_ROOT}")
endif()
