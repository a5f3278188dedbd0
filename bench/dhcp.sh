#!/usr/bin/env bash
# bench/dhcp.sh: DHCPv4 throughput of kiln against Kea and dnsmasq, in the
# same run, driven by perfdhcp (Debian package kea-admin). See
# docs/benchmarks.md ("DHCP").
#
#   bash bench/dhcp.sh              # as root; or via make bench
#
# Two cases, each run against every server in turn:
#   rate   the highest offered DORA rate (perfdhcp -r) with at most
#          BENCH_MAX_DROP % of the DISCOVERs left without an ACK, over
#          BENCH_PERIOD seconds and BENCH_CLIENTS distinct MACs (a failing
#          step is tried again BENCH_RETRY times; the best try counts). Rates are
#          stepped up, the servers taking turns at each rate, until a server
#          fails one; then the midpoint between its last pass and that
#          failure is tried once. Every step starts the server afresh with
#          an empty lease database.
#   storm  BENCH_STORM PXE clients (options 60 PXEClient:Arch:00000:UNDI:002001
#          and 93 = 0) starting at once (perfdhcp --scenario avalanche, which
#          retransmits with back-off): the time until every client has its
#          ACK. Median of BENCH_STORM_RUNS, a fresh server each run.
#
# Leases are durable on every side: kiln keeps them in bbolt (--data DIR),
# Kea in its memfile backend with persist=true (the CSV lease file), dnsmasq
# in its lease file. Every server answers with a boot file for BIOS PXE
# clients (kiln: --bios-file; Kea: a client class on option 93; dnsmasq:
# dhcp-match on client-arch).
#
# Network: two network namespaces made here, kiln-bench-PID-srv and
# kiln-bench-PID-cli, joined by one veth pair (created inside them: no
# interface of the host is used or touched). The server listens on
# 10.98.0.1/24; perfdhcp acts as a relay agent (as it always does for
# DHCPv4) with giaddr 10.100.0.1, so every server hands out addresses from
# 10.100.0.0/16 (pool 10.100.1.0-10.100.255.254). Everything started here is
# stopped by PID and both namespaces are deleted on exit, Ctrl-C included.
#
# Environment:
#   KILN=PATH              the kiln binary (default: build one from this tree)
#   BENCH_SERVERS="kiln kea dnsmasq"
#   BENCH_CASES="rate storm"
#   BENCH_RATES="100 250 500 1000 2000 4000 8000 16000 32000"  DORA/s steps
#   BENCH_PERIOD=10        seconds of each rate step (perfdhcp -p)
#   BENCH_CLIENTS=50000    distinct clients (perfdhcp -R) of a rate step
#   BENCH_MAX_DROP=1       % of exchanges that may stay unanswered
#   BENCH_RETRY=1          extra attempts of a failing rate step (best counts)
#   BENCH_STORM=1000       clients in the storm
#   BENCH_STORM_RUNS=3     storms per server (median shown)
#   BENCH_STORM_TIMEOUT=60 seconds after which a storm counts as not served
#   TMPDIR                 scratch (lease files, configs) in ${TMPDIR:-/tmp}/kiln-bench-PID
#
# A target MISS is reported, never an error: the script fails only when a
# server does not start or a tool is missing.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVERS=${BENCH_SERVERS:-kiln kea dnsmasq}
CASES=" ${BENCH_CASES:-rate storm} "
RATES=${BENCH_RATES:-100 250 500 1000 2000 4000 8000 16000 32000}
PERIOD=${BENCH_PERIOD:-10}
CLIENTS=${BENCH_CLIENTS:-50000}
MAXDROP=${BENCH_MAX_DROP:-1}
RETRY=${BENCH_RETRY:-1}
STORM=${BENCH_STORM:-1000}
STORM_RUNS=${BENCH_STORM_RUNS:-3}
STORM_TIMEOUT=${BENCH_STORM_TIMEOUT:-60}
export PATH="/usr/local/go/bin:$PATH"
export LC_ALL=C

die() { echo "bench: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: the benchmark makes network namespaces"
for tool in ip perfdhcp timeout awk ss xxd; do
	command -v "$tool" >/dev/null || die "$tool is missing (apt-get install iproute2 kea-admin xxd)"
done
for s in $SERVERS; do
	case $s in
	kiln) ;;
	kea) command -v kea-dhcp4 >/dev/null || die "kea-dhcp4 is missing (apt-get install kea-dhcp4-server)" ;;
	dnsmasq) command -v dnsmasq >/dev/null || die "dnsmasq is missing (apt-get install dnsmasq-base)" ;;
	*) die "unknown server $s in BENCH_SERVERS (kiln, kea, dnsmasq)" ;;
	esac
