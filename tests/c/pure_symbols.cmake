# ctest pure_core_no_io: fails when an object of the pure core (peeklock_pure)
# refers to a clock, thread, socket, sleep, libcurl or client function. The pure
# core is handed the time and does no I/O; csrc/CMakeLists.txt keeps libcurl's
# headers out at compile time, and this looks at what the objects call.
# Usage: cmake -DNM=nm "-DOBJECTS=a.o;b.o" -P pure_symbols.cmake
execute_process(COMMAND ${NM} -u ${OBJECTS} OUTPUT_VARIABLE undef RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "${NM} -u failed (${rc})")
endif()
set(io "clock_gettime|gettimeofday|time|timespec_get|pthread_[a-z_]+|thrd_[a-z_]+|socket|connect|poll")
set(io "${io}|epoll_[a-z_]+|select|send|recv|nanosleep|usleep|sleep|curl_[a-z_]+|pl_client_[a-z_]+")
string(REGEX MATCHALL "U (${io})\n" bad "${undef}")
if(bad)
  string(REPLACE "\n" " " bad "${bad}")
  message(FATAL_ERROR "the pure core refers to:${bad}")
endif()
message(STATUS "pure core: no clock, thread, socket, libcurl or client symbol")
