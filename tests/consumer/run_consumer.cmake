# Installs loopus into a scratch prefix, then configures and builds a host project that
# finds it with find_package(loopus) and runs it.
file(REMOVE_RECURSE ${WORK})
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC} -B ${WORK}/build -DLOOPUS_BUILD_TESTS=OFF
  -DLOOPUS_BUILD_BENCH=OFF -DLOOPUS_BUILD_EXAMPLES=OFF -DLOOPUS_BUILD_TOOLS=OFF -DLOOPUS_INSTALL=ON
  -DCMAKE_INSTALL_PREFIX=${WORK}/prefix -DCMAKE_CUDA_ARCHITECTURES=90 RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configure loopus failed")
endif()
# builds what is compiled (loopus::cuda, when the CUDA backend is on); the rest is header-only
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/build -j2 RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "build loopus failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --install ${WORK}/build RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "install failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -S ${SRC}/tests/consumer/project -B ${WORK}/consumer
  -DCMAKE_PREFIX_PATH=${WORK}/prefix -DCMAKE_BUILD_TYPE=Release RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "configure consumer failed")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${WORK}/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "build consumer failed")
endif()
execute_process(COMMAND ${WORK}/consumer/consumer RESULT_VARIABLE rc)
if(rc)
  message(FATAL_ERROR "consumer run failed")
endif()
