// Package dhcp6 is kiln's DHCPv6 server (RFC 8415): it leases addresses
// (IA_NA) from one pool on one interface and tells UEFI PXE, UEFI HTTP Boot
// and iPXE clients what to boot with option 59, the boot file URL (RFC 5970).
//
// Handle holds the protocol decisions and is pure apart from the lease
// store; Serve moves packets between a socket and Handle; Listen opens the
// socket. Leases are persisted before any reply that depends on them is
// returned, so a restarted server gives every client its old address.
//
// DHCPv6 does not carry the client's MAC address, which kiln needs to find
// the machine. The server takes it, in this order, from a client link-layer
// address option (79, RFC 6939), from the EUI-64 interface identifier of the
// client's link-local source address, or from a DUID-LL or DUID-LLT client
// identifier; Decision.MACSource says which. The link-local address comes
// before the DUID: it belongs to the interface the request came in on, a
// DUID names some interface of the client at some time, and EDK2 builds set
// to DUID-UUID (PcdDhcp6UidType) carry no MAC at all. Debian 12's OVMF
// sends a DUID-LLT.
package dhcp6

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/kiln-dev/kiln/store"
)

// BUG(kiln): Relayed messages (Relay-Forward) are ignored: the server hands
// out addresses on its own link only.

// BUG(kiln): Only IA_NA is served. IA_TA and IA_PD in a request are left out
// of the reply, which RFC 8415 allows for IA types a server does not support.

// BUG(kiln): Expired lease records stay in the store until their address is
// given to another client.

// BUG(kiln): With a nil Config.ServerDUID, New looks up Interface in the
// network namespace of the calling thread (as dhcp.ServeRA does).

// BUG(kiln): Leases are written with one store Update per change under the
// server's lock, not yet through store.GroupCommit.

// Defaults for the zero fields of Config.
const (
	DefaultPreferredLifetime = 30 * time.Minute
	DefaultValidLifetime     = time.Hour
	DefaultOfferTime         = 60 * time.Second
	DefaultTFTPFile          = "snponly.efi"
)

// declineHold is how long an address a client declined (RFC 8415 section
// 18.3.8) stays out of the pool.
const declineHold = 10 * time.Minute

// maxProbe bounds the addresses a single allocation looks at, so that a huge
// pool (a whole /64) costs no more than a small one.
const maxProbe = 1 << 16

// defaultMaxInFlight bounds the packets Serve handles at once.
const defaultMaxInFlight = 64

