#!/bin/busybox sh
# kiln-ready: run once by systemd when the image has booted. The stage-1
# initramfs configured the network; this fetches the machine's identity
# (hostname) from the URL in kiln.identity=, sets the hostname and phones
# home to kiln.phonehome= with the image's inputs digest. Console lines
# start with "kiln:" for the end-to-end tests.
bb=/bin/busybox

fail() {
	echo "kiln: FAILED $*" >/dev/console
	exit 1
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

[ -r /etc/kiln/image ] || fail "no /etc/kiln/image"
. /etc/kiln/image

identity=
phonehome=
set -f
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	kiln.identity=*) identity=${arg#kiln.identity=} ;;
	kiln.phonehome=*) phonehome=${arg#kiln.phonehome=} ;;
	esac
done
set +f
[ -n "$identity" ] || fail "no kiln.identity= on the kernel command line"
[ -n "$phonehome" ] || fail "no kiln.phonehome= on the kernel command line"

case "$identity" in
*\?*) identity="$identity&format=env" ;;
*) identity="$identity?format=env" ;;
esac
retry 5 $bb timeout 15 $bb wget -q -O /run/kiln-identity "$identity" || fail "cannot fetch identity from $identity"
(. /run/kiln-identity) >/dev/null 2>&1 || fail "bad identity from $identity"
. /run/kiln-identity
[ -n "$KILN_HOSTNAME" ] || fail "identity has no KILN_HOSTNAME"
$bb hostname "$KILN_HOSTNAME" || fail "hostname $KILN_HOSTNAME"
echo "kiln: hostname is $($bb hostname)" >/dev/console

retry 5 $bb timeout 15 $bb wget -q -O /run/kiln-phonehome --post-data "inputs=$KILN_INPUTS" "$phonehome" ||
	fail "cannot phone home to $phonehome"
echo "kiln: phoned home inputs=$KILN_INPUTS" >/dev/console
echo "kiln: ready (systemd, root $(findmnt -n -o FSTYPE / 2>/dev/null || echo '?'))" >/dev/console
