#!/usr/bin/env bash
# bench/tftp.sh: TFTP read throughput of kiln against tftpd-hpa, in the same
# run, with curl and atftp as clients. See docs/benchmarks.md ("TFTP").
#
#   bash bench/tftp.sh              # as root; or via make bench
#
# Cases (each a median of BENCH_RUNS, kiln and tftpd-hpa interleaved):
#   curl-1468, curl-8192    one 64 MiB file, curl --tftp-blksize N
#   atftp-1468, atftp-8192  the same file, atftp --option "blksize N"
#   atftp-1468-w4           blksize 1468 and --option "windowsize 4", what
#                           OVMF's PXE asks for (RFC 7440; a server without
#                           windowsize answers without the option and the
#                           client falls back to lock-step)
#   atftp-8192-w16          blksize 8192 and windowsize 16
#   conc-20                 20 distinct 1 MiB files fetched at once by 20
#                           curl processes (blksize 1468, the size firmware
#                           asks for): the time until the last one is done
# Every fetch is checked for its size (and, once per case and server, its
# bytes with cmp); a short or failed fetch fails the script.
#
# Network: two network namespaces made here, kiln-bench-PID-tsrv and
# kiln-bench-PID-tcli, joined by one veth pair (MTU 1500, so a 8192-byte
# block travels as IP fragments, as it would on a real link). Both servers
# run at once in the server namespace: kiln on 10.97.0.1:69, tftpd-hpa on
# 10.97.0.1:6969. Nothing touches an interface of the host; everything
# started here is stopped by PID and the namespaces are deleted on exit.
#
# Environment:
#   KILN=PATH        the kiln binary (default: build one from this tree)
#   BENCH_RUNS=3     runs of every case and server (median shown)
#   BENCH_SIZE_MB=64 size of the big file
#   BENCH_CONC=20    concurrent fetches of 1 MiB files
#   BENCH_TIMEOUT=120 seconds any one fetch may take
#   TMPDIR           scratch (the files served) in ${TMPDIR:-/tmp}/kiln-bench-PID
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
SIZE_MB=${BENCH_SIZE_MB:-64}
CONC=${BENCH_CONC:-20}
TIMEOUT=${BENCH_TIMEOUT:-120}
export PATH="/usr/local/go/bin:$PATH"
export LC_ALL=C

