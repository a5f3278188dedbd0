#!/usr/bin/env bash
# Installs the Debian packages kiln's build, tests and demo need, if missing.
# Safe to run repeatedly: it only calls apt-get when something is absent.
set -euo pipefail

pkgs=(
  iproute2          # ip netns, bridge, tuntap for the private lab network
  qemu-system-x86   # the VMs (TCG)
  ipxe-qemu         # QEMU's iPXE option ROMs (BIOS path)
  ipxe              # /usr/lib/ipxe/{undionly.kpxe,snponly.efi,...} served over TFTP
  ovmf              # UEFI firmware
  seabios           # BIOS firmware
  busybox-static    # unpacked into the tiny image by fetch-tiny-inputs.sh
  zstd cpio         # to inspect initramfs images
  chromium          # renders the inventory page in web's browser test
  ca-certificates
  mmdebstrap        # Debian bases (base: {debian: ...})
  squashfs-tools    # mksquashfs for the squashfs output, unsquashfs to check it
  e2fsprogs         # mkfs.ext4 for the disk output's root, e2fsck to check it
  dosfstools mtools # fsck.vfat and mtools to check the disk's and iso's ESP
  fdisk             # sfdisk --json to check the disk's partition table
  xorriso           # checks the iso's El Torito entries
  isolinux syslinux-common  # the iso's BIOS boot loader
  systemd-boot-efi  # systemd-boot (disk, iso) and the stub of the uki output
  binutils          # objdump to check the uki's sections
  xz-utils          # .tar.xz bases in tests
  faketime          # builds "on another day" in the reproducibility test
  dnsmasq-base      # e2e: a DHCP relay, and the primary DHCP server beside kiln --proxy
  isc-dhcp-relay    # e2e: dhcrelay -a (a relay that adds option 82)
  tcpdump           # e2e: checks option 82 is echoed to the relay
  curl atftp tftp-hpa  # tftp: real clients (blksize, windowsize, tsize)
  isc-dhcp-client   # dhcp6: dhclient -6 as a real DHCPv6 client
  # identity: the libraries Debian's cloud-init imports; cloud-init itself is
  # only unpacked (identity/testdata/fetch-cloud-init.sh), never installed
  python3 python3-yaml python3-jsonschema python3-jinja2 python3-configobj
  python3-requests python3-netifaces python3-jsonpatch python3-oauthlib python3-serial
)

# scripts/deps.sh --bench adds the peers make bench compares kiln with. Their
# packages ship services (kea-dhcp4-server, tftpd-hpa) that would answer on
# every interface: they are never started and are disabled below.
bench_services=(kea-dhcp4-server tftpd-hpa)
if [[ ${1:-} == --bench ]]; then
  pkgs+=(kea-dhcp4-server kea-admin tftpd-hpa xxd)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "deps: missing Debian packages: ${missing[*]}; run as root (or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Packages such as isc-dhcp-relay ship a service; kiln's tests and benchmarks
# start their own daemons inside namespaces, so nothing may start on the
# host's interfaces at install time (exit 101 = "action forbidden").
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [[ ${1:-} == --bench ]] && command -v systemctl >/dev/null; then
  systemctl disable --now "${bench_services[@]}" >/dev/null 2>&1 || true
fi
