#!/bin/sh
# fetch-tiny-inputs.sh [CACHE_DIR]
#
# Fetches the inputs of kiln's tiny test image (testdata/recipes/tiny.yaml)
# from the Debian 12 archive into CACHE_DIR (default .cache/tiny):
#
#   CACHE_DIR/vmlinuz   the kernel that linux-image-cloud-amd64 depends on
#   CACHE_DIR/rootfs/   busybox-static with one symlink per applet in bin/,
#                       the virtio NIC modules (uncompressed) in lib/modules/,
#                       and empty proc sys dev tmp etc run
#   CACHE_DIR/debs/     the downloaded .deb files
#
# It uses only apt-get download and dpkg-deb -x (plus apt-get update when the
# package lists are missing or stale), so it runs as root on a fresh Debian 12.
# It is idempotent: whatever is already in CACHE_DIR is kept, and every step
# builds in a temporary name and renames it into place when it is complete.
set -eu

# The order in which /init loads them (LAB.md): dependencies first.
MODULES="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net"

die() { echo "fetch-tiny-inputs: $*" >&2; exit 1; }
say() { echo "fetch-tiny-inputs: $*" >&2; }

CACHE=${1:-.cache/tiny}
mkdir -p "$CACHE/debs"
CACHE=$(cd "$CACHE" && pwd)
DEBS=$CACHE/debs

updated=
apt_update() {
	[ -n "$updated" ] && return 1
	say "apt-get update"
	apt-get update -qq >&2 || die "apt-get update failed"
	updated=1
}

# kernel_package prints the linux-image-*-cloud-amd64 package that the
# linux-image-cloud-amd64 metapackage depends on.
kernel_package() {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }'
}

# fetch PKG: downloads PKG's .deb into $DEBS unless one is there; prints its path.
fetch() {
	deb=$(ls "$DEBS/$1"_*.deb 2>/dev/null | head -n 1 || true)
	if [ -z "$deb" ]; then
		say "downloading $1"
		# As root, apt-get download drops to the _apt user, which cannot
		# write to a private cache directory: download as root instead.
		(cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$1" >&2) ||
			{ apt_update && (cd "$DEBS" && apt-get download -q -o APT::Sandbox::User=root "$1" >&2); } ||
			die "apt-get download $1 failed"
		deb=$(ls "$DEBS/$1"_*.deb 2>/dev/null | head -n 1 || true)
		[ -n "$deb" ] || die "apt-get download $1 left no .deb in $DEBS"
	fi
	echo "$deb"
}

# extract PKG: unpacks PKG's .deb into $DEBS/PKG/ unless done; prints the dir.
extract() {
	dir=$DEBS/$1
	if [ ! -d "$dir" ]; then
		deb=$(fetch "$1")
		rm -rf "$dir.tmp"
		dpkg-deb -x "$deb" "$dir.tmp" || die "dpkg-deb -x $deb failed"
		mv "$dir.tmp" "$dir"
	fi
	echo "$dir"
}

# unpack_module SRC DST: copies a kernel module, decompressing it if needed
# (busybox insmod loads plain .ko files only).
unpack_module() {
	case "$1" in
	*.ko) cp "$1" "$2.tmp" ;;
	*.ko.xz) xz -dc "$1" >"$2.tmp" ;;
	*.ko.zst) zstd -q -dc "$1" >"$2.tmp" ;;
	*.ko.gz) gzip -dc "$1" >"$2.tmp" ;;
	*) die "$1: unknown module compression" ;;
	esac || die "unpacking $1 failed"
	chmod 0644 "$2.tmp"
	mv "$2.tmp" "$2"
}

kpkg=$(kernel_package)
if [ -z "$kpkg" ]; then
	apt_update || true
	kpkg=$(kernel_package)
fi
[ -n "$kpkg" ] || die "apt-cache depends linux-image-cloud-amd64 names no linux-image package"
say "kernel package: $kpkg"

# The kernel.
if [ ! -f "$CACHE/vmlinuz" ]; then
	kdir=$(extract "$kpkg")
	set -- "$kdir"/boot/vmlinuz-*
	[ -f "$1" ] || die "$kpkg has no boot/vmlinuz-*"
	cp "$1" "$CACHE/vmlinuz.tmp"
	mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
	say "wrote $CACHE/vmlinuz"
fi

# The root tree: built aside, renamed into place once complete.
ROOTFS=$CACHE/rootfs
if [ ! -d "$ROOTFS" ]; then
	bdir=$(extract busybox-static)
	[ -x "$bdir/bin/busybox" ] || die "busybox-static has no bin/busybox"
	tmp=$ROOTFS.tmp
	rm -rf "$tmp"
	mkdir -p "$tmp/bin" "$tmp/lib/modules"
	for d in proc sys dev tmp etc run; do mkdir -p "$tmp/$d"; done
	chmod 1777 "$tmp/tmp"
	cp "$bdir/bin/busybox" "$tmp/bin/busybox"
	chmod 0755 "$tmp/bin/busybox"
	# The static binary runs on the host: ask it for its applets.
	for applet in $("$tmp/bin/busybox" --list); do
		[ "$applet" = busybox ] || ln -s busybox "$tmp/bin/$applet"
	done
	mv "$tmp" "$ROOTFS"
	say "wrote $ROOTFS"
fi

# The NIC modules, flat in lib/modules/.
missing=
for m in $MODULES; do
	[ -f "$ROOTFS/lib/modules/$m.ko" ] && continue
	missing="$missing $m"
done
if [ -n "$missing" ]; then
	kdir=$(extract "$kpkg")
	for m in $missing; do
		src=$(find "$kdir"/lib/modules/*/kernel -name "$m.ko*" | head -n 1)
		if [ -z "$src" ]; then
			# Built into the kernel: nothing to load.
			grep -qs "/$m.ko" "$kdir"/lib/modules/*/modules.builtin &&
				{ say "$m is built in"; continue; }
			die "$kpkg has no module $m"
		fi
		unpack_module "$src" "$ROOTFS/lib/modules/$m.ko"
		say "added lib/modules/$m.ko"
	done
fi
say "ready: $CACHE"
