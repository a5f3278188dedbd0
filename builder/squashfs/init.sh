#!/bin/sh
# /init of kiln's stage-1 initramfs (busybox sh, PID 1).
#
# The image's root is a squashfs too big for an initramfs. This script
# loads the few kernel modules it needs, configures the first NIC that
# gets a DHCP lease, downloads the squashfs from the URL in kiln.squashfs=,
# checks it against kiln.squashfs.digest=sha256:<hex>, mounts it read-only
# under a writable overlay kept in RAM and switches root to it, running
# kiln.init= (default /sbin/init) with the arguments the kernel gave us.
#
# The network configuration (address, route) is kernel state and survives
# the switch; resolv.conf is copied into the new root and the lease is in
# /run/kiln/dhcp.env. Every step prints a "kiln: ..." line on the console;
# a failure prints "kiln: FAILED <why>" and reboots after a few seconds
# (under QEMU -no-reboot, that ends the VM).
export PATH=/bin

fail() {
	echo "kiln: FAILED $*"
	sleep 5
	reboot -f
	exec sleep 2147483647
}

# retry N CMD...: runs CMD up to N times, two seconds apart, until it succeeds.
retry() {
	n=$1
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 2
	done
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
exec </dev/console >/dev/console 2>&1
# /run becomes the new root's /run. The squashfs and the overlay's upper
# layer live in their own tmpfs under it, readable only by root (the image
# holds /etc/shadow), which may use most of the RAM.
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run || fail "mount /run"
mkdir -p /run/kiln || fail "mkdir /run/kiln"
mount -t tmpfs -o mode=0700,size=90% kiln /run/kiln || fail "mount /run/kiln"
echo "kiln: stage-1 init"

# Kernel parameters. The kernel leaves the quotes of param="value" in
# /proc/cmdline: strip them. Split on spaces, but never glob.
url=
digest=
init=/sbin/init
fetchtimeout=300
set -f
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	kiln.squashfs=*) url=${arg#kiln.squashfs=} ;;
	kiln.squashfs.digest=*) digest=${arg#kiln.squashfs.digest=} ;;
	kiln.squashfs.timeout=*) fetchtimeout=${arg#kiln.squashfs.timeout=} ;;
	kiln.init=*) init=${arg#kiln.init=} ;;
	esac
done
set +f
url=${url#\"}
url=${url%\"}
digest=${digest#\"}
digest=${digest%\"}
init=${init#\"}
init=${init%\"}
[ -n "$url" ] || fail "no kiln.squashfs= on the kernel command line"
case "$digest" in
sha256:*) want=${digest#sha256:} ;;
*) fail "kiln.squashfs.digest=$digest is not sha256:<hex>" ;;
esac
case "$want" in
*[!0-9a-f]*) fail "kiln.squashfs.digest=$digest is not sha256:<hex>" ;;
esac
[ "${#want}" -eq 64 ] || fail "kiln.squashfs.digest=$digest is not sha256:<hex>"
case "$fetchtimeout" in
'' | *[!0-9]*) fail "kiln.squashfs.timeout=$fetchtimeout is not a number of seconds" ;;
esac
case "$init" in
/*) ;;
*) fail "kiln.init=$init is not an absolute path" ;;
esac

# Modules, dependencies first, as the build listed them in /etc/kiln/modules:
# "<name> required" or "<name> optional" (extra NIC drivers). Skip what is
# already loaded.
while read -r m need; do
	[ -d "/sys/module/$m" ] && continue
	if ! insmod "/lib/modules/$m.ko"; then
		[ "$need" = optional ] || fail "insmod $m"
		echo "kiln: cannot load optional module $m"
	fi
done </etc/kiln/modules
echo "kiln: modules loaded"

# list_nics prints the NICs: the interfaces backed by a device (not lo nor
# virtual ones), in name order.
list_nics() {
	for d in /sys/class/net/*; do
		[ -e "$d/device" ] && echo "${d##*/}"
	done
}

# has_link NIC: whether NIC has a link.
has_link() {
	[ "$(cat "/sys/class/net/$1/carrier" 2>/dev/null)" = 1 ]
}

# set_up brings every NIC up.
set_up() {
	for n in $(list_nics); do
		ip link set "$n" up || echo "kiln: cannot bring $n up"
	done
}

# any_link: whether some NIC has a link.
any_link() {
	for n in $(list_nics); do
		has_link "$n" && return 0
	done
	return 1
}

# by_link prints the NICs with a link, then the others.
by_link() {
	for n in $(list_nics); do
		has_link "$n" && echo "$n"
	done
	for n in $(list_nics); do
		has_link "$n" || echo "$n"
	done
}

# Drivers probe in the background: wait up to 30 s for a first NIC, then up
# to 5 s for a link (autonegotiation takes a few seconds on real hardware).
ip link set lo up || fail "ip link set lo up"
i=0
while [ -z "$(list_nics)" ]; do
	[ "$i" -lt 300 ] || fail "no network interface"
	sleep 0.1
	i=$((i + 1))
done
set_up
i=0
while [ "$i" -lt 50 ] && ! any_link; do
	sleep 0.1
	i=$((i + 1))
done

# Ask for a lease on each NIC in turn, those with a link first, and keep
# the first lease. Switch ports with spanning tree take far longer to
# forward than links take to come up: make three rounds, listing the NICs
# again each time for drivers that came late.
lease=
round=0
while [ -z "$lease" ] && [ "$round" -lt 3 ]; do
	set_up
	for n in $(by_link); do
		if udhcpc -i "$n" -s /etc/udhcpc.script -q -n -t 10 -T 1; then
			lease=$n
			break
		fi
	done
	round=$((round + 1))
done
[ -n "$lease" ] || fail "no DHCP lease on" $(list_nics)

# Fetch and check the root. busybox wget -T segfaults: bound each try with
# timeout instead, and start every try from an empty file.
img=/run/kiln/root.squashfs
fetch() {
	rm -f "$img"
	timeout "$fetchtimeout" wget -q -O "$img" "$url"
}
echo "kiln: fetching $url"
retry 5 fetch || fail "cannot fetch $url"
echo "kiln: fetched $(wc -c <"$img") bytes"
sum=$(sha256sum "$img") || fail "sha256sum $img"
sum=${sum%% *}
[ "$sum" = "$want" ] || fail "squashfs from $url has digest sha256:$sum, want $digest"
echo "kiln: squashfs verified $digest"

# The read-only squashfs under a writable tmpfs layer, merged at /newroot
# (a directory of this initramfs, in RAM).
mkdir -p /run/kiln/lower /run/kiln/upper /run/kiln/work || fail "mkdir under /run/kiln"
mount -t squashfs -o ro,loop "$img" /run/kiln/lower || fail "mount $img"
mount -t overlay -o lowerdir=/run/kiln/lower,upperdir=/run/kiln/upper,workdir=/run/kiln/work overlay /newroot ||
	fail "mount overlay on /newroot"

# runnable PATH: whether PATH is an executable file as the new root will see
# it, following the symlinks of its last component from /newroot (an
# absolute target such as /sbin/init -> /lib/systemd/systemd would
# otherwise resolve in this initramfs).
runnable() {
	p=$1
	n=0
	while [ -L "/newroot$p" ] && [ "$n" -lt 20 ]; do
		l=$(readlink "/newroot$p") || return 1
		case "$l" in
		/*) p=$l ;;
		*) p=${p%/*}/$l ;;
		esac
		n=$((n + 1))
	done
	[ -f "/newroot$p" ] && [ -x "/newroot$p" ]
}
runnable "$init" || fail "no executable $init in the image"

# Name servers from the lease, unless the image manages resolv.conf with a
# symlink (systemd-resolved and the like).
if [ -s /etc/resolv.conf ] && [ -d /newroot/etc ] && [ ! -L /newroot/etc/resolv.conf ]; then
	cat /etc/resolv.conf >/newroot/etc/resolv.conf || fail "write /etc/resolv.conf in the image"
fi

for m in dev proc sys run; do
	mkdir -p "/newroot/$m" || fail "mkdir /$m in the image"
	mount --move "/$m" "/newroot/$m" || fail "move /$m into the image"
done
echo "kiln: switching root to $init"
exec switch_root /newroot "$init" "$@"
