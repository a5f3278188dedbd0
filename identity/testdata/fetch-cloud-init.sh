#!/bin/sh
# fetch-cloud-init.sh [DIR]: download Debian's cloud-init package and unpack it
# (without installing it: it ships boot services) into DIR (default
# .cache/cloud-init at the repository root), for identity's tests, which run
# its Python modules with the system python3. The Python libraries it imports
# are plain Debian packages without services:
#   apt-get install -y python3-yaml python3-jsonschema python3-jinja2 \
#     python3-configobj python3-requests python3-netifaces python3-jsonpatch \
#     python3-oauthlib python3-serial
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$root/.cache/cloud-init}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
if [ -f "$dir/root/usr/lib/python3/dist-packages/cloudinit/__init__.py" ]; then
	exit 0
fi
# apt-get download writes into the current directory; as root it warns that
# _apt cannot write there, which is harmless.
# Empty package lists (a fresh image) get one apt-get update, then a retry.
get() { (cd "$dir" && apt-get download -q -o APT::Sandbox::User=root cloud-init); }
rm -f "$dir"/cloud-init_*.deb
get || { apt-get update -qq && get; }
rm -rf "$dir/root.tmp"
dpkg-deb -x "$dir"/cloud-init_*.deb "$dir/root.tmp"
mv "$dir/root.tmp" "$dir/root"
echo "cloud-init $(dpkg-deb -f "$dir"/cloud-init_*.deb Version) unpacked in $dir/root"
