package dhcp6

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// rcvBuf is the socket receive buffer Listen asks for, so that a burst of
// Solicits from a rack powering on is queued, not dropped.
const rcvBuf = 4 << 20

// allServers is All_DHCP_Relay_Agents_and_Servers (RFC 8415 section 7.1).
var allServers = net.ParseIP("ff02::1:2")

// Listen opens the DHCPv6 server socket for iface: UDP [::]:547, IPv6 only,
// bound to the device (SO_BINDTODEVICE), member of ff02::1:2 on iface only,
// with a 4 MiB receive buffer. Like dhcp.ListenInterface it sets neither
// SO_REUSEPORT nor SO_REUSEADDR, so a second server on the same device
// fails here instead of silently sharing the traffic. It needs
// CAP_NET_BIND_SERVICE for port 547.
func Listen(iface string) (net.PacketConn, error) {
	if iface == "" {
		return nil, fmt.Errorf("listening for dhcp6: no interface given")
	}
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("listening for dhcp6 on %s: %w", iface, err)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = setSockopts(int(fd), iface) }); err != nil {
			return err
		}
		return serr
	}}
	conn, err := lc.ListenPacket(context.Background(), "udp6", fmt.Sprintf("[::]:%d", dhcpv6.DefaultServerPort))
	if err != nil {
		return nil, fmt.Errorf("listening for dhcp6 on %s: %w", iface, err)
	}
	p := ipv6.NewPacketConn(conn)
	if err := p.JoinGroup(ifi, &net.UDPAddr{IP: allServers}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("listening for dhcp6 on %s: joining ff02::1:2: %w", iface, err)
	}
	if err := p.SetMulticastLoopback(false); err != nil {
		conn.Close()
		return nil, fmt.Errorf("listening for dhcp6 on %s: multicast loopback: %w", iface, err)
	}
	return conn, nil
}

// setSockopts runs before bind.
func setSockopts(fd int, iface string) error {
	if err := unix.BindToDevice(fd, iface); err != nil {
		return fmt.Errorf("SO_BINDTODEVICE %s: %w", iface, err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
		return fmt.Errorf("IPV6_V6ONLY: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); err != nil {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf); err != nil {
			return fmt.Errorf("SO_RCVBUF: %w", err)
		}
	}
	return nil
}
