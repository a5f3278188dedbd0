#!/bin/sh
# /init of kiln's tiny test image (busybox sh, PID 1).
#
# Loads the virtio NIC modules, configures the first non-loopback interface
# by DHCP, fetches the machine's identity from the URL in kiln.identity=,
# sets the hostname, phones home to kiln.phonehome= with the image's inputs
# digest, and stays up. Every step prints a "kiln: ..." line on the console
# for the end-to-end tests; a failure prints "kiln: FAILED <why>" and
# reboots after a few seconds (under QEMU -no-reboot, that ends the VM).
export PATH=/bin

fail() {
	echo "kiln: FAILED $*"
	sleep 5
	reboot -f
	exec sleep 2147483647
}

# retry N CMD...: runs CMD up to N times, a second apart, until it succeeds.
retry() {
	n=$1
	shift
	while ! "$@"; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 1
	done
}

mount -t proc proc /proc || fail "mount /proc"
mount -t sysfs sysfs /sys || fail "mount /sys"
mount -t devtmpfs devtmpfs /dev || fail "mount /dev"
exec </dev/console >/dev/console 2>&1
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "mount /tmp"
mount -t tmpfs -o mode=0755 tmpfs /run || fail "mount /run"

# A failing "." ends a non-interactive shell: PID 1 must check first.
[ -r /etc/kiln/image ] || fail "no /etc/kiln/image"
. /etc/kiln/image
echo "kiln: init of image $KILN_IMAGE_NAME, inputs $KILN_INPUTS"

# The Debian cloud kernel has no built-in NIC driver: load virtio-net and
# what it needs, dependencies first. Skip what is built in or loaded.
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
	[ -d "/sys/module/$m" ] && continue
	insmod "/lib/modules/$m.ko" || fail "insmod $m"
done
echo "kiln: modules loaded"

ip link set lo up || fail "ip link set lo up"
iface=
i=0
while [ -z "$iface" ] && [ "$i" -lt 50 ]; do
	for d in /sys/class/net/*; do
		[ -e "$d" ] && [ "${d##*/}" != lo ] && iface=${d##*/} && break
	done
	[ -n "$iface" ] || sleep 0.1
	i=$((i + 1))
done
[ -n "$iface" ] || fail "no network interface"
ip link set "$iface" up || fail "ip link set $iface up"
udhcpc -i "$iface" -s /etc/udhcpc.script -q -n -t 20 -T 1 || fail "no DHCP lease on $iface"

identity=
phonehome=
server=
set -f # split the kernel command line on spaces, but never glob it
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	kiln.identity=*) identity=${arg#kiln.identity=} ;;
	kiln.phonehome=*) phonehome=${arg#kiln.phonehome=} ;;
	kiln.server=*) server=${arg#kiln.server=} ;;
	esac
done
set +f
# A machine kiln installed boots from its disk with only the image's own
# command line: kiln's installer left a seed in the disk's last MiB
# ("KILN-SEED 1", then shell assignments with the machine's URLs).
if [ -z "$identity" ] || [ -z "$phonehome" ]; then
	for d in /sys/block/nvme* /sys/block/vd* /sys/block/sd*; do
		[ -r "$d/size" ] || continue
		sectors=$(cat "$d/size")
		[ "$sectors" -gt 4096 ] || continue
		dd if="/dev/${d##*/}" of=/tmp/seed bs=512 skip=$((sectors - 2048)) count=2048 2>/dev/null || continue
		[ "$(head -n 1 /tmp/seed)" = "KILN-SEED 1" ] || continue
		tail -n +2 /tmp/seed | tr -d '\000' >/tmp/seed.env
		(. /tmp/seed.env) >/dev/null 2>&1 || fail "bad kiln seed on /dev/${d##*/}"
		. /tmp/seed.env
		identity=$KILN_IDENTITY_URL
		phonehome=$KILN_PHONEHOME_URL
		echo "kiln: booted from disk /dev/${d##*/}, generation $KILN_GENERATION"
		break
	done
fi

# iPXE's script puts the machine's URLs on the command line. A UKI booted
# by UEFI HTTP Boot carries only the image's own command line: then kiln is
# kiln.server= or, failing that, the DHCP server on kiln's default port.
if [ -z "$identity" ] || [ -z "$phonehome" ]; then
	if [ -z "$server" ]; then
		[ -r /run/kiln-dhcp ] && . /run/kiln-dhcp
		[ -n "$KILN_DHCP_SERVER" ] || fail "no kiln.identity= on the kernel command line and no DHCP server id"
		server="http://$KILN_DHCP_SERVER:8080"
	fi
	mac=$(cat "/sys/class/net/$iface/address") || fail "no MAC address on $iface"
	identity="$server/identity/$mac"
	phonehome="$server/phone-home/$mac"
	echo "kiln: no URLs on the command line, using $server"
fi

case "$identity" in
*\?*) identity="$identity&format=env" ;;
*) identity="$identity?format=env" ;;
esac
# busybox wget -T segfaults: bound it with timeout instead.
retry 5 timeout 15 wget -q -O /tmp/identity "$identity" || fail "cannot fetch identity from $identity"
(. /tmp/identity) >/dev/null 2>&1 || fail "bad identity from $identity"
. /tmp/identity
[ -n "$KILN_HOSTNAME" ] || fail "identity has no KILN_HOSTNAME"
hostname "$KILN_HOSTNAME" || fail "hostname $KILN_HOSTNAME"
echo "kiln: hostname is $(hostname)"

retry 5 timeout 15 wget -q -O /tmp/phonehome --post-data "inputs=$KILN_INPUTS" "$phonehome" ||
	fail "cannot phone home to $phonehome"
echo "kiln: phoned home inputs=$KILN_INPUTS"

echo "kiln: ready"
while :; do
	sleep 2147483647
done
