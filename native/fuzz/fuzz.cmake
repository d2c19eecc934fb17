# libFuzzer harnesses, one per kernel family (native/fuzz/README.md). Clang only:
#   cmake -S . -B build/fuzz -DCMAKE_C_COMPILER=clang -DEG_FUZZ=ON -DEG_SANITIZE=ON -DEG_BUILD_TESTS=OFF
# (`make fuzz` does this). The library gets coverage instrumentation; EG_SANITIZE
# adds AddressSanitizer and UndefinedBehaviorSanitizer to it and to the harnesses.
if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
  message(FATAL_ERROR "EG_FUZZ needs clang (libFuzzer): -DCMAKE_C_COMPILER=clang")
endif()
target_compile_options(edgeguard_static PRIVATE -fsanitize=fuzzer-no-link)
set(EG_FUZZ_TARGETS bit_depth median softmax scores preprocess lut nlm)
foreach(name IN LISTS EG_FUZZ_TARGETS)
  add_executable(fuzz_${name} native/fuzz/fuzz_${name}.c)
  target_link_libraries(fuzz_${name} PRIVATE edgeguard_static m)
  target_compile_options(fuzz_${name} PRIVATE ${EG_COMMON_FLAGS} -fsanitize=fuzzer)
  target_link_options(fuzz_${name} PRIVATE -fsanitize=fuzzer)
endforeach()
