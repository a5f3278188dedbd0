package dhcp

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"
)

// BUG(kiln): ServeRA finds the interface and its link-local address in the
// network namespace of the calling thread, while its socket keeps the
// namespace it was opened in. Callers that switch namespaces per thread
// (tests) must keep the calling goroutine locked into the namespace.

// DefaultRAInterval is the period of unsolicited Router Advertisements when
// RAConfig.Interval is zero: MinRtrAdvInterval's floor of RFC 4861 section
// 6.2.1, because iPXE boots within seconds.
const DefaultRAInterval = 3 * time.Second

// Router Advertisement wire constants (RFC 4861).
const (
	ndHopLimit      = 255 // section 6.1.2: hosts drop RAs and RSs with any other
	raHeaderLen     = 16  // section 4.2: type to retrans timer
	rsHeaderLen     = 8   // section 4.1: type to reserved
	raFlagManaged   = 0x80
	raFlagOther     = 0x40
	ndOptSourceLLA  = 1 // section 4.6.1
	ndOptPrefixInfo = 3 // section 4.6.2
	ndOptUnitLength = 8 // option lengths count 8-octet units
	prefixInfoLen   = 32
	prefixFlagL     = 0x80 // on-link
	prefixFlagA     = 0x40 // autonomous address configuration
)

// minRAGap is the shortest time between two advertisements sent in reply to
// solicitations. RFC 4861 section 6.2.6 asks 3 s between multicast RAs;
// kiln answers sooner because a booting iPXE is waiting, but a rack of
// soliciting hosts still gets at most two replies a second.
const minRAGap = 500 * time.Millisecond

var (
	allNodes   = net.ParseIP("ff02::1") // RA destination, section 6.2.6
	allRouters = net.ParseIP("ff02::2") // RS destination, section 6.3.7
)

// RAConfig configures the router advertiser. Zero fields take defaults.
type RAConfig struct {
	// Interface is the only interface to advertise on (required).
	Interface string
	// Interval is the period of unsolicited advertisements;
	// DefaultRAInterval if zero.
	Interval time.Duration
	// Log receives one Info line when advertising starts and Debug lines per
	// packet; nil discards.
	Log *slog.Logger
	// Managed and Other set the M and O flags (RFC 4861 section 4.2):
	// addresses, or other configuration only, come from DHCPv6. kiln's
	// DHCPv6 server wants Managed.
	Managed, Other bool
	// Prefixes are sent as Prefix Information options (section 4.6.2). A
	// UEFI HTTP Boot client over IPv6 needs the on-link prefix of the
	// server's address: EDK2 looks up a route to the boot server before
	// it connects, and without an on-link prefix it has none.
	Prefixes []RAPrefix
}

// RAPrefix is one Prefix Information option of a Router Advertisement.
type RAPrefix struct {
	// Prefix is the advertised prefix, e.g. fd77::/64.
	Prefix netip.Prefix
	// OnLink (the L flag) says addresses in Prefix are reachable directly.
	OnLink bool
	// Autonomous (the A flag) lets hosts form addresses in Prefix by
	// SLAAC. Leave it clear when DHCPv6 hands out the addresses.
	Autonomous bool
	// ValidLifetime and PreferredLifetime of the prefix; zero means
	// DefaultRAPrefixLifetime and the valid lifetime.
	ValidLifetime, PreferredLifetime time.Duration
}

// DefaultRAPrefixLifetime is the valid lifetime of an advertised prefix
// whose RAPrefix.ValidLifetime is zero.
const DefaultRAPrefixLifetime = 24 * time.Hour

