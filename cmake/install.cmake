# Installing luahook like a Debian admin expects, and its .deb (CPack).
#
#   cmake --install build/release --prefix /usr     # or the default /usr/local
#   ./scripts/package                               # build/package/luahook_<version>_<arch>.deb
#
# Under the prefix: bin/luahook, lib/systemd/system/luahook.service (systemd reads
# /usr/local/lib/systemd/system too) and share/doc/luahook/ (README.md, examples/). The
# configuration is where the unit reads it whatever the prefix: /etc/luahook/env.example
# and /etc/luahook/handlers/. /var/lib/luahook and the luahook user are made by the
# package's postinst (deploy/debian/), or by hand after `cmake --install` (deploy/README.md).
include(GNUInstallDirs)

set(LH_ETC_DIR /etc/luahook)
set(LH_UNIT ${CMAKE_SOURCE_DIR}/deploy/luahook.service)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${LH_UNIT})

install(TARGETS luahook RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# deploy/luahook.service names /usr/local/bin/luahook (deploy/README.md's steps); the
# installed unit names the binary under the prefix of this install, known only when it
# runs (cmake --install --prefix, CPack's /usr), so it is written then.
file(READ ${LH_UNIT} lh_unit_text)
if(NOT lh_unit_text MATCHES "\nExecStart=/usr/local/bin/luahook ")
    message(FATAL_ERROR "${LH_UNIT}: ExecStart no longer starts with /usr/local/bin/luahook; "
        "update cmake/install.cmake, which rewrites that path on install")
endif()
install(CODE "
    file(READ [[${LH_UNIT}]] unit)
    string(REPLACE \"ExecStart=/usr/local/bin/luahook \"
        \"ExecStart=\${CMAKE_INSTALL_PREFIX}/${CMAKE_INSTALL_BINDIR}/luahook \" unit \"\${unit}\")
    file(WRITE [[${CMAKE_BINARY_DIR}/install/luahook.service]] \"\${unit}\")
")
install(FILES ${CMAKE_BINARY_DIR}/install/luahook.service DESTINATION lib/systemd/system)

install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY examples/ DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)

install(FILES deploy/env.example DESTINATION ${LH_ETC_DIR})
install(DIRECTORY DESTINATION ${LH_ETC_DIR}/handlers)

# The .deb. Depends: the shared libraries the binary links, found by dpkg-shlibdeps
# (dpkg-dev; cmake/cpack_project.cmake refuses to package without it), plus what the
# maintainer scripts and https need.
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME luahook)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "luahook maintainers <maintainers@users.noreply.r-seed-ede4fb5d.example>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "webhook server that runs Lua handlers (Label Studio events)")
set(CPACK_PACKAGE_DESCRIPTION "luahook receives webhook events, Label Studio's first of all, and runs
the operator's Lua handlers for them: an HTTP server with a token, exact JSON
decoding, outbound HTTP, timers, reload without dropping an event, metrics.
The package installs the binary, the systemd unit luahook.service (neither
enabled nor started), the system user luahook, /etc/luahook/ (env with a
fresh LUAHOOK_TOKEN, handlers/) and /var/lib/luahook.")
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/package)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
# passwd: useradd/userdel in postinst/postrm; ca-certificates: https with verification.
set(CPACK_DEBIAN_PACKAGE_DEPENDS "passwd, ca-certificates")
configure_file(deploy/debian/conffiles.in ${CMAKE_BINARY_DIR}/install/conffiles @ONLY)
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/deploy/debian/postinst
    ${CMAKE_SOURCE_DIR}/deploy/debian/prerm
    ${CMAKE_SOURCE_DIR}/deploy/debian/postrm
    ${CMAKE_BINARY_DIR}/install/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_SOURCE_DIR}/cmake/cpack_project.cmake)
set(CPACK_STRIP_FILES ON)
include(CPack)
