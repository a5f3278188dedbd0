package dhcp6

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/kiln-dev/kiln/store"
)

var (
	testServer = netip.MustParseAddr("fd77::1")
	testPrefix = netip.MustParsePrefix("fd77::/64")
	testPool   = Pool{Start: netip.MustParseAddr("fd77::1000"), End: netip.MustParseAddr("fd77::100f")} // 16
	testEpoch  = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	testDUID   = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1}}
)

const (
	macA = "52:54:00:00:00:0a"
	macB = "52:54:00:00:00:0b"
)

// clock is a settable Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func scriptURL(mac net.HardwareAddr) string {
	return "http://[fd77::1]:8080/boot/" + mac.String() + ".ipxe"
}

func httpBootURL(mac net.HardwareAddr) string {
	return "http://[fd77::1]:8080/httpboot/" + mac.String() + ".efi"
}

// env is a server on a fresh bbolt store with a settable clock.
type env struct {
	t      testing.TB
	s      *Server
	clk    *clock
	path   string
	st     store.Store
	mu     sync.Mutex
	events []Event
	decs   []Decision
}

func newEnv(t testing.TB, mutate ...func(*Config)) *env {
	t.Helper()
	e := &env{t: t, clk: &clock{t: testEpoch}, path: filepath.Join(t.TempDir(), "kiln.db")}
	e.open()
	e.s = e.newServer(mutate...)
	return e
}

func (e *env) open() {
	st, err := store.OpenBolt(e.path)
	if err != nil {
		e.t.Fatal(err)
	}
	e.st = st
	e.t.Cleanup(func() { st.Close() })
}

func (e *env) config() Config {
	return Config{
		Interface:  "kiln0",
		ServerIP:   testServer,
		Prefix:     testPrefix,
		Pool:       testPool,
		ServerDUID: testDUID,
		Boot:       Boot{ScriptURL: scriptURL, HTTPBootURL: httpBootURL},
		Leases:     e.st,
		Log:        testLogger(e.t),
		Now:        e.clk.Now,
		Observer: func(ev Event) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.events = append(e.events, ev)
		},
		OnDecision: func(d Decision) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.decs = append(e.decs, d)
		},
	}
}

func (e *env) newServer(mutate ...func(*Config)) *Server {
	e.t.Helper()
	cfg := e.config()
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		e.t.Fatalf("New: %v", err)
	}
	return s
}

// restart closes and reopens the store and makes a new server on it.
func (e *env) restart() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.open()
	e.s = e.newServer()
}

// handle runs msg from the link-local EUI-64 address of mac through the
// server, passing it through its wire form, and fails the test on error.
func (e *env) handle(mac string, msg *dhcpv6.Message) *dhcpv6.Message {
	e.t.Helper()
	req, err := dhcpv6.FromBytes(msg.ToBytes())
	if err != nil {
		e.t.Fatalf("FromBytes: %v", err)
	}
	resp, err := e.s.Handle(req, linkLocal(e.t, mac))
	if err != nil {
		e.t.Fatalf("Handle(%s) error: %v", msg.MessageType, err)
	}
	if resp != nil {
		again, err := dhcpv6.FromBytes(resp.ToBytes())
		if err != nil {
			e.t.Fatalf("reply does not parse back: %v", err)
		}
		resp = again.(*dhcpv6.Message)
	}
	return resp
}

// linkLocal is the EUI-64 link-local address of mac.
func linkLocal(t testing.TB, mac string) netip.Addr {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrFrom16([16]byte{0xfe, 0x80, 8: hw[0] ^ 2, hw[1], hw[2], 0xff, 0xfe, hw[3], hw[4], hw[5]})
}

// clientDUID is a DUID-UUID (as EDK2 sends) unique to mac.
func clientDUID(t testing.TB, mac string) dhcpv6.DUID {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	var u dhcpv6.DUIDUUID
	copy(u.UUID[10:], hw)
	return &u
}

// msg builds a client message from mac with IAID 1 in its IA_NA (if ia).
func msg(t testing.TB, mt dhcpv6.MessageType, mac string, mods ...dhcpv6.Modifier) *dhcpv6.Message {
	t.Helper()
	hw, _ := net.ParseMAC(mac)
	m := &dhcpv6.Message{MessageType: mt, TransactionID: dhcpv6.TransactionID{0xc0, byte(mt), hw[5]}}
	m.AddOption(dhcpv6.OptClientID(clientDUID(t, mac)))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	for _, mod := range mods {
		mod(m)
	}
	return m
}