// ServeRA sends ICMPv6 Router Advertisements (RFC 4861 section 4.2) on
// cfg.Interface, so that iPXE finishes IPv6 autoconfiguration at once
// instead of waiting ~14 s for a router. Each has router lifetime 0 (kiln is
// not a router: hosts must not use it as default gateway), the M and O
// flags of cfg (clear by default), a Prefix Information option for each of
// cfg.Prefixes (none by default) and a source link-layer address option. They
// go to ff02::1 with hop limit 255 (section 6.1.2) from the interface's
// link-local address, every Interval and in reply to Router Solicitations
// (section 6.2.6).
//
// Until the interface has a usable (up, not tentative) link-local address,
// as with a bridge without carrier, ServeRA waits and sends nothing. If IPv6
// is disabled on the interface it logs one Warn line and returns nil: kiln
// still boots machines, iPXE just waits. ServeRA returns nil when ctx ends,
// and an error if the interface disappears or the socket fails.
func ServeRA(ctx context.Context, cfg RAConfig) error {
	if cfg.Interface == "" {
		return errors.New("router advertisements: no interface given")
	}
	prefixes, err := raPrefixes(cfg.Prefixes)
	if err != nil {
		return err
	}
	a := &advertiser{name: cfg.Interface, interval: cfg.Interval, log: cfg.Log,
		managed: cfg.Managed, other: cfg.Other, prefixes: prefixes}
	if a.interval <= 0 {
		a.interval = DefaultRAInterval
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.log = a.log.With("iface", a.name)
	ifi, err := net.InterfaceByName(a.name)
	if err != nil {
		return fmt.Errorf("router advertisements on %s: %w", a.name, err)
	}
	a.index = ifi.Index
	if raPlatform.ipv6Disabled(a.name) {
		a.warnDisabled()
		return nil
	}
	conn, err := listenRA(ifi)
	if errors.Is(err, syscall.EAFNOSUPPORT) {
		a.warnDisabled()
		return nil
	}
	if err != nil {
		return err
	}
	a.conn = conn
	return a.serve(ctx)
}

// raPlatform holds the parts of ServeRA that depend on the operating system:
// portable defaults here, replaced by ra_linux.go.
var raPlatform = struct {
	// sockopts configures the raw socket before bind.
	sockopts func(fd uintptr, iface string) error
	// ipv6Disabled reports that iface can never get an IPv6 address.
	ipv6Disabled func(iface string) bool
	// linkLocal returns a link-local address of ifi usable as a source,
	// or nil.
	linkLocal func(ifi *net.Interface) net.IP
}{
	sockopts:     func(uintptr, string) error { return nil },
	ipv6Disabled: func(string) bool { return false },
	linkLocal:    addrsLinkLocal,
}

// addrsLinkLocal returns the first IPv6 link-local address of ifi, which
// may still be tentative.
func addrsLinkLocal(ifi *net.Interface) net.IP {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() == nil && ipn.IP.IsLinkLocalUnicast() {
			return ipn.IP
		}
	}
	return nil
}

// advertiser is the state of one ServeRA call. Only serve's goroutine
// changes it; the reader goroutine uses conn, index and log, which are set
// before it starts.
type advertiser struct {
	name     string
	index    int
	interval time.Duration
	log      *slog.Logger
	conn     *ipv6.PacketConn

	managed  bool
	other    bool
	prefixes []prefixInfo

	src     net.IP    // the address the last RA came from
	last    time.Time // when the last RA was sent
	waiting bool      // "no link-local address yet" is logged
	sendErr string    // the last send error, logged when it changes
}

func (a *advertiser) warnDisabled() {
	a.log.Warn("not sending router advertisements: IPv6 is disabled on the interface; iPXE may wait ~14 s for IPv6 configuration before booting")
}

// listenRA opens a raw ICMPv6 socket on ifi that receives Router
// Solicitations and sends with hop limit 255.
func listenRA(ifi *net.Interface) (*ipv6.PacketConn, error) {
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) { serr = raPlatform.sockopts(fd, ifi.Name) }); err != nil {
			return err
		}
		return serr
	}}
	c, err := lc.ListenPacket(context.Background(), "ip6:ipv6-icmp", "::")
	if err != nil {
		return nil, fmt.Errorf("router advertisements on %s: %w", ifi.Name, err)
	}
	p := ipv6.NewPacketConn(c)
	var filter ipv6.ICMPFilter
	filter.SetAll(true)
	filter.Accept(ipv6.ICMPTypeRouterSolicitation)
	for _, set := range []struct {
		what string
		err  error
	}{
		{"icmp filter", p.SetICMPFilter(&filter)},
		{"hop limit", p.SetHopLimit(ndHopLimit)},
		{"multicast hop limit", p.SetMulticastHopLimit(ndHopLimit)},
		{"multicast interface", p.SetMulticastInterface(ifi)},
		{"multicast loopback", p.SetMulticastLoopback(false)},
		{"joining ff02::2", p.JoinGroup(ifi, &net.IPAddr{IP: allRouters})},
		{"control messages", p.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true)},
	} {
		if set.err != nil {
			p.Close()
			return nil, fmt.Errorf("router advertisements on %s: %s: %w", ifi.Name, set.what, set.err)
		}
	}
	return p, nil
}

