// Package dhcp is kiln's DHCPv4 server: it leases addresses from the pools of
// one or more subnets (the interface's own and those behind relay agents),
// honours static reservations, and tells PXE, UEFI HTTP Boot and iPXE clients
// what to boot. In proxyDHCP mode it hands out no addresses and only answers
// the boot part, next to another DHCP server.
//
// Handle holds the protocol decisions (RFC 2131, RFC 3046, RFC 4578) and is
// pure apart from the lease store; Serve moves packets between a socket and
// Handle; ListenInterface and ListenInterfacePort open the sockets. Leases are
// durable before any reply that depends on them is returned, so a restarted
// server offers every client its old address and never one address to two
// clients.
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

// BUG(kiln): Expired lease records stay in the store until their address is
// given to another client; records outside a changed pool stay until their
// client comes back.

// BUG(kiln): A reply to a client that has no address yet and did not set the
// broadcast flag is broadcast rather than unicast to yiaddr (RFC 2131 section
// 4.1 allows this when unicast is not possible): unicasting needs an ARP
// entry or a raw socket.

// BUG(kiln): One MAC holds at most one lease across all subnets: a client that
// shows up on another subnet gives up its old address.

// BUG(kiln): Packets are handled concurrently, also two from one client: a
// RELEASE overtaken by the same client's next DISCOVER and REQUEST (sent
// within milliseconds) can free the address just acked. Real clients release
// at shutdown, seconds before they boot again; the crash-loop test waits
// 200-500 ms after a RELEASE for this reason.

// Defaults for the zero fields of Config, Subnet and Boot.
const (
	DefaultLeaseTime = time.Hour
	DefaultOfferTime = 60 * time.Second
	DefaultBIOSFile  = "undionly.kpxe"
	DefaultUEFIFile  = "snponly.efi"
	// DefaultARM64File is the TFTP file for ARM64 UEFI PXE clients (arch 11).
	DefaultARM64File = "snponly-arm64.efi"
)

// PXEPort is the port of the PXE boot server (proxyDHCP, PXE 2.1 section
// 2.2.5): a socket from ListenInterfacePort(iface, PXEPort) makes Serve answer
// boot server requests there.
const PXEPort = 4011

// declineHold is how long an address declined by a client (RFC 2131 section
// 4.3.3) stays out of the pool.
const declineHold = 10 * time.Minute

// defaultMaxInFlight bounds the packets Serve handles at once. Most of them
// wait for a group commit, so more in flight means larger batches.
const defaultMaxInFlight = 256