func withIA(addrs ...string) dhcpv6.Modifier {
	return func(d dhcpv6.DHCPv6) {
		ia := &dhcpv6.OptIANA{IaId: [4]byte{0, 0, 0, 1}}
		for _, a := range addrs {
			ia.Options.Add(&dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP(a)})
		}
		d.(*dhcpv6.Message).AddOption(ia)
	}
}

func withServer(d dhcpv6.DUID) dhcpv6.Modifier { return dhcpv6.WithServerID(d) }

func withRapid(d dhcpv6.DHCPv6) {
	d.(*dhcpv6.Message).AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionRapidCommit})
}

// Client flavours, as real firmware sends them.
var (
	httpClient = []dhcpv6.Modifier{
		dhcpv6.WithArchType(iana.EFI_X86_64_HTTP),
		dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("HTTPClient:Arch:00016:UNDI:003001")}}),
		dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL, dhcpv6.OptionBootfileParam, dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionVendorClass),
	}
	pxeUEFI = []dhcpv6.Modifier{
		dhcpv6.WithArchType(iana.EFI_X86_64),
		dhcpv6.WithOption(&dhcpv6.OptVendorClass{EnterpriseNumber: 343, Data: [][]byte{[]byte("PXEClient:Arch:00007:UNDI:003016")}}),
		dhcpv6.WithRequestedOptions(dhcpv6.OptionBootfileURL, dhcpv6.OptionBootfileParam),
	}
	ipxe = []dhcpv6.Modifier{
		dhcpv6.WithArchType(iana.EFI_X86_64),
		dhcpv6.WithUserClass([]byte("iPXE")),
	}
)

// summary is the part of a reply the tests compare.
type summary struct {
	Type        string
	Status      string // top-level status code
	IAs         []iaSummary
	BootURL     string
	VendorClass string
	Preference  int
	RapidCommit bool
	ServerID    bool
	ClientID    bool
}

type iaSummary struct {
	IAID   uint32
	T1, T2 time.Duration
	Addrs  []string // "addr pref/valid"
	Status string
}

func summarize(m *dhcpv6.Message) *summary {
	if m == nil {
		return nil
	}
	s := &summary{Type: m.MessageType.String(), BootURL: m.Options.BootFileURL(),
		RapidCommit: m.GetOneOption(dhcpv6.OptionRapidCommit) != nil,
		ServerID:    m.Options.ServerID() != nil, ClientID: m.Options.ClientID() != nil}
	if st := m.Options.Status(); st != nil {
		s.Status = st.StatusCode.String()
	}
	if p := m.GetOneOption(dhcpv6.OptionPreference); p != nil {
		s.Preference = int(m.Options.Preference())
	}
	for _, vc := range m.Options.VendorClasses() {
		for _, d := range vc.Data {
			s.VendorClass = string(d)
		}
	}
	for _, ia := range m.Options.IANA() {
		is := iaSummary{IAID: uint32(ia.IaId[0])<<24 | uint32(ia.IaId[1])<<16 | uint32(ia.IaId[2])<<8 | uint32(ia.IaId[3]),
			T1: ia.T1, T2: ia.T2}
		for _, a := range ia.Options.Addresses() {
			is.Addrs = append(is.Addrs, a.IPv6Addr.String()+" "+a.PreferredLifetime.String()+"/"+a.ValidLifetime.String())
		}
		if st := ia.Options.Status(); st != nil {
			is.Status = st.StatusCode.String()
		}
		s.IAs = append(s.IAs, is)
	}
	return s
}

// firstAddr returns the first IA address of m.
func firstAddr(t testing.TB, m *dhcpv6.Message) string {
	t.Helper()
	if m == nil {
		t.Fatal("no reply")
	}
	ia := m.Options.OneIANA()
	if ia == nil || ia.Options.OneAddress() == nil {
		t.Fatalf("reply has no IA address: %s", m.Summary())
	}
	return ia.Options.OneAddress().IPv6Addr.String()
}
