//go:build !linux

package dhcp6

import (
	"errors"
	"net"
)

// Listen is only implemented on Linux: it needs SO_BINDTODEVICE.
func Listen(iface string) (net.PacketConn, error) {
	return nil, errors.New("listening for dhcp6: only supported on linux")
}
