#!/usr/bin/env bash
# bench/build.sh: time `kiln build` against the plain tools it competes
# with, on one Debian bookworm root, and print a table of kiln/peer ratios
# against the targets of the build-speed issue. See docs/benchmarks.md.
#
#   make bench                      # or: bash bench/build.sh (as root)
#
# Environment:
#   KILN=PATH            use this kiln binary instead of building one
#   BENCH_RUNS=3         timed runs of each side-by-side case (median shown)
#   BENCH_DEBIAN_RUNS=3  cold builds with mmdebstrap (1.5-2.5 min each)
#   BENCH_BUDGET=840     rebuild cycles (cold + incremental) after the first
#                        of each kind are skipped when one more would end
#                        more than this many seconds after the start
#   BENCH_TIMEOUT=900    seconds any one timed command may take
#   BENCH_CASES="initramfs squashfs disk rebuild"  the cases to run
#   TMPDIR               scratch lives in ${TMPDIR:-/tmp}/kiln-bench-$$
#
# A target MISS is reported, never an error: the script fails only when a
# command fails or times out.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${BENCH_RUNS:-3}
DEBIAN_RUNS=${BENCH_DEBIAN_RUNS:-3}
BUDGET=${BENCH_BUDGET:-840}
TIMEOUT=${BENCH_TIMEOUT:-900}
CASES=" ${BENCH_CASES:-initramfs squashfs disk rebuild} "
CACHE="$REPO/.cache/bench"
ROOT_TAR="$CACHE/root.tar"
SUITE=bookworm
VARIANT=essential
PACKAGES=(systemd-sysv busybox-static linux-image-cloud-amd64)
export PATH="/usr/local/go/bin:$PATH"
export LC_ALL=C

die() { echo "bench: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root: kiln writes root-owned trees and mmdebstrap needs root"
for tool in mmdebstrap mksquashfs mkfs.ext4 cpio zstd sfdisk tar timeout awk; do
	command -v "$tool" >/dev/null || die "$tool is missing (make deps installs the Debian tools)"
done
[[ $RUNS =~ ^[1-9][0-9]*$ && $DEBIAN_RUNS =~ ^[0-9]+$ && $BUDGET =~ ^[0-9]+$ ]] ||
	die "BENCH_RUNS must be >= 1, BENCH_DEBIAN_RUNS and BENCH_BUDGET >= 0"

WORK="${TMPDIR:-/tmp}/kiln-bench-$$"
mkdir -p "$WORK"
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ROOT="$WORK/ROOT"
RESULTS="$WORK/results" # lines: CASE SIDE WALL CPU
: >"$RESULTS"

# psi: the CPU and I/O pressure of the last 60 s (the share of time some
# task waited), which tells a busy machine better than the load average.
psi() {
	local cpu io
	cpu=$(sed -n 's/^some avg10=[^ ]* avg60=\([^ ]*\).*/\1/p' /proc/pressure/cpu 2>/dev/null)
	io=$(sed -n 's/^some avg10=[^ ]* avg60=\([^ ]*\).*/\1/p' /proc/pressure/io 2>/dev/null)
	echo "pressure (some, 60 s): cpu ${cpu:-?}%, io ${io:-?}%"
}

log() { printf '\n== %s (load %s; %s)\n' "$*" "$(cut -d' ' -f1-3 /proc/loadavg)" "$(psi)"; }

# timed CASE SIDE CMD...: runs CMD under timeout once, after a sync so that
# the previous run's writeback does not land in this one, and records its
# wall-clock and CPU (user+sys of it and its children) seconds. CMD's
# stdout goes to $WORK/last.out, its stderr to $WORK/last.err.
timed() {
	local case=$1 side=$2
	shift 2
	sync
	local t
	t=$({ TIMEFORMAT='%R %U %S'; time timeout "$TIMEOUT" "$@" >"$WORK/last.out" 2>"$WORK/last.err"; } 2>&1) || {
		echo "bench: $case/$side failed: $*" >&2
		tail -n 20 "$WORK/last.err" >&2
		exit 1
	}
	read -r wall user sys <<<"$t"
	local cpu
	cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN { printf "%.2f", u + s }')
	echo "$case $side $wall $cpu" >>"$RESULTS"
	printf '  %-18s %-6s wall %7.2f s  cpu %7.2f s\n' "$case" "$side" "$wall" "$cpu"
}

# median CASE SIDE FIELD: the median (lower middle for an even count) of
# FIELD (3 wall, 4 cpu) over the recorded runs.
median() {
	awk -v c="$1" -v s="$2" -v f="$3" '$1 == c && $2 == s { print $f }' "$RESULTS" |
		sort -g | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print "-" }'
}

