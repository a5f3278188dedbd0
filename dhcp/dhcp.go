// Package dhcp is kiln's DHCPv4 server: it leases addresses from one pool on
// one interface and tells PXE and iPXE clients what to boot.
//
// Handle holds the protocol decisions (RFC 2131, RFC 4578) and is pure apart
// from the lease store; Serve moves packets between a socket and Handle;
// ListenInterface opens the socket. Leases are persisted before any reply that
// depends on them is returned, so a restarted server offers every client its
// old address.
package dhcp

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/kiln-dev/kiln/store"
)

// BUG(kiln): Relayed requests (giaddr set) are ignored: relay support needs
// one pool per subnet.

// BUG(kiln): Expired lease records stay in the store until their address is
// given to another client; records outside a changed pool stay until their
// client comes back.

// Defaults for the zero fields of Config and Boot.
const (
	DefaultLeaseTime = time.Hour
	DefaultOfferTime = 60 * time.Second
	DefaultBIOSFile  = "undionly.kpxe"
	DefaultUEFIFile  = "snponly.efi"
)

// declineHold is how long an address declined by a client (RFC 2131 section
// 4.3.3) stays out of the pool.
const declineHold = 10 * time.Minute

// defaultMaxInFlight bounds the packets Serve handles at once.
const defaultMaxInFlight = 64