done
[[ $RETRY =~ ^[0-3]$ ]] || die "BENCH_RETRY must be 0..3"
[[ $PERIOD =~ ^[1-9][0-9]*$ && $CLIENTS =~ ^[1-9][0-9]*$ && $STORM =~ ^[1-9][0-9]*$ &&
	$STORM_RUNS =~ ^[1-9][0-9]*$ && $STORM_TIMEOUT =~ ^[1-9][0-9]*$ ]] ||
	die "BENCH_PERIOD, BENCH_CLIENTS, BENCH_STORM, BENCH_STORM_RUNS and BENCH_STORM_TIMEOUT must be >= 1"
((PERIOD <= 60 && CLIENTS <= 60000 && STORM <= 10000)) ||
	die "bounds: BENCH_PERIOD <= 60, BENCH_CLIENTS <= 60000 (the pool), BENCH_STORM <= 10000"
for r in $RATES; do
	if ! [[ $r =~ ^[1-9][0-9]*$ ]] || ((r > 100000)); then die "BENCH_RATES: $r is not a rate in 1..100000"; fi
done

WORK="${TMPDIR:-/tmp}/kiln-bench-$$"
NS_SRV="kiln-bench-$$-srv"
NS_CLI="kiln-bench-$$-cli"
IF_SRV="kb$$s" # <= 10 characters for any PID
IF_CLI="kb$$c"
SRV_IP=10.98.0.1
CLI_IP=10.98.0.2
GIADDR=10.100.0.1
POOL_START=10.100.1.0
POOL_END=10.100.255.254
SRV_PID=""

stop_server() {
	[ -n "$SRV_PID" ] || return 0
	kill -TERM "$SRV_PID" 2>/dev/null || true
	local i
	for ((i = 0; i < 50; i++)); do
		kill -0 "$SRV_PID" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$SRV_PID" 2>/dev/null || true
	wait "$SRV_PID" 2>/dev/null || true
	SRV_PID=""
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	stop_server
	# Only what runs inside our own namespaces: started by this script.
	local ns pid
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

# --- the kiln binary -------------------------------------------------------
if [[ " $SERVERS " == *" kiln "* ]]; then
	if [ -n "${KILN:-}" ]; then
		KILN=$(readlink -f "$KILN")
	else
		command -v go >/dev/null || die "go is missing: install it or set KILN=path/to/kiln"
		(cd "$REPO" && go build -o "$WORK/kiln" ./cmd/kiln)
		KILN="$WORK/kiln"
	fi
	help=$("$KILN" serve --help 2>&1 || true)
	[[ $help == *-dhcp-config* ]] ||
		die "$KILN has no serve --dhcp-config: it cannot serve the relayed subnet perfdhcp uses"
fi

# --- the network ---------------------------------------------------------------
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip -n "$NS_SRV" link add "$IF_SRV" type veth peer name "$IF_CLI" netns "$NS_CLI"
ip -n "$NS_SRV" addr add "$SRV_IP/24" dev "$IF_SRV"
ip -n "$NS_CLI" addr add "$CLI_IP/24" dev "$IF_CLI"
ip -n "$NS_CLI" addr add "$GIADDR/16" dev "$IF_CLI"
for ns in "$NS_SRV" "$NS_CLI"; do ip -n "$ns" link set lo up; done
ip -n "$NS_SRV" link set "$IF_SRV" up
ip -n "$NS_CLI" link set "$IF_CLI" up
ip -n "$NS_SRV" route add 10.100.0.0/16 via "$CLI_IP"

# --- the servers -----------------------------------------------------------------
TFTP_ROOT=/usr/lib/ipxe
[ -d "$TFTP_ROOT" ] || { TFTP_ROOT="$WORK/tftproot"; mkdir -p "$TFTP_ROOT"; }
BOOTFILE=undionly.kpxe
LEASE_SECONDS=3600

cat >"$WORK/kiln-dhcp.yaml" <<EOF
subnets:
  - subnet: 10.100.0.0/16
    pools: [$POOL_START-$POOL_END]
    lease_time: 1h
EOF

# kea_config DIR: Kea's configuration, leases in DIR/kea-leases4.csv.
kea_config() {
	cat <<EOF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["$IF_SRV/$SRV_IP"], "dhcp-socket-type": "udp"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$1/kea-leases4.csv", "lfc-interval": 0},
  "valid-lifetime": $LEASE_SECONDS,
  "client-classes": [{"name": "bios", "test": "option[93].hex == 0x0000",
                      "next-server": "$SRV_IP", "boot-file-name": "$BOOTFILE"}],
  "subnet4": [{"id": 1, "subnet": "10.100.0.0/16", "pools": [{"pool": "$POOL_START - $POOL_END"}]}],
  "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "$1/kea.log"}], "severity": "WARN"}]
}}
EOF
}