# cached: the "cached" list of the last kiln build --json output.
cached() { tr -d ' \n' <"$WORK/last.out" | sed -n 's/.*"cached":\[\([^]]*\)\].*/\1/p' | tr -d '"'; }

# artifact NAME: the digest hex of artifact NAME in the last --json output.
artifact() {
	tr -d ' \n' <"$WORK/last.out" | grep -o "\"name\":\"$1\",\"digest\":\"sha256:[0-9a-f]*\"" | sed 's/.*sha256:\([0-9a-f]*\)"/\1/'
}

# --- the kiln binary -------------------------------------------------------
if [ -n "${KILN:-}" ]; then
	KILN=$(readlink -f "$KILN")
else
	command -v go >/dev/null || die "go is missing: install it or set KILN=path/to/kiln"
	version=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo dev)
	(cd "$REPO" && go build -ldflags "-X main.version=$version" -o "$WORK/kiln" ./cmd/kiln)
	KILN="$WORK/kiln"
fi

# --- the sample root ---------------------------------------------------------
MMDEBSTRAP=(mmdebstrap "--variant=$VARIANT" "--include=$(IFS=,; echo "${PACKAGES[*]}")" --format=tar "$SUITE")
if [ ! -s "$ROOT_TAR" ]; then
	log "making the sample root $ROOT_TAR"
	mkdir -p "$CACHE"
	echo "  ${MMDEBSTRAP[*]} $ROOT_TAR"
	timeout "$TIMEOUT" "${MMDEBSTRAP[@]}" "$ROOT_TAR.part" >"$WORK/mmdebstrap.log" 2>&1 ||
		{ tail -n 20 "$WORK/mmdebstrap.log" >&2; rm -f "$ROOT_TAR.part"; die "mmdebstrap failed"; }
	mv "$ROOT_TAR.part" "$ROOT_TAR"
fi
mkdir "$ROOT"
tar --numeric-owner -xf "$ROOT_TAR" -C "$ROOT"
kernels=("$ROOT"/boot/vmlinuz-*)
if [ "${#kernels[@]}" != 1 ] || [ ! -f "${kernels[0]}" ]; then
	die "$ROOT_TAR must hold exactly one /boot/vmlinuz-*"
fi

# --- recipes -----------------------------------------------------------------
# recipe FILE BASE OUTPUTS CONTENT: BASE is a YAML value.
recipe() {
	cat >"$1" <<EOF
name: bench
base: $2
kernel: {base: /boot/vmlinuz-*}
outputs: [$3]
files:
  - path: /etc/kiln-bench
    mode: "0644"
    content: "$4\n"
EOF
}
pkgs="${PACKAGES[*]}"
DEBIAN_BASE="{debian: {suite: $SUITE, variant: $VARIANT, packages: [${pkgs// /, }]}}"
recipe "$WORK/initramfs-dir.yaml" "$ROOT" initramfs bench
recipe "$WORK/initramfs-tar.yaml" "$ROOT_TAR" initramfs bench
recipe "$WORK/squashfs.yaml" "$ROOT_TAR" squashfs bench
recipe "$WORK/disk.yaml" "$ROOT_TAR" disk bench

# --- the machine -------------------------------------------------------------
echo "kiln benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "kiln:       $("$KILN" version) ($KILN)"
echo "machine:    $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "cpu:        $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)"
echo "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) before; $(psi)"
echo "mmdebstrap: $(mmdebstrap --version)"
echo "mksquashfs: $(mksquashfs -version 2>&1 | head -n 1)"
echo "mke2fs:     $(mke2fs -V 2>&1 | head -n 1)"
echo "cpio:       $(cpio --version | head -n 1)"
echo "zstd:       $(zstd --version)"
echo "root:       $ROOT_TAR, $(du -sm "$ROOT" | cut -f1) MiB, $(find "$ROOT" | wc -l) entries, kernel ${kernels[0]#"$ROOT"}"
echo "runs:       $RUNS per case (median), up to $DEBIAN_RUNS cold build(s) with mmdebstrap (budget ${BUDGET}s)"

# The page cache is not dropped (a shared machine cannot promise a cold
# one): every input is read once here, so every run reads it from memory.
log "warming the page cache (ROOT/, root.tar, the binaries)"
find "$ROOT" -type f -print0 | xargs -0 cat >/dev/null
cat "$ROOT_TAR" "$KILN" "$(command -v mksquashfs)" "$(command -v mkfs.ext4)" >/dev/null

