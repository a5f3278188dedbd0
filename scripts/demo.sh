#!/usr/bin/env bash
# The main job, end to end: bake the tiny example image, run kiln in a private
# network namespace, netboot one VM (QEMU, TCG) into the image, wait until it
# phones home ready, and show its API record and the inventory page.
#
# Nothing is bound to a real interface: kiln serves a bridge inside a
# namespace this script creates (kiln-demo-<pid>) and deletes on exit.
# Set DEMO_KEEP=1 to keep kiln and the VM running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespace, tap device)" >&2; exit 1; }
KILN=${KILN:-bin/kiln}
NS=kiln-demo-$$
OUT=out/demo
DATA=$OUT/data
MAC=52:54:00:77:00:10
HOST=demo-node-1
SERVER=http://10.77.0.1:8080
KILN_PID= QEMU_PID=

cleanup() {
  [[ -n $QEMU_PID ]] && kill "$QEMU_PID" 2>/dev/null || true
  [[ -n $KILN_PID ]] && kill "$KILN_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

rm -rf "$OUT" && mkdir -p "$OUT"

echo "==> private lab network: namespace $NS, bridge br0 10.77.0.1/24, tap0 for the VM"
ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" link add br0 type bridge stp_state 0 forward_delay 0
ip -n "$NS" addr add 10.77.0.1/24 dev br0
ip -n "$NS" link set br0 up
ip -n "$NS" tuntap add dev tap0 mode tap
ip -n "$NS" link set tap0 master br0 up

echo "==> kiln serve --interface br0 --data $DATA   (log: $OUT/kiln.log)"
ip netns exec "$NS" "$KILN" serve --interface br0 --data "$DATA" >"$OUT/kiln.log" 2>&1 &
KILN_PID=$!
for _ in $(seq 50); do
  ip netns exec "$NS" "$KILN" machines list --server "$SERVER" >/dev/null 2>&1 && break
  sleep 0.2
done

echo "==> kiln build testdata/recipes/tiny.yaml --images $DATA/images"
IMAGE=$("$KILN" build testdata/recipes/tiny.yaml --images "$DATA/images")
echo "    image $IMAGE"

echo "==> kiln machines add --mac $MAC --hostname $HOST --image ${IMAGE:0:19}..."
ip netns exec "$NS" "$KILN" machines add --server "$SERVER" --mac "$MAC" --hostname "$HOST" --image "$IMAGE" >/dev/null

echo "==> power on: QEMU (TCG, SeaBIOS + iPXE ROM), serial console in $OUT/serial.log"
START=$(date +%s.%N)
ip netns exec "$NS" qemu-system-x86_64 -machine q35 -accel tcg -cpu max -m 512 -smp 1 \
  -nodefaults -display none -vga none -no-reboot -serial "file:$OUT/serial.log" \
  -netdev tap,id=n0,ifname=tap0,script=no,downscript=no \
  -device "virtio-net-pci,netdev=n0,mac=$MAC,bootindex=1" -boot order=n,menu=off \
  >"$OUT/qemu.log" 2>&1 &
QEMU_PID=$!

state= last=
for _ in $(seq 480); do
  state=$(ip netns exec "$NS" "$KILN" machines get --server "$SERVER" "$MAC" --json | sed -n 's/^  "state": "\(.*\)",$/\1/p')
  if [[ $state != "$last" ]]; then
    awk -v s="$START" -v n="$(date +%s.%N)" -v st="$state" 'BEGIN { printf "    %6.1fs  state %s\n", n - s, st }'
    last=$state
  fi
  [[ $state == ready || $state == failed ]] && break
  kill -0 "$QEMU_PID" 2>/dev/null || { echo "demo: QEMU exited" >&2; break; }
  sleep 0.5
done

echo "==> the VM's console:"
grep -a 'kiln:' "$OUT/serial.log" | sed 's/^/    /' || true
echo "==> kiln machines get $MAC --json"
ip netns exec "$NS" "$KILN" machines get --server "$SERVER" "$MAC" --json
ip netns exec "$NS" busybox wget -q -O "$OUT/inventory.html" "$SERVER/"
echo "==> inventory page: $SERVER/ inside namespace $NS; saved to $OUT/inventory.html"
if [[ $state != ready ]]; then
  echo "demo: machine did not reach ready (state: ${state:-unknown}); see $OUT/kiln.log and $OUT/serial.log" >&2
  exit 1
fi
if [[ ${DEMO_KEEP:-} == 1 ]]; then
  echo "==> DEMO_KEEP=1: kiln and the VM keep running; browse with e.g."
  echo "    ip netns exec $NS busybox wget -q -O - $SERVER/    (Ctrl-C to stop and clean up)"
  wait "$KILN_PID"
fi