die() { echo "bench: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the benchmark makes network namespaces"
for tool in ip in.tftpd curl atftp timeout awk ss cmp; do
	command -v "$tool" >/dev/null || die "$tool is missing (apt-get install iproute2 tftpd-hpa curl atftp)"
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $SIZE_MB =~ ^[1-9][0-9]*$ && $CONC =~ ^[1-9][0-9]*$ && $TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
	die "BENCH_RUNS, BENCH_SIZE_MB, BENCH_CONC and BENCH_TIMEOUT must be >= 1"
((SIZE_MB <= 1024 && CONC <= 100 && RUNS <= 20)) || die "bounds: BENCH_SIZE_MB <= 1024, BENCH_CONC <= 100, BENCH_RUNS <= 20"

WORK="${TMPDIR:-/tmp}/kiln-bench-$$"
NS_SRV="kiln-bench-$$-tsrv"
NS_CLI="kiln-bench-$$-tcli"
IF_SRV="kb$$t"
IF_CLI="kb$$u"
SRV_IP=10.97.0.1
CLI_IP=10.97.0.2
KILN_PORT=69
HPA_PORT=6969
PIDS=()

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	local pid ns i
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do
		for ((i = 0; i < 30; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	# Only what runs inside our own namespaces: started by this script.
	for ns in "$NS_SRV" "$NS_CLI"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
		ip netns del "$ns" 2>/dev/null || true
	done
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$WORK"
chmod 755 "$WORK"

if [ -n "${KILN:-}" ]; then
	KILN=$(readlink -f "$KILN")
else
	command -v go >/dev/null || die "go is missing: install it or set KILN=path/to/kiln"
	(cd "$REPO" && go build -o "$WORK/kiln" ./cmd/kiln)
	KILN="$WORK/kiln"
fi

# --- the files ----------------------------------------------------------------
ROOT="$WORK/root"
DL="$WORK/dl"
mkdir -p "$ROOT" "$DL"
head -c "$((SIZE_MB << 20))" /dev/urandom >"$ROOT/big.bin"
for ((i = 1; i <= CONC; i++)); do head -c $((1 << 20)) /dev/urandom >"$ROOT/small$i.bin"; done
chmod -R a+rX "$ROOT"
BIG=$((SIZE_MB << 20))

# --- the network and the servers ---------------------------------------------------
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip -n "$NS_SRV" link add "$IF_SRV" type veth peer name "$IF_CLI" netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev "$IF_SRV"
ip -n "$NS_CLI" addr add "$CLI_IP/24" dev "$IF_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do ip -n "$ns" link set lo up; done
ip -n "$NS_SRV" link set "$IF_SRV" up
ip -n "$NS_CLI" link set "$IF_CLI" up

KILN_FLAGS=(serve --interface "$IF_SRV" --data "$WORK/kiln-data" --tftp-root "$ROOT" --tftp-port "$KILN_PORT" --log-level warn)
# Flags of newer kilns, used when this one has them: no cap below the
# benchmark's concurrency or window.
help=$("$KILN" serve --help 2>&1 || true)
[[ $help != *-tftp-max-transfers* ]] || KILN_FLAGS+=(--tftp-max-transfers 100)
[[ $help != *-tftp-max-window* ]] || KILN_FLAGS+=(--tftp-max-window 64)
ip netns exec "$NS_SRV" "$KILN" "${KILN_FLAGS[@]}" >"$WORK/kiln.out" 2>&1 &
PIDS+=($!)
HPA_FLAGS=(-L -s "$ROOT" -a "$SRV_IP:$HPA_PORT")
ip netns exec "$NS_SRV" in.tftpd "${HPA_FLAGS[@]}" >"$WORK/hpa.out" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do
	n=$(ip netns exec "$NS_SRV" ss -Huln "( sport = :$KILN_PORT or sport = :$HPA_PORT )" | wc -l)
	((n >= 2)) && break
	for pid in "${PIDS[@]}"; do
		kill -0 "$pid" 2>/dev/null || { cat "$WORK/kiln.out" "$WORK/hpa.out" >&2; die "a server exited at start"; }
	done
	sleep 0.1
done
((n >= 2)) || { cat "$WORK/kiln.out" "$WORK/hpa.out" >&2; die "the servers do not listen after 10 s"; }

# --- the machine -------------------------------------------------------------
psi() {
	local cpu
	cpu=$(sed -n 's/^some avg10=[^ ]* avg60=\([^ ]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null)
	echo "cpu pressure (some, 60 s) ${cpu:-?}%"
}
load() { echo "load $(cut -d' ' -f1-3 /proc/loadavg); $(psi)"; }
echo "kiln TFTP benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "kiln:      $("$KILN" version 2>/dev/null || echo '?') ($KILN)"
echo "machine:   $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "cpu:       $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
echo "before:    $(load)"
echo "tftpd-hpa: $(in.tftpd -V 2>&1 | head -n 1)"
echo "curl:      $(curl --version | head -n 1 | cut -d' ' -f1-2)"
echo "atftp:     $(atftp -V 2>&1 | head -n 1)"
echo "network:   $NS_SRV $IF_SRV $SRV_IP/24 <-veth-> $NS_CLI $IF_CLI $CLI_IP/24"
echo "servers:   kiln ${KILN_FLAGS[*]}"
echo "           in.tftpd ${HPA_FLAGS[*]}"
echo "files:     big.bin $SIZE_MB MiB, small1..$CONC.bin 1 MiB each (from /dev/urandom)"

RESULTS="$WORK/results" # lines: CASE SERVER SECONDS
: >"$RESULTS"

# fetch CLIENT BLKSIZE WINDOW PORT FILE OUT: one fetch in the client namespace.
fetch() {
	local client=$1 blk=$2 win=$3 port=$4 file=$5 out=$6
	case $client in
	curl)
		ip netns exec "$NS_CLI" timeout "$TIMEOUT" curl -sS --tftp-blksize "$blk" -o "$out" "tftp://$SRV_IP:$port/$file"
		;;
	atftp)
		local opts=(--option "blksize $blk")
		[ "$win" = 0 ] || opts+=(--option "windowsize $win")
		# atftp prints the options it sends on stderr.
		ip netns exec "$NS_CLI" timeout "$TIMEOUT" atftp "${opts[@]}" -g -r "$file" -l "$out" "$SRV_IP" "$port" >"$out.log" 2>&1 ||
			{ cat "$out.log" >&2; return 1; }
		;;
	esac
}
port_of() { if [ "$1" = kiln ]; then echo "$KILN_PORT"; else echo "$HPA_PORT"; fi; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# big CASE CLIENT BLKSIZE WINDOW: BENCH_RUNS fetches of big.bin per server.
big() {
	local case=$1 client=$2 blk=$3 win=$4 i s t0 t1
	echo
	echo "== $case ($(load))"
	# What each server grants (same for curl and atftp): its OACK to an
	# atftp asking for the same options, on a small file.
	local optv=(--option "blksize $blk")
	[ "$win" = 0 ] || optv+=(--option "windowsize $win")
	local oack
	for s in kiln tftpd-hpa; do
		oack=$(ip netns exec "$NS_CLI" timeout 10 atftp --trace "${optv[@]}" -g -r small1.bin -l "$DL/probe" \
			"$SRV_IP" "$(port_of "$s")" 2>&1 | grep -o 'received OACK.*' | head -n 1) || true
		printf '  %-10s asked blksize %s%s, %s\n' "$s" "$blk" "$([ "$win" = 0 ] || echo ", windowsize $win")" "${oack:-no OACK}"
	done
	for ((i = 1; i <= RUNS; i++)); do
		for s in kiln tftpd-hpa; do
			rm -f "$DL/big"
			t0=$(now)
			fetch "$client" "$blk" "$win" "$(port_of "$s")" big.bin "$DL/big" || die "$case: $s: the fetch failed"
			t1=$(now)
			[ "$(stat -c %s "$DL/big")" = "$BIG" ] || die "$case: $s: got $(stat -c %s "$DL/big") bytes, want $BIG"
			if ((i == 1)); then cmp -s "$DL/big" "$ROOT/big.bin" || die "$case: $s: the bytes differ"; fi
			echo "$case $s $(elapsed "$t0" "$t1")" >>"$RESULTS"
			printf '  %-10s run %d: %7.3f s  %7.1f MiB/s\n' "$s" "$i" "$(elapsed "$t0" "$t1")" \
				"$(awk -v n="$SIZE_MB" -v t="$(elapsed "$t0" "$t1")" 'BEGIN { print n / t }')"
		done
	done
	rm -f "$DL/big"
}

# conc: CONC curl fetches of distinct 1 MiB files at once, per server.
conc() {
	local case=conc-$CONC i j s t0 t1 pids fail
	echo
	echo "== $case: $CONC x curl -sS --tftp-blksize 1468 -o OUT tftp://$SRV_IP:PORT/smallN.bin at once ($(load))"
	for ((i = 1; i <= RUNS; i++)); do
		for s in kiln tftpd-hpa; do
			rm -f "$DL"/small*
			pids=()
			t0=$(now)
			for ((j = 1; j <= CONC; j++)); do
				fetch curl 1468 0 "$(port_of "$s")" "small$j.bin" "$DL/small$j" &
				pids+=($!)
			done
			fail=0
			for j in "${pids[@]}"; do wait "$j" || fail=1; done
			t1=$(now)
			((fail == 0)) || die "$case: $s: a fetch failed"
			for ((j = 1; j <= CONC; j++)); do
				[ "$(stat -c %s "$DL/small$j")" = $((1 << 20)) ] || die "$case: $s: small$j is short"
				if ((i == 1)); then cmp -s "$DL/small$j" "$ROOT/small$j.bin" || die "$case: $s: small$j differs"; fi
			done
			echo "$case $s $(elapsed "$t0" "$t1")" >>"$RESULTS"
			printf '  %-10s run %d: %7.3f s  %7.1f MiB/s in all\n' "$s" "$i" "$(elapsed "$t0" "$t1")" \
				"$(awk -v n="$CONC" -v t="$(elapsed "$t0" "$t1")" 'BEGIN { print n / t }')"
		done
	done
	rm -f "$DL"/small*
}

big curl-1468 curl 1468 0
big curl-8192 curl 8192 0
big atftp-1468 atftp 1468 0
big atftp-8192 atftp 8192 0
big atftp-1468-w4 atftp 1468 4
big atftp-8192-w16 atftp 8192 16
conc

# --- the table ---------------------------------------------------------------------
median() {
	awk -v c="$1" -v s="$2" '$1 == c && $2 == s { print $3 }' "$RESULTS" |
		sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'
}
echo
echo "after:     $(load); the script ran ${SECONDS}s"
echo
printf '%-16s %12s %12s %8s   %s\n' "median of $RUNS" "kiln MiB/s" "hpa MiB/s" "ratio" "target kiln >= tftpd-hpa"
for c in curl-1468 curl-8192 atftp-1468 atftp-8192 atftp-1468-w4 atftp-8192-w16 "conc-$CONC"; do
	k=$(median "$c" kiln) h=$(median "$c" tftpd-hpa)
	mb=$SIZE_MB
	[ "$c" != "conc-$CONC" ] || mb=$CONC
	awk -v c="$c" -v k="$k" -v h="$h" -v mb="$mb" 'BEGIN {
		kr = mb / k; hr = mb / h
		printf "%-16s %12.1f %12.1f %8.2f   %s\n", c, kr, hr, kr / hr, (kr >= hr ? "PASS" : "MISS") }'
done
echo "(MiB/s = size / median seconds; conc: $CONC MiB / the time until the last fetch ended)"