KB=("$KILN" build --json)
# shellcheck disable=SC2016 # expanded by the bash -c that runs it
PEER_INITRAMFS='cd "$1" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | zstd -T0 -3 -q -o "$2"'
echo
echo "commands (STORE is emptied before every kiln run, OUT removed before every peer run):"
echo "  initramfs  kiln: ${KB[*]} --no-cache $WORK/initramfs-dir.yaml --images STORE   (base: ROOT/, owner 0:0)"
echo "             kiln: ${KB[*]} --no-cache $WORK/initramfs-tar.yaml --images STORE   (base: root.tar, owners kept; shown for reference)"
echo "             peer: (cd ROOT && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | zstd -T0 -3 -q -o OUT)"
echo "  squashfs   kiln: ${KB[*]} --no-cache $WORK/squashfs.yaml --images STORE   (base: root.tar)"
echo "             peer: mksquashfs ROOT OUT -comp zstd -noappend -quiet   (defaults: zstd level 15)"
echo "             peer: mksquashfs ROOT OUT -comp zstd -noappend -quiet -Xcompression-level 3   (kiln's level)"
echo "  disk       kiln: ${KB[*]} --no-cache $WORK/disk.yaml --images STORE   (base: root.tar)"
echo "             peer: truncate -s SIZE OUT && mkfs.ext4 -q -d ROOT OUT   (SIZE: kiln's root partition)"
echo "  rebuild    cold: ${KB[*]} RECIPE --images EMPTY_STORE; incremental: the same with files[0].content changed"
echo "  ROOT is root.tar extracted with tar --numeric-owner -xf; root.tar: ${MMDEBSTRAP[*]} root.tar"
echo "recipes:"
for f in initramfs-dir squashfs; do sed "s/^/  $f | /" "$WORK/$f.yaml"; done

STORE="$WORK/store"
OUT="$WORK/out"
kiln_run() { # CASE RECIPE
	rm -rf "$STORE"
	timed "$1" kiln "${KB[@]}" --no-cache "$2" --images "$STORE"
}
peer_run() { # CASE CMD...
	local case=$1
	shift
	rm -f "$OUT"
	timed "$case" peer "$@"
}

want() { [[ $CASES == *" $1 "* ]]; }

# --- initramfs ---------------------------------------------------------------
if want initramfs; then
log "initramfs: kiln (ROOT/ and root.tar bases) and cpio | zstd, interleaved"
for ((i = 1; i <= RUNS; i++)); do
	kiln_run initramfs "$WORK/initramfs-dir.yaml"
	kin=$(stat -c %s "$STORE/blobs/sha256/$(artifact initrd)")
	kiln_run initramfs-tar "$WORK/initramfs-tar.yaml"
	peer_run initramfs bash -c "$PEER_INITRAMFS" _ "$ROOT" "$OUT"
done
echo "  sizes: kiln initrd $kin B, peer $(stat -c %s "$OUT") B"
fi

# --- squashfs ----------------------------------------------------------------
if want squashfs; then
log "squashfs: kiln and mksquashfs, interleaved"
for ((i = 1; i <= RUNS; i++)); do
	kiln_run squashfs "$WORK/squashfs.yaml"
	ksq=$(stat -c %s "$STORE/blobs/sha256/$(artifact squashfs)")
	peer_run squashfs mksquashfs "$ROOT" "$OUT" -comp zstd -noappend -quiet
	psq=$(stat -c %s "$OUT")
	peer_run squashfs-l3 mksquashfs "$ROOT" "$OUT" -comp zstd -noappend -quiet -Xcompression-level 3
done
echo "  sizes: kiln squashfs $ksq B (plus the stage-1 initramfs), peer $psq B (level 15), $(stat -c %s "$OUT") B (level 3)"
fi

# --- disk ----------------------------------------------------------------------
if want disk; then
log "disk: kiln and mkfs.ext4 -d, interleaved"
for ((i = 1; i <= RUNS; i++)); do
	kiln_run disk "$WORK/disk.yaml"
	img="$STORE/blobs/sha256/$(artifact disk)"
	# The peer gets an ext4 file the size of kiln's root partition.
	size=$(sfdisk -d "$img" | awk -F'size=' '/name="root"/ { split($2, a, ","); print a[1] * 512 }')
	[ -n "$size" ] || die "cannot read the root partition of kiln's disk image"
	# shellcheck disable=SC2016
	peer_run disk bash -c 'truncate -s "$1" "$2" && mkfs.ext4 -q -d "$3" "$2"' _ "$size" "$OUT" "$ROOT"
