package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/kiln-dev/kiln/dhcp/dhcp6"
	"github.com/kiln-dev/kiln/fleet"
	"github.com/kiln-dev/kiln/metrics"
	"github.com/kiln-dev/kiln/store"
)

// interfaceIPv6 returns the first global or unique-local IPv6 address of the
// named interface, with its prefix length: the address DHCPv6 clients reach
// kiln's HTTP on.
func interfaceIPv6(name string) (netip.Prefix, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("--interface %q: %w", name, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("--interface %q: %w", name, err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() != nil {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP)
		if ip.IsLinkLocalUnicast() || ip.IsLoopback() || ip.IsMulticast() {
			continue
		}
		ones, _ := ipn.Mask.Size()
		return netip.PrefixFrom(ip, ones), nil
	}
	return netip.Prefix{}, fmt.Errorf("--dhcp6: --interface %q has no global or unique-local IPv6 address (add one, e.g. ip addr add fd77::1/64 dev %s nodad)", name, name)
}

// pool6 parses --range6 FIRST-LAST. Each end is a full address or an
// interface identifier such as ::1000, which takes the upper 64 bits of
// the interface's prefix. Empty means ::1000-::1fff.
func pool6(spec string, p netip.Prefix) (dhcp6.Pool, error) {
	if spec == "" {
		spec = "::1000-::1fff"
	}
	a, b, ok := strings.Cut(spec, "-")
	if !ok {
		return dhcp6.Pool{}, fmt.Errorf("--range6 %q: want FIRST-LAST IPv6 addresses", spec)
	}
	var ends [2]netip.Addr
	for i, s := range []string{a, b} {
		ip, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !ip.Is6() || ip.Is4In6() {
			return dhcp6.Pool{}, fmt.Errorf("--range6 %q: %q is not an IPv6 address", spec, s)
		}
		if hi := ip.As16(); !p.Contains(ip) && [8]byte(hi[:8]) == [8]byte{} {
			// An interface identifier: put it in the interface's prefix.
			pre := p.Masked().Addr().As16()
			copy(hi[:8], pre[:8])
			ip = netip.AddrFrom16(hi)
		}
		ends[i] = ip
	}
	return dhcp6.Pool{Start: ends[0], End: ends[1]}, nil
}

// startDHCP6 serves DHCPv6 on f.iface, whose IPv6 address is p6: addresses
// from --range6 and boot file URLs (option 59) pointing at kiln's HTTP on
// [p6.Addr()]:httpPort. It records offers and acks as fleet events, like
// DHCPv4. The caller also runs the Router Advertisements (with M flag and
// p6 as on-link prefix) and an HTTP listener on p6.Addr().
func startDHCP6(ctx context.Context, g *errgroup.Group, f serveFlags, p6 netip.Prefix, httpPort int, st store.Store, fl *fleet.Fleet, mx *metrics.Metrics, log *slog.Logger) error {
	pool, err := pool6(f.range6, p6)
	if err != nil {
		return usageError{err}
	}
	base := fmt.Sprintf("http://%s", net.JoinHostPort(p6.Addr().String(), fmt.Sprint(httpPort)))
	srv, err := dhcp6.New(dhcp6.Config{
		Interface: f.iface,
		ServerIP:  p6.Addr(),
		Prefix:    p6.Masked(),
		Pool:      pool,
		Leases:    st,
		Log:       log.With("component", "dhcp6"),
		Boot: dhcp6.Boot{
			ScriptURL: func(mac net.HardwareAddr) string {
				return fmt.Sprintf("%s/boot/%s.ipxe", base, mac)
			},
			HTTPBootURL: func(mac net.HardwareAddr) string {
				return fmt.Sprintf("%s/httpboot/%s.efi", base, mac)
			},
			TFTPFile: f.uefiFile,
		},
		OnDecision: func(d dhcp6.Decision) { mx.DHCP6Packet(d.MsgType, d.Outcome, false, d.Duration) },
		Observer: func(ev dhcp6.Event) {
			kind := fleet.EventOffered
			if ev.Kind == "acked" {
				kind = fleet.EventAcked
			}
			if _, err := fl.Observe(ev.MAC.String(), kind, ev.IP.String()); err != nil && !errors.Is(err, fleet.ErrNotFound) {
				log.Warn("recording dhcp6 event", "mac", ev.MAC, "err", err)
			}
		},
	})
	if err != nil {
		return usageError{fmt.Errorf("dhcp6: %w", err)}
	}
	conn, err := dhcp6.Listen(f.iface)
	if err != nil {
		return fmt.Errorf("dhcp6: %w", err)
	}
	g.Go(func() error { return srv.Serve(ctx, conn) })
	log.Info("dhcp6 started", "iface", f.iface, "ip", p6.Addr(), "pool", pool.String(), "http", base)
	return nil
}