// serve advertises every interval and on solicitation until ctx ends.
func (a *advertiser) serve(ctx context.Context) error {
	solicited := make(chan struct{}, 1)
	var readErr error
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		readErr = a.readSolicitations(solicited)
	}()
	defer func() {
		a.conn.Close()
		<-readDone
	}()

	tick := time.NewTicker(a.interval)
	defer tick.Stop()
	var gap *time.Timer // pending reply held back by minRAGap
	defer func() {
		if gap != nil {
			gap.Stop()
		}
	}()
	if err := a.advertise("start"); err != nil {
		return err
	}
	for {
		var gapC <-chan time.Time
		if gap != nil {
			gapC = gap.C
		}
		var err error
		select {
		case <-ctx.Done():
			return nil
		case <-readDone:
			return fmt.Errorf("router advertisements on %s: reading: %w", a.name, readErr)
		case <-tick.C:
			err = a.advertise("periodic")
		case <-gapC:
			gap = nil
			err = a.advertise("solicited")
		case <-solicited:
			if wait := minRAGap - time.Since(a.last); wait > 0 {
				if gap == nil {
					gap = time.NewTimer(wait)
				}
				continue
			}
			err = a.advertise("solicited")
		}
		if err != nil {
			return err
		}
	}
}

// readSolicitations signals solicited for each valid Router Solicitation
// until the socket is closed.
func (a *advertiser) readSolicitations(solicited chan<- struct{}) error {
	buf := make([]byte, 1500)
	for {
		n, cm, peer, err := a.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		if cm == nil || cm.IfIndex != a.index {
			continue // the socket is bound to the device; this is belt and braces
		}
		var src net.IP
		if ip, ok := peer.(*net.IPAddr); ok {
			src = ip.IP
		}
		// Section 6.1.1: hop limit 255, then the message itself.
		if cm.HopLimit != ndHopLimit {
			a.log.Debug("ignored router solicitation: hop limit not 255", "src", src, "hop_limit", cm.HopLimit)
			continue
		}
		lla, err := parseRS(buf[:n], src)
		if err != nil {
			a.log.Debug("ignored router solicitation", "src", src, "err", err)
			continue
		}
		a.log.Debug("router solicitation", "src", src, "lladdr", lla.String())
		select {
		case solicited <- struct{}{}:
		default: // a reply is already due
		}
	}
}

// advertise sends one RA if the interface has a usable link-local address.
// It fails only when the interface is gone.
func (a *advertiser) advertise(reason string) error {
	ifi, err := net.InterfaceByName(a.name)
	if err == nil && ifi.Index != a.index {
		err = fmt.Errorf("index changed from %d to %d", a.index, ifi.Index)
	}
	if err != nil {
		return fmt.Errorf("router advertisements on %s: interface gone: %w", a.name, err)
	}
	src := raPlatform.linkLocal(ifi)
	if src == nil || ifi.Flags&net.FlagUp == 0 {
		if !a.waiting {
			a.log.Info("router advertisements wait: no usable IPv6 link-local address yet (link down or duplicate address detection running)")
			a.waiting = true
		}
		return nil
	}
	msg := routerAdvert{SourceLLA: ifi.HardwareAddr, Managed: a.managed, Other: a.other, Prefixes: a.prefixes}.marshal()
	cm := &ipv6.ControlMessage{HopLimit: ndHopLimit, Src: src, IfIndex: ifi.Index}
	if _, err := a.conn.WriteTo(msg, cm, &net.IPAddr{IP: allNodes}); err != nil {
		// The address or link can vanish between lookup and send; the
		// next tick looks again.
		if err.Error() != a.sendErr {
			a.log.Warn("sending router advertisement", "src", src, "err", err)
			a.sendErr = err.Error()
		}
		return nil
	}
	a.sendErr, a.waiting = "", false
	a.last = time.Now()
	if !src.Equal(a.src) {
		a.log.Info("sending router advertisements", "src", src, "mac", ifi.HardwareAddr.String(),
			"interval", a.interval, "router_lifetime", 0, "managed", a.managed, "other", a.other,
			"prefixes", len(a.prefixes))
		a.src = src
	}
	a.log.Debug("sent router advertisement", "reason", reason)
	return nil
}

