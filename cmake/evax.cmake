# Helpers shared by src/, apps/ and tests/.

# One precompiled header for every target that includes torch: torch/torch.h costs ~20 s per
# translation unit otherwise.
add_library(evax_torch_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch_anchor.cpp)
target_link_libraries(evax_torch_pch PUBLIC torch)
target_precompile_headers(evax_torch_pch PUBLIC <torch/torch.h>)

# evax_layer(NAME DEPS... [TORCH]): a static library from src/evax/<NAME>/*.cpp.
function(evax_layer name)
  cmake_parse_arguments(L "TORCH" "" "DEPS;LIBS" ${ARGN})
  file(GLOB srcs CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/src/evax/${name}/*.cpp)
  if(NOT srcs)  # a layer without sources yet: header-only
    add_library(evax_${name} INTERFACE)
    target_include_directories(evax_${name} INTERFACE ${PROJECT_SOURCE_DIR}/src)
    target_link_libraries(evax_${name} INTERFACE ${L_DEPS} ${L_LIBS})
    return()
  endif()
  add_library(evax_${name} STATIC ${srcs})
  target_include_directories(evax_${name} PUBLIC ${PROJECT_SOURCE_DIR}/src)
  target_link_libraries(evax_${name} PUBLIC ${L_DEPS} ${L_LIBS} PRIVATE evax_warnings)
  if(L_TORCH)
    target_link_libraries(evax_${name} PUBLIC torch)
    target_precompile_headers(evax_${name} REUSE_FROM evax_torch_pch)
  endif()
endfunction()
