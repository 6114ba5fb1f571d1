# Compiles one snippet (syntax only) and checks the outcome: EXPECT=fail needs a
# compiler error containing MESSAGE; EXPECT=pass needs success.
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only -I${INC} -I${JSON_INC} ${SRC}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(EXPECT STREQUAL "pass")
  if(rc)
    message(FATAL_ERROR "${SRC} should compile but did not:\n${err}")
  endif()
else()
  if(NOT rc)
    message(FATAL_ERROR "${SRC} compiled, but a bad policy must be rejected")
  endif()
  string(FIND "${err}" "${MESSAGE}" pos)
  if(pos EQUAL -1)
    message(FATAL_ERROR "${SRC} failed without the readable message '${MESSAGE}':\n${err}")
  endif()
endif()