# The exact command lines (DIR: a fresh directory per start).
KILN_CMD='KILN serve --interface '"$IF_SRV"' --data DIR/kiln --tftp-root '"$TFTP_ROOT"' --bios-file '"$BOOTFILE"' --dhcp-config DIR/kiln-dhcp.yaml --lease-time 1h --log-level warn'
KEA_CMD='KEA_PIDFILE_DIR=DIR KEA_LOCKFILE_DIR=DIR kea-dhcp4 -c DIR/kea.json'
# shellcheck disable=SC2054 # the commas are dnsmasq's
DNSMASQ_ARGS=(--keep-in-foreground --conf-file=/dev/null --port=0 --no-resolv --no-hosts
	--interface="$IF_SRV" --dhcp-authoritative --no-ping --quiet-dhcp
	--dhcp-range="$POOL_START,$POOL_END,255.255.0.0,1h" --dhcp-lease-max=70000
	--dhcp-match=set:bios,option:client-arch,0 --dhcp-boot="tag:bios,$BOOTFILE,,$SRV_IP")
DNSMASQ_CMD="dnsmasq ${DNSMASQ_ARGS[*]} --dhcp-leasefile=DIR/dnsmasq.leases --pid-file=DIR/dnsmasq.pid --log-facility=DIR/dnsmasq.log"

# start_server NAME: starts NAME with a fresh lease database in
# $WORK/run-N and waits until it listens on port 67.
RUN_N=0
start_server() {
	RUN_N=$((RUN_N + 1))
	local d="$WORK/run-$RUN_N"
	rm -rf "$WORK/run-$((RUN_N - 1))"
	mkdir -p "$d"
	case $1 in
	kiln)
		cp "$WORK/kiln-dhcp.yaml" "$d/kiln-dhcp.yaml"
		ip netns exec "$NS_SRV" "$KILN" serve --interface "$IF_SRV" --data "$d/kiln" \
			--tftp-root "$TFTP_ROOT" --bios-file "$BOOTFILE" --dhcp-config "$d/kiln-dhcp.yaml" \
			--lease-time 1h --log-level warn >"$d/out" 2>&1 &
		SRV_PID=$!
		;;
	kea)
		kea_config "$d" >"$d/kea.json"
		KEA_PIDFILE_DIR=$d KEA_LOCKFILE_DIR=$d ip netns exec "$NS_SRV" kea-dhcp4 -c "$d/kea.json" >"$d/out" 2>&1 &
		SRV_PID=$!
		;;
	dnsmasq)
		ip netns exec "$NS_SRV" dnsmasq "${DNSMASQ_ARGS[@]}" --dhcp-leasefile="$d/dnsmasq.leases" \
			--pid-file="$d/dnsmasq.pid" --log-facility="$d/dnsmasq.log" >"$d/out" 2>&1 &
		SRV_PID=$!
		;;
	esac
	local i
	for ((i = 0; i < 100; i++)); do
		kill -0 "$SRV_PID" 2>/dev/null || { tail -n 20 "$d/out" >&2; die "$1 exited at start"; }
		if ip netns exec "$NS_SRV" ss -Huln 'sport = :67' | grep -q .; then
			sleep 0.2 # the listener may come up before the rest of the server
			return 0
		fi
		sleep 0.1
	done
	tail -n 20 "$d/out" >&2
	die "$1 does not listen on port 67 after 10 s"
}

perfdhcp_cli() { ip netns exec "$NS_CLI" perfdhcp -4 -l "$GIADDR" "$@" "$SRV_IP"; }

