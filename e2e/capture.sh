#!/usr/bin/env bash
# One-off, not part of CI: boot the e2e VMs with packet capture on and turn
# their DHCP, DHCPv6 and TFTP requests into fuzz seeds under
# testdata/captures/{dhcp4,dhcp6,tftp}/NAME.bin (raw UDP payloads).
#
#   sudo e2e/capture.sh                 # the default set of boots below
#   sudo RUN='TestBootRelay' e2e/capture.sh
#
# Each lab runs `tcpdump -i br0 -n -U -w LABEL.pcap 'udp and (port 67 or
# port 68 or port 4011 or port 69 or port 546 or port 547)'` in its network
# namespace (KILN_E2E_CAPTURE, see e2e/rack_test.go); `go run ./e2e/capture`
# then keeps the first client request of each kind. Needs tcpdump and what
# `make e2e` needs. Review `git status testdata/captures` before committing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
[[ $(id -u) -eq 0 ]] || { echo "capture: needs root (network namespaces)" >&2; exit 1; }
command -v tcpdump >/dev/null || { echo "capture: needs tcpdump (apt-get install tcpdump)" >&2; exit 1; }
RUN=${RUN:-'TestBootToReady/(bios-ipxe-rom|uefi-pxe-tftp|uefi-http-uki)|TestBootRelay|TestBootProxyDHCP|TestBootIPv6'}
OUT=${OUT:-testdata/captures}
# PCAPS=DIR keeps the pcaps there (and, when DIR already has some, SKIP_BOOT=1
# only extracts them again).
if [[ -z ${PCAPS:-} ]]; then
  PCAPS=$(mktemp -d /tmp/kiln-capture-XXXXXX)
  trap 'rm -rf "$PCAPS"' EXIT
fi
mkdir -p "$PCAPS"
chmod 755 "$PCAPS" # tcpdump writes as user tcpdump

if [[ ${SKIP_BOOT:-} != 1 ]]; then
  KILN_E2E_CAPTURE=$PCAPS CI=true go test -count=1 -v -timeout 20m -run "$RUN" ./e2e/ |
    grep -E '^(=== RUN|\s*--- |ok|FAIL|PASS)|E2E-TIMING' || true
fi
ls -l "$PCAPS"
# Existing seeds of the same name are overwritten; others are left alone.
go run ./e2e/capture -out "$OUT" "$PCAPS"/*.pcap
