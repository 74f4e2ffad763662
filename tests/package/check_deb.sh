#!/usr/bin/env bash
# usage: check_deb.sh BUILD_DIR VERSION     (ctest: package_deb, release build only)
#
# Builds the .deb with cpack from BUILD_DIR into a temporary folder, then checks what
# `dpkg-deb -c` and `dpkg-deb -I` say: the binary, the unit, the docs and /etc/luahook/,
# all owned by root; name, version, Depends (the shared libraries, found by
# dpkg-shlibdeps), the maintainer scripts and the conffile. Needs no root.
set -euo pipefail
build=$1
version=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
check() { # check DESCRIPTION COMMAND...
    if "${@:2}" >/dev/null 2>&1; then
        echo "ok   $1"
    else
        echo "FAIL $1"
        fails=$((fails + 1))
    fi
}

if ! (cd "$build" && cpack -G DEB -B "$tmp" >"$tmp/cpack.log" 2>&1); then
    cat "$tmp/cpack.log"
    echo "FAIL cpack"
    exit 1
fi
debs=("$tmp"/luahook_*.deb)
[ -f "${debs[0]}" ] || { cat "$tmp/cpack.log"; echo "FAIL no .deb in $tmp"; exit 1; }
deb=${debs[0]}
echo "package: $(basename "$deb")"
dpkg-deb -c "$deb" >"$tmp/contents"
dpkg-deb -I "$deb" >"$tmp/info"
field() { dpkg-deb -f "$deb" "$1"; }

# contents: "-rwxr-xr-x root/root 12345 2026-11-27 17:27 ./usr/bin/luahook"
has() { # has MODE PATH
    awk -v m="$1" -v p="./$2" '$1 == m && $2 == "root/root" && $6 == p { f = 1 } END { exit !f }' \
        "$tmp/contents"
}
check "/usr/bin/luahook, 0755 root" has -rwxr-xr-x usr/bin/luahook
check "/usr/lib/systemd/system/luahook.service, 0644 root" \
    has -rw-r--r-- usr/lib/systemd/system/luahook.service
check "/usr/share/doc/luahook/README.md" has -rw-r--r-- usr/share/doc/luahook/README.md
check "/usr/share/doc/luahook/examples/archive.lua" \
    has -rw-r--r-- usr/share/doc/luahook/examples/archive.lua
check "/etc/luahook/env.example, 0644 root" has -rw-r--r-- etc/luahook/env.example
check "/etc/luahook/handlers/, 0755 root" has drwxr-xr-x etc/luahook/handlers/
check "every entry owned by root/root" \
    awk '$2 != "root/root" { bad = 1 } END { exit bad }' "$tmp/contents"
check "no secret shipped: no /etc/luahook/env" \
    awk '$6 == "./etc/luahook/env" { bad = 1 } END { exit bad }' "$tmp/contents"
check "nothing under /usr/local, /var or /home" \
    awk '$6 ~ /^\.\/(usr\/local|var|home)\// { bad = 1 } END { exit bad }' "$tmp/contents"

# info
check "Package: luahook" test "$(field Package)" = luahook
check "Version: $version-1" test "$(field Version)" = "$version-1"
check "Architecture: $(dpkg --print-architecture)" \
    test "$(field Architecture)" = "$(dpkg --print-architecture)"
check "Maintainer set" test -n "$(field Maintainer)"
depends=$(field Depends)
echo "     Depends: $depends"
for d in libc6 liblua5.4-0 libuv1 libcurl4 passwd ca-certificates; do
    check "Depends names $d" grep -Eq "(^|, )$d( |,|$)" <<<"$depends"
done
for s in postinst prerm postrm conffiles md5sums; do
    check "control: $s" grep -Eq "^ +[0-9]+ bytes, +[0-9]+ lines +\*? *$s( |$)" "$tmp/info"
done

# the files themselves
mkdir "$tmp/x" "$tmp/c"
dpkg-deb -x "$deb" "$tmp/x"
dpkg-deb -e "$deb" "$tmp/c"
check "conffiles lists /etc/luahook/env.example" grep -qx /etc/luahook/env.example "$tmp/c/conffiles"
for s in postinst prerm postrm; do
    check "$s is 0755 and parses (sh -n)" \
        sh -c "test \"\$(stat -c %a '$tmp/c/$s')\" = 755 && sh -n '$tmp/c/$s'"
done
unit=$tmp/x/usr/lib/systemd/system/luahook.service
check "the unit starts /usr/bin/luahook" grep -q '^ExecStart=/usr/bin/luahook serve ' "$unit"
check "the unit reads /etc/luahook/env" grep -qx 'EnvironmentFile=/etc/luahook/env' "$unit"
check "the unit serves /etc/luahook/handlers" grep -q '^ExecStart=.* /etc/luahook/handlers$' "$unit"
check "the unit runs as luahook" grep -qx 'User=luahook' "$unit"
check "the packaged binary runs: luahook --version says $version" \
    sh -c "'$tmp/x/usr/bin/luahook' --version | grep -q '^luahook $version '"
check "the env template has no token set" sh -c "! grep -q '^LUAHOOK_TOKEN=' '$tmp/x/etc/luahook/env.example'"

if [ "$fails" -ne 0 ]; then
    echo "package_deb: $fails checks failed"
    exit 1
fi
echo "package_deb: all checks passed"