// routerAdvert is a Router Advertisement (RFC 4861 section 4.2) with the
// options kiln sends. Unknown options are skipped when parsing.
type routerAdvert struct {
	CurHopLimit    uint8 // 0: unspecified
	Managed, Other bool  // M and O flags
	RouterLifetime uint16
	ReachableTime  uint32 // milliseconds
	RetransTimer   uint32 // milliseconds
	SourceLLA      net.HardwareAddr
	Prefixes       []prefixInfo
}

// prefixInfo is a Prefix Information option (section 4.6.2).
type prefixInfo struct {
	Prefix             netip.Prefix
	OnLink, Autonomous bool
	ValidLifetime      uint32 // seconds; 0xffffffff is infinity
	PreferredLifetime  uint32
}

// Equal reports whether p and q are the same option; go-cmp uses it, as
// netip.Prefix has unexported fields.
func (p prefixInfo) Equal(q prefixInfo) bool { return p == q }

// raPrefixes validates and converts RAConfig.Prefixes.
func raPrefixes(ps []RAPrefix) ([]prefixInfo, error) {
	var out []prefixInfo
	for _, p := range ps {
		if !p.Prefix.IsValid() || !p.Prefix.Addr().Is6() || p.Prefix.Addr().Is4In6() {
			return nil, fmt.Errorf("router advertisements: prefix %s is not an IPv6 prefix", p.Prefix)
		}
		valid, preferred := p.ValidLifetime, p.PreferredLifetime
		if valid == 0 {
			valid = DefaultRAPrefixLifetime
		}
		if preferred == 0 {
			preferred = valid
		}
		if valid < 0 || preferred < 0 || preferred > valid {
			return nil, fmt.Errorf("router advertisements: prefix %s: preferred lifetime %s must be within valid lifetime %s",
				p.Prefix, preferred, valid)
		}
		out = append(out, prefixInfo{Prefix: p.Prefix.Masked(), OnLink: p.OnLink, Autonomous: p.Autonomous,
			ValidLifetime: seconds32(valid), PreferredLifetime: seconds32(preferred)})
	}
	return out, nil
}

// seconds32 converts d to whole seconds, capped at 0xffffffff (infinity).
func seconds32(d time.Duration) uint32 {
	if s := d / time.Second; s < 1<<32-1 {
		return uint32(s)
	}
	return 1<<32 - 1
}

// marshal returns the ICMPv6 message with a zero checksum: the kernel fills
// it in on raw ICMPv6 sockets (RFC 3542 section 3.1).
func (ra routerAdvert) marshal() []byte {
	b := make([]byte, raHeaderLen, raHeaderLen+ndOptUnitLength)
	b[0] = byte(ipv6.ICMPTypeRouterAdvertisement)
	b[4] = ra.CurHopLimit
	if ra.Managed {
		b[5] |= raFlagManaged
	}
	if ra.Other {
		b[5] |= raFlagOther
	}
	binary.BigEndian.PutUint16(b[6:], ra.RouterLifetime)
	binary.BigEndian.PutUint32(b[8:], ra.ReachableTime)
	binary.BigEndian.PutUint32(b[12:], ra.RetransTimer)
	if len(ra.SourceLLA) > 0 {
		b = appendLLAOption(b, ndOptSourceLLA, ra.SourceLLA)
	}
	for _, p := range ra.Prefixes {
		b = appendPrefixOption(b, p)
	}
	return b
}

// appendPrefixOption appends a Prefix Information option (section 4.6.2).
func appendPrefixOption(b []byte, p prefixInfo) []byte {
	opt := make([]byte, prefixInfoLen)
	opt[0], opt[1] = ndOptPrefixInfo, prefixInfoLen/ndOptUnitLength
	opt[2] = byte(p.Prefix.Bits())
	if p.OnLink {
		opt[3] |= prefixFlagL
	}
	if p.Autonomous {
		opt[3] |= prefixFlagA
	}
	binary.BigEndian.PutUint32(opt[4:], p.ValidLifetime)
	binary.BigEndian.PutUint32(opt[8:], p.PreferredLifetime)
	a := p.Prefix.Masked().Addr().As16()
	copy(opt[16:], a[:])
	return append(b, opt...)
}