// Config configures one DHCPv6 server on one interface. Zero fields take the
// documented defaults; New rejects a Config that misses a required field.
type Config struct {
	// Interface is the name of the interface to serve (required).
	Interface string
	// ServerIP is our global or unique-local IPv6 address on Interface
	// (required), e.g. fd77::1. It is the host of the tftp:// boot URL.
	ServerIP netip.Addr
	// Prefix is the on-link prefix of Interface (required), e.g. fd77::/64.
	// It contains ServerIP and the pool; a Confirm for an address outside it
	// gets NotOnLink.
	Prefix netip.Prefix
	// Pool is the inclusive range of addresses handed out (required). Start
	// and End lie inside Prefix and share their upper 64 bits; the pool does
	// not contain ServerIP.
	Pool Pool
	// PreferredLifetime and ValidLifetime of a bound address;
	// DefaultPreferredLifetime and DefaultValidLifetime if zero. T1 and T2
	// are 0.5 and 0.8 of the preferred lifetime.
	PreferredLifetime, ValidLifetime time.Duration
	// OfferTime is how long an advertised but not yet requested address
	// stays reserved; DefaultOfferTime if zero.
	OfferTime time.Duration
	// DNS, if set, is sent as option 23.
	DNS []netip.Addr
	// ServerDUID is our server identifier. Nil means a DUID-LL of
	// Interface's hardware address, or, if Interface has none, a DUID-UUID
	// derived from ServerIP; both are stable across restarts.
	ServerDUID dhcpv6.DUID
	// Boot says what clients boot.
	Boot Boot
	// Leases persists the leases, in bucket "dhcp6-leases" (required).
	Leases store.Store
	// Observer, if set, is called synchronously on every advertise and
	// bind of a lease to a client whose MAC is known, after the lease is
	// persisted and before the reply is sent. It MUST return quickly.
	Observer func(Event)
	// OnDecision, if set, is called once for every packet handled,
	// including malformed and ignored ones (for metrics). It MUST return
	// quickly and be safe for concurrent use.
	OnDecision func(Decision)
	// Log receives one Info line per decision; nil discards.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Pool is an inclusive range of addresses.
type Pool struct{ Start, End netip.Addr }

// String returns "start-end".
func (p Pool) String() string { return p.Start.String() + "-" + p.End.String() }

// Boot says what clients boot. A nil function gives those clients an
// address but no boot file URL.
type Boot struct {
	// ScriptURL returns the URL of the iPXE script for a MAC, for clients
	// whose user class (option 15) says iPXE. mac is nil when the server
	// could not learn the client's MAC.
	ScriptURL func(mac net.HardwareAddr) string
	// HTTPBootURL returns the URL a UEFI HTTP Boot client (vendor class
	// "HTTPClient", arch 16, x64) loads, e.g.
	// "http://[fd77::1]:8080/httpboot/52:54:00:12:34:56.efi".
	HTTPBootURL func(mac net.HardwareAddr) string
	// TFTPFile is the file UEFI PXE clients (arch 7 and 9) load, as
	// tftp://[ServerIP]/TFTPFile; "" means DefaultTFTPFile.
	TFTPFile string
}

// Event reports one advertise or bind of a lease to Config.Observer.
type Event struct {
	// Kind is "offered" (Advertise) or "acked" (Reply that binds).
	Kind string
	// MAC is the client's hardware address.
	MAC net.HardwareAddr
	// IP is the address advertised or bound.
	IP netip.Addr
	// Arch is the client's first architecture of option 61, as in
	// Decision.Arch.
	Arch string
	// BootFile is the boot file URL handed out, or "".
	BootFile string
	// XID is the transaction ID in hex, e.g. "0x1a2b3c".
	XID string
}

// Decision describes the handling of one packet, for Config.OnDecision.
type Decision struct {
	// MsgType is the message type, e.g. "SOLICIT", or "" when unparseable.
	MsgType string
	// Outcome is one of "offered" (Advertise), "acked" (Reply binding or
	// extending addresses), "nak" (Reply whose IAs carry NoBinding,
	// NotOnLink or NoAddrsAvail), "released", "declined", "confirmed",
	// "informed", "ignored", "malformed" or "error".
	Outcome string
	// Reason explains ignored, nak and error outcomes, and any status code.
	Reason string
	// MAC is the client's MAC, or "" if unknown; MACSource says where it
	// came from: "opt79", "link-local", "duid-ll", "duid-llt" or "".
	MAC, MACSource string
	// DUID is the client identifier in hex.
	DUID string
	// XID is the transaction ID in hex.
	XID string
	// Arch names the client architecture (option 61), or "".
	Arch string
	// IP lists the addresses in the reply's IAs, comma-separated.
	IP string
	// BootFile is the boot file URL sent, or "".
	BootFile string
	// Duration is how long the decision took, store write included.
	Duration time.Duration
}

// Lease states.
const (
	StateOffered  = "offered"
	StateBound    = "bound"
	StateDeclined = "declined"
)

// Lease is one address record. It is also the JSON stored in the lease
// bucket under the address.
type Lease struct {
	// DUID is the client identifier, in hex.
	DUID string `json:"duid"`
	// IAID is the identity association, in hex.
	IAID string `json:"iaid"`
	// MAC is the client's hardware address if known, else "".
	MAC string `json:"mac,omitempty"`
	// IP is the leased address.
	IP string `json:"ip"`
	// Expires is when the address returns to the pool.
	Expires time.Time `json:"expires"`
	// State is StateOffered, StateBound or StateDeclined.
	State string `json:"state"`
}

// Server is a DHCPv6 server for one interface. Its methods are safe for
// concurrent use.
type Server struct {
	cfg         Config // read-only after New
	duid        dhcpv6.DUID
	log         *slog.Logger
	now         func() time.Time
	maxInFlight int

	// mu guards byAddr and byIA and orders each store write before the
	// reply that depends on it.
	mu     sync.Mutex
	byAddr map[netip.Addr]*record // every record
	byIA   map[iaKey]*record      // offered and bound records
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
	switch {
	case cfg.Interface == "":
		return errors.New("dhcp6 config: Interface is required")
	case cfg.Leases == nil:
		return errors.New("dhcp6 config: Leases is required")
	case !cfg.ServerIP.IsValid():
		return errors.New("dhcp6 config: ServerIP is required")
	case !cfg.ServerIP.Is6() || cfg.ServerIP.Is4In6() || cfg.ServerIP.IsLinkLocalUnicast() ||
		cfg.ServerIP.IsMulticast() || cfg.ServerIP.IsUnspecified() || cfg.ServerIP.IsLoopback():
		return fmt.Errorf("dhcp6 config: ServerIP %s is not a global or unique-local IPv6 address", cfg.ServerIP)
	case cfg.ServerIP.Zone() != "":
		return fmt.Errorf("dhcp6 config: ServerIP %s has a zone", cfg.ServerIP)
	case !cfg.Prefix.IsValid():
		return errors.New("dhcp6 config: Prefix is required")
	case !cfg.Prefix.Addr().Is6() || cfg.Prefix.Addr().Is4In6():
		return fmt.Errorf("dhcp6 config: Prefix %s is not an IPv6 prefix", cfg.Prefix)
	case cfg.Prefix.Bits() > 120:
		return fmt.Errorf("dhcp6 config: Prefix %s is too small (longer than /120)", cfg.Prefix)
	}
	cfg.Prefix = cfg.Prefix.Masked()
	if !cfg.Prefix.Contains(cfg.ServerIP) {
		return fmt.Errorf("dhcp6 config: ServerIP %s is outside Prefix %s", cfg.ServerIP, cfg.Prefix)
	}
	if err := checkPool(cfg.Pool, cfg.Prefix, cfg.ServerIP); err != nil {
		return err
	}
	for _, a := range cfg.DNS {
		if !a.Is6() || a.Is4In6() || a.IsUnspecified() {
			return fmt.Errorf("dhcp6 config: DNS %s is not an IPv6 address", a)
		}
	}
	for _, f := range []struct {
		name string
		d    *time.Duration
		def  time.Duration
	}{
		{"PreferredLifetime", &cfg.PreferredLifetime, DefaultPreferredLifetime},
		{"ValidLifetime", &cfg.ValidLifetime, DefaultValidLifetime},
		{"OfferTime", &cfg.OfferTime, DefaultOfferTime},
	} {
		switch {
		case *f.d == 0:
			*f.d = f.def
		case *f.d < time.Second || *f.d >= time.Duration(1<<32-1)*time.Second:
			return fmt.Errorf("dhcp6 config: %s %s is out of range (1s to 2^32-2 s)", f.name, *f.d)
		}
	}
	if cfg.PreferredLifetime > cfg.ValidLifetime {
		return fmt.Errorf("dhcp6 config: PreferredLifetime %s is longer than ValidLifetime %s", cfg.PreferredLifetime, cfg.ValidLifetime)
	}
	if cfg.Boot.TFTPFile == "" {
		cfg.Boot.TFTPFile = DefaultTFTPFile
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s.duid = cfg.ServerDUID
	if s.duid == nil {
		s.duid = defaultDUID(cfg.Interface, cfg.ServerIP)
	}
	s.log = cfg.Log.With("iface", cfg.Interface)
	s.now = cfg.Now
	s.cfg = cfg
	return nil
}

func checkPool(p Pool, prefix netip.Prefix, server netip.Addr) error {
	if !p.Start.IsValid() || !p.End.IsValid() {
		return errors.New("dhcp6 config: Pool Start and End are required")
	}
	for _, f := range []struct {
		name string
		a    netip.Addr
	}{{"Pool.Start", p.Start}, {"Pool.End", p.End}} {
		if !prefix.Contains(f.a) {
			return fmt.Errorf("dhcp6 config: %s %s is outside Prefix %s", f.name, f.a, prefix)
		}
		if f.a == prefix.Addr() {
			return fmt.Errorf("dhcp6 config: %s %s is the Subnet-Router anycast address of %s", f.name, f.a, prefix)
		}
	}
	if p.End.Less(p.Start) {
		return fmt.Errorf("dhcp6 config: Pool.End %s is before Pool.Start %s", p.End, p.Start)
	}
	if hi(p.Start) != hi(p.End) {
		return fmt.Errorf("dhcp6 config: Pool %s spans more than one /64", p)
	}
	if inPool(p, server) {
		return fmt.Errorf("dhcp6 config: ServerIP %s is inside Pool %s", server, p)
	}
	return nil
}

// defaultDUID is a DUID-LL of iface's hardware address if it has an
// Ethernet one, else a DUID-UUID hashed from ServerIP.
func defaultDUID(iface string, server netip.Addr) dhcpv6.DUID {
	if ifi, err := net.InterfaceByName(iface); err == nil && len(ifi.HardwareAddr) == 6 {
		return &dhcpv6.DUIDLL{HWType: 1, LinkLayerAddr: ifi.HardwareAddr}
	}
	sum := sha256.Sum256([]byte("kiln dhcp6 " + server.String()))
	var u dhcpv6.DUIDUUID
	copy(u.UUID[:], sum[:16])
	u.UUID[6] = u.UUID[6]&0x0f | 0x50 // version 5, name-based
	u.UUID[8] = u.UUID[8]&0x3f | 0x80 // RFC 4122 variant
	return &u
}

// ServerDUID returns the server identifier the server sends.
func (s *Server) ServerDUID() dhcpv6.DUID { return s.duid }

func hi(a netip.Addr) uint64 {
	b := a.As16()
	var v uint64
	for _, x := range b[:8] {
		v = v<<8 | uint64(x)
	}
	return v
}

func lo(a netip.Addr) uint64 {
	b := a.As16()
	var v uint64
	for _, x := range b[8:] {
		v = v<<8 | uint64(x)
	}
	return v
}

// withLo returns a with its lower 64 bits set to v.
func withLo(a netip.Addr, v uint64) netip.Addr {
	b := a.As16()
	for i := 15; i >= 8; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return netip.AddrFrom16(b)
}

func inPool(p Pool, a netip.Addr) bool {
	return a.Is6() && !a.Is4In6() && a.Zone() == "" && !a.Less(p.Start) && !p.End.Less(a)
}
