# Read by cpack for each package (CPACK_PROJECT_CONFIG_FILE). Without dpkg-shlibdeps,
# CPack would quietly build a .deb whose Depends lacks the shared libraries: refuse.
if(CPACK_GENERATOR STREQUAL "DEB")
    find_program(LH_DPKG_SHLIBDEPS dpkg-shlibdeps)
    find_program(LH_FILE file)
    if(NOT LH_DPKG_SHLIBDEPS OR NOT LH_FILE)
        message(FATAL_ERROR "packaging needs dpkg-shlibdeps and file: "
            "install dpkg-dev and file (./scripts/setup package does)")
    endif()
endif()