# --- the machine -------------------------------------------------------------
psi() {
	local cpu
	cpu=$(sed -n 's/^some avg10=[^ ]* avg60=\([^ ]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null)
	echo "cpu pressure (some, 60 s) ${cpu:-?}%"
}
load() { echo "load $(cut -d' ' -f1-3 /proc/loadavg); $(psi)"; }

echo "kiln DHCP benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
[ -z "${KILN:-}" ] || echo "kiln:     $("$KILN" version 2>/dev/null || echo '?') ($KILN)"
echo "machine:  $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "cpu:      $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
echo "before:   $(load)"
echo "kea:      $(command -v kea-dhcp4 >/dev/null && kea-dhcp4 -v || echo -)"
echo "dnsmasq:  $(command -v dnsmasq >/dev/null && dnsmasq --version | head -n 1 || echo -)"
echo "perfdhcp: $(perfdhcp -v 2>&1 | head -n 1)"
echo "scratch:  $WORK ($(df -T "$WORK" | awk 'NR == 2 { print $2 }'))"
echo "network:  $NS_SRV $IF_SRV $SRV_IP/24 <-veth-> $NS_CLI $IF_CLI $CLI_IP/24 + $GIADDR/16 (giaddr); pool $POOL_START-$POOL_END"
echo
echo "servers (DIR: a fresh directory for every start):"
echo "  kiln:    $KILN_CMD"
echo "           kiln-dhcp.yaml: $(tr '\n' ' ' <"$WORK/kiln-dhcp.yaml")"
echo "  kea:     $KEA_CMD"
echo "           kea.json: $(kea_config DIR | tr -s ' \n' ' ')"
echo "  dnsmasq: $DNSMASQ_CMD"

RESULTS="$WORK/results"
: >"$RESULTS"

# --- rate -------------------------------------------------------------------
# attempt SERVER RATE: one run at RATE on a fresh server; writes "rate
# SERVER RATE DISCOVERS ACKS DROP% PASS|FAIL" to $WORK/try and returns 1
# when it fails.
attempt() {
	local s=$1 r=$2 out="$WORK/perfdhcp.out"
	start_server "$s"
	local rc=0
	timeout $((PERIOD + 30)) ip netns exec "$NS_CLI" perfdhcp -4 -l "$GIADDR" -r "$r" -p "$PERIOD" \
		-R "$CLIENTS" -W 1000000 -b mac=00:0c:01:00:00:00 "$SRV_IP" >"$out" 2>&1 || rc=$?
	stop_server
	if ((rc != 0 && rc != 3)); then
		tail -n 5 "$out" | sed 's/^/    perfdhcp: /'
	fi
	# sent/received: DISCOVER-OFFER first, REQUEST-ACK second.
	awk -v s="$s" -v r="$r" -v p="$PERIOD" -v m="$MAXDROP" '
		/^sent packets:/ { sent[++ns] = $3 }
		/^received packets:/ { recv[++nr] = $3 }
		END {
			d = sent[1] + 0; a = recv[2] + 0
			drop = d > 0 ? 100 * (1 - a / d) : 100
			ok = d >= 0.9 * r * p && drop <= m
			printf "rate %s %d %d %d %.2f %s\n", s, r, d, a, drop, ok ? "PASS" : "FAIL"
		}' "$out" >"$WORK/try"
	local d a drop verdict
	read -r _ _ _ d a drop verdict <"$WORK/try"
	printf '  %-8s %6d/s offered: %7d DISCOVER, %7d ACK (%6.0f/s), %6.2f %% unanswered  %s\n' \
		"$s" "$r" "$d" "$a" "$(awk -v a="$a" -v p="$PERIOD" 'BEGIN { print a / p }')" "$drop" "$verdict"
	[ "$verdict" = PASS ]
}

# step SERVER RATE: up to 1 + BENCH_RETRY attempts, until one passes (a
# moment of contention on a shared machine should not end a server's
# round); appends the best attempt to the results and returns 1 when none
# passed.
step() {
	local k best="" bd=1000 d
	for ((k = 0; k <= RETRY; k++)); do
		if attempt "$1" "$2"; then
			cat "$WORK/try" >>"$RESULTS"
			return 0
		fi
		d=$(awk '{ print $6 }' "$WORK/try")
		if awk -v d="$d" -v b="$bd" 'BEGIN { exit !(d < b) }'; then best=$(cat "$WORK/try") bd=$d; fi
	done
	echo "$best" >>"$RESULTS"
	return 1
}

want() { [[ $CASES == *" $1 "* ]]; }

if want rate; then
	echo
	echo "== rate: perfdhcp -4 -l $GIADDR -r RATE -p $PERIOD -R $CLIENTS -W 1000000 -b mac=00:0c:01:00:00:00 $SRV_IP ($(load))"
	echo "   pass: <= $MAXDROP % of the DISCOVERs without an ACK, and perfdhcp really sent >= 90 % of RATE x $PERIOD;"
	echo "   a failing step is tried again up to $RETRY time(s), the best try counts"
	# Servers take turns at each rate, so that a change in the machine's
	# load hits them alike; a server leaves the round at its first failure.
	declare -A last=() failed=()
	active=$SERVERS
	for r in $RATES; do
		next=""
		for s in $active; do
			if step "$s" "$r"; then
				last[$s]=$r
				next="$next $s"
			else
				failed[$s]=$r
			fi
		done
		active=$next
		[ -n "$active" ] || break
	done
	# Then the midpoint between the last pass and the first failure, once.
	for s in $SERVERS; do
		l=${last[$s]:-0} f=${failed[$s]:-0}
		mid=$(((l + f) / 2))
		if ((l > 0 && f > 0 && mid > l)); then step "$s" "$mid" || true; fi
	done
fi

# --- storm --------------------------------------------------------------------
O60=$(printf 'PXEClient:Arch:00000:UNDI:002001' | xxd -p | tr -d '\n')
if want storm; then
	echo
	echo "== storm: perfdhcp -4 -l $GIADDR --scenario avalanche -R $STORM -b mac=00:0c:02:00:00:00 -o 60,$O60 -o 93,0000 $SRV_IP ($(load))"
	for s in $SERVERS; do
		for ((i = 1; i <= STORM_RUNS; i++)); do
			start_server "$s"
			out="$WORK/storm.out"
			rc=0
			t0=$EPOCHREALTIME
			timeout "$STORM_TIMEOUT" ip netns exec "$NS_CLI" perfdhcp -4 -l "$GIADDR" --scenario avalanche \
				-R "$STORM" -b mac=00:0c:02:00:00:00 -o "60,$O60" -o 93,0000 "$SRV_IP" >"$out" 2>&1 || rc=$?
			t1=$EPOCHREALTIME
			stop_server
			acks=$(awk '/^received packets:/ { n++; if (n == 2) print $3 }' "$out")
			wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
			if ((rc == 0)) && [ "${acks:-0}" = "$STORM" ]; then
				echo "storm $s $wall" >>"$RESULTS"
				printf '  %-8s run %d: all %d served in %6.3f s\n' "$s" "$i" "$STORM" "$wall"
			else
				echo "storm $s -" >>"$RESULTS"
				printf '  %-8s run %d: NOT all served (%s ACKs, exit %d) after %6.3f s\n' "$s" "$i" "${acks:-0}" "$rc" "$wall"
			fi
		done
	done
fi

# --- the table ---------------------------------------------------------------------
echo
echo "after:    $(load); the script ran ${SECONDS}s"
best() { awk -v s="$1" '$1 == "rate" && $2 == s && $7 == "PASS" && $3 > b { b = $3 } END { print b + 0 }' "$RESULTS"; }
steps() { awk -v s="$1" '$1 == "rate" && $2 == s { printf "%s%d: %.2f%%", sep, $3, $6; sep = ", " }' "$RESULTS"; }
storm_median() {
	# An unserved storm sorts last.
	awk -v s="$1" '$1 == "storm" && $2 == s { print ($3 == "-" ? 1e9 : $3) }' "$RESULTS" | sort -g |
		awk '{ v[NR] = $1 } END { if (!NR) print "-"; else { m = v[int((NR + 1) / 2)]; print (m >= 1e9 ? "unserved" : m) } }'
}
if want rate; then
	echo
	printf '%-8s %10s   %s\n' server "best DORA/s" "unanswered % at each offered rate"
	for s in $SERVERS; do printf '%-8s %10s   %s\n' "$s" "$(best "$s")" "$(steps "$s")"; done
fi
if want storm; then
	echo
	printf '%-8s %s\n' server "storm of $STORM: median seconds until all are served (runs)"
	for s in $SERVERS; do
		printf '%-8s %s   (%s)\n' "$s" "$(storm_median "$s")" \
			"$(awk -v s="$s" '$1 == "storm" && $2 == s { printf "%s%s", sep, $3; sep = " " }' "$RESULTS")"
	done
fi
if [[ " $SERVERS " == *" kiln "* && " $SERVERS " == *" kea "* ]]; then
	echo
	echo "targets:"
	if want rate; then
		awk -v k="$(best kiln)" -v e="$(best kea)" 'BEGIN {
			printf "  rate:  kiln %d DORA/s vs Kea %d: %.2fx, target >= 1.5x: %s\n", k, e, e ? k / e : 0, (e && k >= 1.5 * e) ? "PASS" : "MISS" }'
	fi
	if want storm; then
		awk -v k="$(storm_median kiln)" -v e="$(storm_median kea)" 'BEGIN {
			ok = (k != "unserved" && k != "-" && (e == "unserved" || k + 0 <= e + 0))
			printf "  storm: kiln %s s vs Kea %s s, target no slower: %s\n", k, e, ok ? "PASS" : "MISS" }'
	fi
fi
