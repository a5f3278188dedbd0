package dhcp

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"golang.org/x/sys/unix"
)

// rcvBuf is the socket receive buffer ListenInterface asks for, so that a
// burst of DISCOVERs from a rack powering on is queued, not dropped.
const rcvBuf = 4 << 20

// ListenInterface opens the DHCP server socket for iface: UDP 0.0.0.0:67
// bound to the device (SO_BINDTODEVICE) with SO_BROADCAST and a 4 MiB
// receive buffer. It sets neither SO_REUSEPORT nor SO_REUSEADDR: on Linux
// either lets a second server bind the same port and device and silently
// share its traffic, so a second kiln (or a dnsmasq on the same interface)
// fails here instead. It needs CAP_NET_BIND_SERVICE for port 67.
func ListenInterface(iface string) (net.PacketConn, error) {
	return ListenInterfacePort(iface, dhcpv4.ServerPort)
}

// ListenInterfacePort is ListenInterface on another UDP port, e.g. PXEPort
// (4011) for the proxyDHCP boot server; port 0 picks a free port.
func ListenInterfacePort(iface string, port int) (net.PacketConn, error) {
	return listen(iface, port, false)
}

// ListenInterfaceShared is ListenInterfacePort with SO_REUSEADDR, for a
// proxyDHCP server on port 67 of a host that also runs the DHCP server
// (e.g. dnsmasq, which sets SO_REUSEADDR too): every broadcast DISCOVER
// reaches both sockets. Unicast to the port reaches only one of them, so a
// full DHCP server must use ListenInterface.
func ListenInterfaceShared(iface string, port int) (net.PacketConn, error) {
	return listen(iface, port, true)
}

func listen(iface string, port int, shared bool) (net.PacketConn, error) {
	if iface == "" {
		return nil, fmt.Errorf("listening for dhcp: no interface given")
	}
	if _, err := net.InterfaceByName(iface); err != nil {
		return nil, fmt.Errorf("listening for dhcp on %s: %w", iface, err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			if serr = setSockopts(int(fd), iface); serr == nil && shared {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
					serr = fmt.Errorf("SO_REUSEADDR: %w", err)
				}
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	addr := fmt.Sprintf("0.0.0.0:%d", port)
	conn, err := lc.ListenPacket(context.Background(), "udp4", addr)
	if err != nil {
		return nil, fmt.Errorf("listening for dhcp on %s: %w", iface, err)
	}
	return conn, nil
}

// setSockopts runs before bind.
func setSockopts(fd int, iface string) error {
	if err := unix.BindToDevice(fd, iface); err != nil {
		return fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_BROADCAST, 1); err != nil {
		return fmt.Errorf("SO_BROADCAST: %w", err)
	}
	// SO_RCVBUFFORCE passes net.core.rmem_max but needs CAP_NET_ADMIN.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf); err != nil {
			return fmt.Errorf("SO_RCVBUF: %w", err)
		}
	}
	return nil
}