// appendLLAOption appends a link-layer address option (section 4.6.1),
// zero-padded to a multiple of 8 octets.
func appendLLAOption(b []byte, typ byte, lla net.HardwareAddr) []byte {
	units := (2 + len(lla) + ndOptUnitLength - 1) / ndOptUnitLength
	opt := make([]byte, units*ndOptUnitLength)
	opt[0], opt[1] = typ, byte(units)
	copy(opt[2:], lla)
	return append(b, opt...)
}

// parseRA parses an ICMPv6 Router Advertisement as marshal writes it.
func parseRA(b []byte) (routerAdvert, error) {
	var ra routerAdvert
	if len(b) < raHeaderLen {
		return ra, fmt.Errorf("router advertisement: %d bytes, want at least %d", len(b), raHeaderLen)
	}
	if t := ipv6.ICMPType(b[0]); t != ipv6.ICMPTypeRouterAdvertisement || b[1] != 0 {
		return ra, fmt.Errorf("router advertisement: type %d code %d", b[0], b[1])
	}
	ra.CurHopLimit = b[4]
	ra.Managed = b[5]&raFlagManaged != 0
	ra.Other = b[5]&raFlagOther != 0
	ra.RouterLifetime = binary.BigEndian.Uint16(b[6:])
	ra.ReachableTime = binary.BigEndian.Uint32(b[8:])
	ra.RetransTimer = binary.BigEndian.Uint32(b[12:])
	lla, err := sourceLLA(b[raHeaderLen:])
	if err != nil {
		return ra, fmt.Errorf("router advertisement: %w", err)
	}
	ra.SourceLLA = lla
	ra.Prefixes = parsePrefixes(b[raHeaderLen:])
	return ra, nil
}

// parsePrefixes returns the well-formed Prefix Information options of
// options that sourceLLA has validated.
func parsePrefixes(opts []byte) []prefixInfo {
	var out []prefixInfo
	for len(opts) >= 2 && opts[1] != 0 && int(opts[1])*ndOptUnitLength <= len(opts) {
		n := int(opts[1]) * ndOptUnitLength
		if opts[0] == ndOptPrefixInfo && n == prefixInfoLen && opts[2] <= 128 {
			p := netip.PrefixFrom(netip.AddrFrom16([16]byte(opts[16:32])), int(opts[2]))
			out = append(out, prefixInfo{Prefix: p.Masked(), OnLink: opts[3]&prefixFlagL != 0,
				Autonomous: opts[3]&prefixFlagA != 0, ValidLifetime: binary.BigEndian.Uint32(opts[4:]),
				PreferredLifetime: binary.BigEndian.Uint32(opts[8:])})
		}
		opts = opts[n:]
	}
	return out
}

// parseRS validates a Router Solicitation from src (section 6.1.1, apart
// from the hop limit, which travels outside the message) and returns its
// source link-layer address, if any.
func parseRS(b []byte, src net.IP) (net.HardwareAddr, error) {
	if len(b) < rsHeaderLen {
		return nil, fmt.Errorf("router solicitation: %d bytes, want at least %d", len(b), rsHeaderLen)
	}
	if t := ipv6.ICMPType(b[0]); t != ipv6.ICMPTypeRouterSolicitation || b[1] != 0 {
		return nil, fmt.Errorf("router solicitation: type %d code %d", b[0], b[1])
	}
	lla, err := sourceLLA(b[rsHeaderLen:])
	if err != nil {
		return nil, fmt.Errorf("router solicitation: %w", err)
	}
	if lla != nil && src.IsUnspecified() {
		return nil, errors.New("router solicitation: source link-layer address from the unspecified address")
	}
	return lla, nil
}

// sourceLLA walks Neighbor Discovery options (section 4.6) and returns the
// first source link-layer address, trailing zero padding included. Every
// option must have a nonzero length that fits.
func sourceLLA(opts []byte) (net.HardwareAddr, error) {
	var lla net.HardwareAddr
	for len(opts) > 0 {
		if len(opts) < 2 || opts[1] == 0 {
			return nil, errors.New("malformed option")
		}
		n := int(opts[1]) * ndOptUnitLength
		if n > len(opts) {
			return nil, fmt.Errorf("option %d: length %d past the end", opts[0], n)
		}
		if opts[0] == ndOptSourceLLA && lla == nil {
			lla = net.HardwareAddr(append([]byte(nil), opts[2:n]...))
		}
		opts = opts[n:]
	}
	return lla, nil
}
