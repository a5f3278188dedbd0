//go:build !linux

package dhcp

import (
	"errors"
	"net"
)

// ListenInterface opens the DHCP server socket for iface. It needs
// SO_BINDTODEVICE and so works on Linux only.
func ListenInterface(iface string) (net.PacketConn, error) {
	return nil, errors.New("listening for dhcp: only supported on linux")
}

// ListenInterfacePort opens a DHCP server socket for iface on port. It needs
// SO_BINDTODEVICE and so works on Linux only.
func ListenInterfacePort(iface string, port int) (net.PacketConn, error) {
	return nil, errors.New("listening for dhcp: only supported on linux")
}

// ListenInterfaceShared opens a shared DHCP server socket for iface on
// port. It needs SO_BINDTODEVICE and so works on Linux only.
func ListenInterfaceShared(iface string, port int) (net.PacketConn, error) {
	return nil, errors.New("listening for dhcp: only supported on linux")
}
