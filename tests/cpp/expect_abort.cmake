# Runs PROGRAM (with ARGS, a ;-list, if given) and passes only if it fails and its stderr matches EXPECT.
execute_process(COMMAND "${PROGRAM}" ${ARGS} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0)
  message(FATAL_ERROR "expected ${PROGRAM} to fail, it exited 0\nstdout: ${out}\nstderr: ${err}")
endif()
if(NOT err MATCHES "${EXPECT}")
  message(FATAL_ERROR "stderr of ${PROGRAM} does not match '${EXPECT}'\nstderr: ${err}")
endif()
message(STATUS "failed as expected (${rc}): ${err}")