done
echo "  sizes: kiln disk $(stat -c %s "$img") B (ESP + root), peer ext4 $size B (apparent; sparse)"
rm -rf "$STORE" "$OUT"
fi

# --- cold and incremental rebuilds ---------------------------------------------
# cycle CASE BASE: a cold build into an empty store and cache, then one with
# the same store and cache and one file of the recipe changed.
cycle() {
	local case=$1 base=$2 n=$3
	local r="$WORK/$case.yaml"
	rm -rf "$STORE"
	recipe "$r" "$base" "initramfs, squashfs, disk" "cold $n"
	timed "cold-$case" kiln "${KB[@]}" "$r" --images "$STORE"
	echo "    cached: [$(cached)]"
	recipe "$r" "$base" "initramfs, squashfs, disk" "changed $n"
	timed "incr-$case" kiln "${KB[@]}" "$r" --images "$STORE"
	echo "    cached: [$(cached)]"
	rm -rf "$STORE"
}
# cycles KIND BASE COUNT: up to COUNT cycles, the ones after the first
# only while they fit in BENCH_BUDGET; sets done_KIND to the number run.
cycles() {
	local kind=$1 base=$2 count=$3 i t0 last=0
	for ((i = 1; i <= count; i++)); do
		if ((i > 1 && SECONDS + last > BUDGET)); then
			echo "  skipping the other $((count - i + 1)) run(s): one more would end past ${BUDGET}s (BENCH_BUDGET)"
			break
		fi
		t0=$SECONDS
		cycle "$kind" "$base" "$i"
		last=$((SECONDS - t0))
		printf -v "done_$kind" %d "$i"
	done
}
done_tar=0 done_debian=0
if want rebuild; then
	log "rebuild: cold (base: root.tar) and incremental after one changed file"
	cycles tar "$ROOT_TAR" "$RUNS"
	if [ "$DEBIAN_RUNS" -gt 0 ]; then
		log "rebuild: cold (base: debian, mmdebstrap included) and incremental after one changed file"
		cycles debian "$DEBIAN_BASE" "$DEBIAN_RUNS"
	fi
fi

# --- the table ---------------------------------------------------------------
echo
echo "load:       $(cut -d' ' -f1-3 /proc/loadavg) (1/5/15 min) after; $(psi); the script ran ${SECONDS}s"
echo
# row LABEL KILN_CASE KILN_SIDE PEER_CASE PEER_SIDE TARGET: TARGET is the
# highest passing ratio, or "-" for none.
row() {
	local kw pw kc pc
	kw=$(median "$2" "$3" 3) pw=$(median "$4" "$5" 3)
	kc=$(median "$2" "$3" 4) pc=$(median "$4" "$5" 4)
	[ "$kw" != - ] && [ "$pw" != - ] || return 0
	awk -v l="$1" -v kw="$kw" -v pw="$pw" -v kc="$kc" -v pc="$pc" -v t="$6" 'BEGIN {
		r = kw / pw; rc = kc / pc
		v = "";
		if (t != "-") v = sprintf("<= %.2f %s", t, r <= t ? "PASS" : "MISS")
		printf "%-34s %8.2f %8.2f %7.3f   %8.2f %8.2f %7.3f   %s\n", l, kw, pw, r, kc, pc, rc, v
	}'
}
printf '%-34s %8s %8s %7s   %8s %8s %7s   %s\n' "median (seconds)" "kiln" "base" "ratio" "kiln cpu" "base cpu" "ratio" "target (wall ratio)"
row "initramfs vs cpio|zstd" initramfs kiln initramfs peer 1.2
row "initramfs (root.tar base) vs same" initramfs-tar kiln initramfs peer 1.2
row "squashfs vs mksquashfs (level 15)" squashfs kiln squashfs peer 1.2
row "squashfs vs mksquashfs (level 3)" squashfs kiln squashfs-l3 peer 1.2
row "disk vs mkfs.ext4 -d" disk kiln disk peer -
row "incremental/cold (base: root.tar)" incr-tar kiln cold-tar kiln 0.2
row "incremental/cold (base: debian)" incr-debian kiln cold-debian kiln 0.2
echo
echo "base: the peer tool; in the rebuild rows kiln is the incremental build and base the cold one."
echo "medians of $RUNS runs (rebuild rows: $done_tar with root.tar, $done_debian with debian); cpu is user+sys of the command and its children."