// Config configures one DHCPv4 server on one interface. Zero fields take the
// documented defaults; New rejects a Config that misses a required field.
type Config struct {
	// Interface is the name of the interface to serve (required). kiln never
	// serves an interface it was not told to use.
	Interface string
	// ServerIP is our IPv4 address on Interface (required). It is the server
	// identifier, siaddr and TFTP server of every reply.
	ServerIP net.IP
	// Subnets are the subnets served (at least one unless Proxy). The subnet
	// containing ServerIP serves the clients on Interface; the others are
	// reached only through relay agents (giaddr, RFC 3046 link selection)
	// or by clients renewing from them (ciaddr).
	Subnets []Subnet
	// Reservations bind MACs to fixed addresses. A reserved address lies in
	// one of Subnets, inside or outside its pools, and is never given to
	// another MAC.
	Reservations []Reservation
	// Proxy makes the server a proxyDHCP server (PXE 2.1): it hands out no
	// address and writes no lease, and answers only PXE, HTTP Boot and iPXE
	// clients with boot information, on port 67 (DISCOVER) and on PXEPort
	// (the boot server request). Serve is called once per socket.
	Proxy bool
	// Boot says what PXE and iPXE clients boot.
	Boot Boot
	// Leases persists the leases, in bucket "dhcp-leases" (required unless
	// Proxy).
	Leases store.Store
	// Observer, if set, is called synchronously on every offer and ack of a
	// lease, after the lease is durable and before the reply is sent. It
	// MUST return quickly; it runs without the Server's lock held. A proxy
	// hands out no lease and reports no events.
	Observer func(Event)
	// OnDecision, if set, is called once for every packet, including
	// malformed and ignored ones, after the decision; for metrics. It MUST
	// return quickly and be safe for concurrent use.
	OnDecision func(Decision)
	// Log receives one Info line per decision; nil discards.
	Log *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Subnet is one IPv4 subnet with its pools and the configuration its clients
// get.
type Subnet struct {
	// Prefix is the subnet, e.g. 10.78.0.0/24 (required); its mask is
	// option 1.
	Prefix netip.Prefix
	// Pools are the inclusive ranges addresses are leased from. They lie in
	// Prefix, exclude its network and broadcast addresses and ServerIP, and
	// do not overlap. A subnet without pools serves only reservations.
	Pools []Pool
	// Router, if valid, is sent as option 3.
	Router netip.Addr
	// DNS, if set, is sent as option 6.
	DNS []netip.Addr
	// Domain, if set, is sent as option 15.
	Domain string
	// LeaseTime is the lifetime of a bound lease; zero means
	// DefaultLeaseTime. T1 (option 58) is half of it, T2 (option 59) 7/8.
	LeaseTime time.Duration
	// OfferTime is how long an offered but not yet requested address stays
	// reserved; zero means DefaultOfferTime.
	OfferTime time.Duration
}

// Pool is an inclusive range of addresses.
type Pool struct{ Start, End netip.Addr }

// String returns "start-end".
func (p Pool) String() string { return p.Start.String() + "-" + p.End.String() }

// Size is the number of addresses in p.
func (p Pool) Size() int {
	if !p.Start.Is4() || !p.End.Is4() || p.End.Less(p.Start) {
		return 0
	}
	return int(u32(p.End)-u32(p.Start)) + 1
}

// Contains reports whether a lies in p.
func (p Pool) Contains(a netip.Addr) bool {
	return a.Is4() && !a.Less(p.Start) && !p.End.Less(a)
}

// Reservation binds a MAC to a fixed address and, optionally, a host name
// (option 12).
type Reservation struct {
	MAC      net.HardwareAddr
	IP       netip.Addr
	Hostname string
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
	// ARM64File is the TFTP file for arch 11 (UEFI ARM64); "" means
	// DefaultARM64File.
	ARM64File string
	// HTTPBootURL returns the URL a UEFI HTTP Boot client (option 60
	// "HTTPClient", arch 16 x64 or 19 ARM64) loads, e.g.
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

// Decision describes what the server did with one packet, for
// Config.OnDecision.
type Decision struct {
	// MsgType is the request's message type ("DISCOVER", "REQUEST", …), or
	// "" when the packet did not parse.
	MsgType string
	// Outcome is one of "offered", "acked", "nak", "released", "declined",
	// "informed", "ignored", "malformed" or "error".
	Outcome string
	// Reason says why, for "ignored", "nak", "malformed" and "error".
	Reason string
	// MAC, XID and Arch identify the client as in Event; Subnet is the
	// selected subnet (e.g. "10.77.0.0/24") or "".
	MAC, XID, Arch, Subnet string
	// Relayed is true for a request with giaddr set; Proxy for a server in
	// proxyDHCP mode or a request to PXEPort.
	Relayed, Proxy bool
	// Duration is the time from the packet's arrival (or Handle's call) to
	// the decision, including the wait for the lease store.
	Duration time.Duration
}

// PoolUsage is the occupancy of one pool, from Server.Usage.
type PoolUsage struct {
	// Subnet is the subnet prefix, Pool the range "start-end".
	Subnet, Pool string
	// Size is the number of addresses; InUse those offered or bound and
	// not expired.
	Size, InUse int
}

// Lease states. StateReserved is never stored: LeaseFor reports it for a
// reserved address without a current lease.
const (
	StateOffered  = "offered"
	StateBound    = "bound"
	StateDeclined = "declined"
	StateReserved = "reserved"
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
	// Hostname is the reservation's host name, if any. It comes from the
	// configuration and is never stored.
	Hostname string `json:"hostname,omitempty"`
}

// subnet is a Subnet with its defaults applied.
type subnet struct {
	Subnet
	name  string     // Prefix.String()
	hints []poolHint // one per pool; guarded by Server.mu
}

// Server is a DHCPv4 server for one interface. Its methods are safe for
// concurrent use.
type Server struct {
	cfg         Config // read-only after New
	server      netip.Addr
	subnets     []*subnet
	local       *subnet // the subnet containing server, or nil
	resByMAC    map[string]Reservation
	resByIP     map[netip.Addr]Reservation
	log         *slog.Logger
	now         func() time.Time
	maxInFlight int
	commits     committer

	// mu guards byMAC and byAddr, and orders each store write (enqueued
	// under it) the way the tables changed.
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
	s.byAddr = make(map[netip.Addr]*record)
	s.byMAC = make(map[string]*record)
	if cfg.Proxy {
		return s, nil
	}
	s.commits = newCommitter(cfg.Leases)
	if err := s.load(); err != nil {
		s.commits.close()
		return nil, err
	}
	return s, nil
}

// Close stops the lease writer. The Server must not be used afterwards; the
// store stays open.
func (s *Server) Close() error {
	if s.commits == nil {
		return nil
	}
	return s.commits.close()
}

func (s *Server) configure(cfg Config) error {
	if cfg.Interface == "" {
		return errors.New("dhcp config: Interface is required")
	}
	if cfg.Leases == nil && !cfg.Proxy {
		return errors.New("dhcp config: Leases is required")
	}
	if cfg.Boot.ScriptURL == nil {
		return errors.New("dhcp config: Boot.ScriptURL is required")
	}
	var err error
	if s.server, err = addrField("ServerIP", cfg.ServerIP); err != nil {
		return err
	}
	if len(cfg.Subnets) == 0 && !cfg.Proxy {
		return errors.New("dhcp config: Subnets is required (at least one subnet)")
	}
	cfg.Subnets = append([]Subnet(nil), cfg.Subnets...)
	for i := range cfg.Subnets {
		sn := &cfg.Subnets[i]
		sn.Pools = append([]Pool(nil), sn.Pools...)
		sn.DNS = append([]netip.Addr(nil), sn.DNS...)
		if err := durationField(fmt.Sprintf("Subnets[%d].LeaseTime", i), &sn.LeaseTime, DefaultLeaseTime); err != nil {
			return err
		}
		if err := durationField(fmt.Sprintf("Subnets[%d].OfferTime", i), &sn.OfferTime, DefaultOfferTime); err != nil {
			return err
		}
	}
	if err := validate(cfg.Subnets, cfg.Reservations, goPath); err != nil {
		return fmt.Errorf("dhcp config: %w", err)
	}
	s.resByMAC = make(map[string]Reservation)
	s.resByIP = make(map[netip.Addr]Reservation)
	for _, r := range cfg.Reservations {
		r.MAC = append(net.HardwareAddr(nil), r.MAC...)
		s.resByMAC[r.MAC.String()] = r
		s.resByIP[r.IP] = r
	}
	for i := range cfg.Subnets {
		sn := &subnet{Subnet: cfg.Subnets[i], name: cfg.Subnets[i].Prefix.String(),
			hints: make([]poolHint, len(cfg.Subnets[i].Pools))}
		s.subnets = append(s.subnets, sn)
		for j, p := range sn.Pools {
			if p.Contains(s.server) {
				return fmt.Errorf("dhcp config: ServerIP %s is inside Subnets[%d].Pools[%d] %s", s.server, i, j, p)
			}
		}
		if sn.Prefix.Contains(s.server) {
			s.local = sn
		}
	}
	if r, ok := s.resByIP[s.server]; ok {
		return fmt.Errorf("dhcp config: ServerIP %s is reserved for %s", s.server, r.MAC)
	}
	if cfg.Boot.BIOSFile == "" {
		cfg.Boot.BIOSFile = DefaultBIOSFile
	}
	if cfg.Boot.UEFIFile == "" {
		cfg.Boot.UEFIFile = DefaultUEFIFile
	}
	if cfg.Boot.ARM64File == "" {
		cfg.Boot.ARM64File = DefaultARM64File
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

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := range 4 {
		b[i] |= byte(host >> (24 - 8*i))
	}
	return netip.AddrFrom4(b)
}

// inPools reports whether a lies in one of sn's pools.
func (sn *subnet) inPools(a netip.Addr) bool {
	for _, p := range sn.Pools {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// subnetOf returns the subnet containing a, or nil.
func (s *Server) subnetOf(a netip.Addr) *subnet {
	for _, sn := range s.subnets {
		if sn.Prefix.Contains(a) {
			return sn
		}
	}
	return nil
}
