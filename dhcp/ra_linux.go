package dhcp

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func init() {
	raPlatform.sockopts = raSockopts
	raPlatform.ipv6Disabled = ipv6Disabled
	raPlatform.linkLocal = procLinkLocal
}

// raSockopts binds the router advertisement socket to iface, so that it
// neither hears nor speaks on any other interface.
func raSockopts(fd uintptr, iface string) error {
	if err := unix.BindToDevice(int(fd), iface); err != nil {
		return fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, err)
	}
	return nil
}

// ipv6Disabled reports whether the kernel has no IPv6 (ipv6.disable=1) or
// IPv6 is disabled on iface (net.ipv6.conf.IFACE.disable_ipv6=1), in the
// network namespace of the calling thread.
func ipv6Disabled(iface string) bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + iface + "/disable_ipv6")
	if err != nil {
		_, err := os.Stat("/proc/sys/net/ipv6")
		return errors.Is(err, fs.ErrNotExist)
	}
	return strings.TrimSpace(string(b)) == "1"
}

// procLinkLocal returns a link-local address of ifi that has passed
// duplicate address detection, read from the calling thread's network
// namespace; without procfs it falls back to addrsLinkLocal.
func procLinkLocal(ifi *net.Interface) net.IP {
	b, err := os.ReadFile("/proc/thread-self/net/if_inet6")
	if err != nil {
		return addrsLinkLocal(ifi)
	}
	return parseIfInet6(b, ifi.Index)
}

// parseIfInet6 picks from /proc/net/if_inet6 (lines of address, ifindex,
// prefix length, scope, flags and name, in hex) the first link-local
// address of ifindex that is neither tentative nor failed.
func parseIfInet6(b []byte, ifindex int) net.IP {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		addr, err := hex.DecodeString(f[0])
		if err != nil || len(addr) != net.IPv6len {
			continue
		}
		idx, err1 := strconv.ParseUint(f[1], 16, 32)
		flags, err2 := strconv.ParseUint(f[4], 16, 32)
		if err1 != nil || err2 != nil || int(idx) != ifindex {
			continue
		}
		ip := net.IP(addr)
		if ip.IsLinkLocalUnicast() && flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
			return ip
		}
	}
	return nil
}