// Config configures one DHCPv4 server on one interface. Zero fields take the
// documented defaults; New rejects a Config that misses a required field.
type Config struct {
	// Interface is the name of the interface to serve (required). kiln never
	// serves an interface it was not told to use.
	Interface string
	// ServerIP is our IPv4 address on Interface (required). It is the server
	// identifier, siaddr and TFTP server of every reply.
	ServerIP net.IP
	// Subnet is the subnet clients are on (required); its mask is option 1.
	Subnet *net.IPNet
	// RangeStart and RangeEnd bound the inclusive pool (required). The pool
	// lies inside Subnet, excludes its network and broadcast addresses, and
	// does not contain ServerIP.
	RangeStart, RangeEnd net.IP
	// Router, if set, is sent as option 3.
	Router net.IP
	// DNS, if set, is sent as option 6.
	DNS []net.IP
	// LeaseTime is the lifetime of a bound lease; zero means DefaultLeaseTime.
	LeaseTime time.Duration
	// OfferTime is how long an offered but not yet requested address stays
	// reserved; zero means DefaultOfferTime.
	OfferTime time.Duration
	// Boot says what PXE and iPXE clients boot.
	Boot Boot
	// Leases persists the leases, in bucket "dhcp-leases" (required).
	Leases store.Store
	// Observer, if set, is called synchronously on every offer and ack of a
	// lease, after the lease is persisted and before the reply is sent. It
	// MUST return quickly; it runs without the Server's lock held.
	Observer func(Event)
	// Log receives one Info line per decision; nil discards.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Boot says what PXE and iPXE clients boot.
type Boot struct {
	// ScriptURL returns the URL of the iPXE script for a MAC (required), e.g.
	// "http://10.77.0.1:8080/boot/52:54:00:12:34:56.ipxe". The script MUST NOT
	// chain-load iPXE again: a chain-loaded iPXE sends the same request as the
	// one that loaded it, so only the script can end the chain.
	ScriptURL func(mac net.HardwareAddr) string
	// BIOSFile is the TFTP file for arch 0 (BIOS); "" means DefaultBIOSFile.
	BIOSFile string
	// UEFIFile is the TFTP file for arch 7 and 9 (UEFI x64); "" means
	// DefaultUEFIFile.
	UEFIFile string
	// HTTPBootURL returns the URL a UEFI HTTP Boot client (option 60
	// "HTTPClient", arch 16, x64) loads, e.g.
	// "http://10.0.0.1:8080/httpboot/52:54:00:12:34:56.efi"; nil gives
	// HTTP Boot clients an address but no boot file.
	HTTPBootURL func(mac net.HardwareAddr) string
}

// Event reports one offer or ack of a lease to Config.Observer.
type Event struct {
	// Kind is "offered" or "acked".
	Kind string
	// MAC is the client's hardware address.
	MAC net.HardwareAddr
	// IP is the address offered or acked.
	IP net.IP
	// Arch is the IANA name of the client's first architecture in option 93
	// (e.g. "Intel x86PC", "EFI x86-64"), "arch N" if unnamed, or "" if absent.
	Arch string
	// BootFile is the boot file or script URL handed out, or "".
	BootFile string
	// XID is the transaction ID in hex, e.g. "0x1a2b3c4d".
	XID string
}

// Lease states.
const (
	StateOffered  = "offered"
	StateBound    = "bound"
	StateDeclined = "declined"
)

// Lease is one address record. It is also the JSON stored in the lease bucket
// under the address.
type Lease struct {
	// MAC is the client's hardware address, e.g. "52:54:00:12:34:56".
	MAC string `json:"mac"`
	// IP is the leased address, e.g. "10.77.0.100".
	IP string `json:"ip"`
	// Expires is when the address returns to the pool.
	Expires time.Time `json:"expires"`
	// State is StateOffered, StateBound or StateDeclined. A declined address
	// records the MAC of the client that declined it.
	State string `json:"state"`
}

// Server is a DHCPv4 server for one interface. Its methods are safe for
// concurrent use.
type Server struct {
	cfg         Config // read-only after New
	server      netip.Addr
	subnet      netip.Prefix
	start, end  netip.Addr
	log         *slog.Logger
	now         func() time.Time
	maxInFlight int

	// mu guards byMAC and byAddr, and orders each store write before the
	// reply that depends on it.
	mu sync.Mutex
	// byAddr holds every record; byMAC the offered and bound ones.
	byAddr map[netip.Addr]*record
	byMAC  map[string]*record
}

// New validates cfg, applies its defaults and loads the leases from the store.
func New(cfg Config) (*Server, error) {
	s := &Server{maxInFlight: defaultMaxInFlight}
	if err := s.configure(cfg); err != nil {
		return nil, err
	}
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Server) configure(cfg Config) error {
	if cfg.Interface == "" {
		return errors.New("dhcp config: Interface is required")
	}
	if cfg.Leases == nil {
		return errors.New("dhcp config: Leases is required")
	}
	if cfg.Boot.ScriptURL == nil {
		return errors.New("dhcp config: Boot.ScriptURL is required")
	}
	var err error
	if s.server, err = addrField("ServerIP", cfg.ServerIP); err != nil {
		return err
	}
	if s.start, err = addrField("RangeStart", cfg.RangeStart); err != nil {
		return err
	}
	if s.end, err = addrField("RangeEnd", cfg.RangeEnd); err != nil {
		return err
	}
	if s.subnet, err = prefixField(cfg.Subnet); err != nil {
		return err
	}
	if err := s.checkPool(); err != nil {
		return err
	}
	if cfg.Router != nil {
		if _, err := addrField("Router", cfg.Router); err != nil {
			return err
		}
	}
	for _, ip := range cfg.DNS {
		if _, err := addrField("DNS", ip); err != nil {
			return err
		}
	}
	if err := durationField("LeaseTime", &cfg.LeaseTime, DefaultLeaseTime); err != nil {
		return err
	}
	if err := durationField("OfferTime", &cfg.OfferTime, DefaultOfferTime); err != nil {
		return err
	}
	if cfg.Boot.BIOSFile == "" {
		cfg.Boot.BIOSFile = DefaultBIOSFile
	}
	if cfg.Boot.UEFIFile == "" {
		cfg.Boot.UEFIFile = DefaultUEFIFile
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s.log = cfg.Log.With("iface", cfg.Interface)
	s.now = cfg.Now
	s.cfg = cfg
	return nil
}

// checkPool validates the pool against the subnet and the server address.
func (s *Server) checkPool() error {
	if !s.subnet.Contains(s.server) {
		return fmt.Errorf("dhcp config: ServerIP %s is outside Subnet %s", s.server, s.subnet)
	}
	for _, f := range []struct {
		name string
		a    netip.Addr
	}{{"RangeStart", s.start}, {"RangeEnd", s.end}} {
		if !s.subnet.Contains(f.a) {
			return fmt.Errorf("dhcp config: %s %s is outside Subnet %s", f.name, f.a, s.subnet)
		}
		if s.subnet.Bits() < 31 && (f.a == s.subnet.Addr() || f.a == lastAddr(s.subnet)) {
			return fmt.Errorf("dhcp config: %s %s is the network or broadcast address of Subnet %s", f.name, f.a, s.subnet)
		}
	}
	if s.end.Less(s.start) {
		return fmt.Errorf("dhcp config: RangeEnd %s is before RangeStart %s", s.end, s.start)
	}
	if s.inRange(s.server) {
		return fmt.Errorf("dhcp config: ServerIP %s is inside the pool %s-%s", s.server, s.start, s.end)
	}
	return nil
}

func addrField(name string, ip net.IP) (netip.Addr, error) {
	if ip == nil {
		return netip.Addr{}, fmt.Errorf("dhcp config: %s is required", name)
	}
	a, ok := addr4(ip)
	if !ok {
		return netip.Addr{}, fmt.Errorf("dhcp config: %s %s is not an IPv4 address", name, ip)
	}
	return a, nil
}

func prefixField(n *net.IPNet) (netip.Prefix, error) {
	if n == nil {
		return netip.Prefix{}, errors.New("dhcp config: Subnet is required")
	}
	a, ok := addr4(n.IP)
	ones, bits := n.Mask.Size()
	if !ok || bits != 32 {
		return netip.Prefix{}, fmt.Errorf("dhcp config: Subnet %s is not an IPv4 subnet", n)
	}
	return netip.PrefixFrom(a, ones).Masked(), nil
}

func durationField(name string, d *time.Duration, def time.Duration) error {
	switch {
	case *d == 0:
		*d = def
	case *d < time.Second || *d > time.Duration(1<<32-1)*time.Second:
		return fmt.Errorf("dhcp config: %s %s is out of range (1s to 2^32-1 s)", name, *d)
	}
	return nil
}

// addr4 converts an IPv4 (or IPv4-in-IPv6) address; it rejects anything else,
// including the unspecified address 0.0.0.0.
func addr4(ip net.IP) (netip.Addr, bool) {
	ip4 := ip.To4()
	if ip4 == nil {
		return netip.Addr{}, false
	}
	a := netip.AddrFrom4([4]byte(ip4))
	return a, !a.IsUnspecified()
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := range 4 {
		b[i] |= byte(host >> (24 - 8*i))
	}
	return netip.AddrFrom4(b)
}

func (s *Server) inRange(a netip.Addr) bool {
	return a.Is4() && !a.Less(s.start) && !s.end.Less(a)
}
