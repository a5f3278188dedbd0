package dhcp

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/kiln-dev/kiln/store"
)

var (
	testServerIP = net.IPv4(10, 77, 0, 1).To4()
	testPrefix   = netip.MustParsePrefix("10.77.0.0/24")
	testPool     = Pool{netip.MustParseAddr("10.77.0.100"), netip.MustParseAddr("10.77.0.109")} // ten addresses
	testEpoch    = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
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
	return "http://10.77.0.1:8080/boot/" + mac.String() + ".ipxe"
}

func testConfig(t testing.TB, st store.Store, clk *clock) Config {
	return Config{
		Interface: "kiln0",
		ServerIP:  testServerIP,
		Subnets: []Subnet{{
			Prefix: testPrefix,
			Pools:  []Pool{testPool},
			Router: netip.MustParseAddr("10.77.0.1"),
			DNS:    []netip.Addr{netip.MustParseAddr("10.77.0.53")},
		}},
		Boot:   Boot{ScriptURL: scriptURL, HTTPBootURL: httpBootURL},
		Leases: st,
		Log:    testLogger(t),
		Now:    clk.Now,
	}
}

// openStore opens a bbolt store at path, closed at the end of the test
// unless closed before.
func openStore(t testing.TB, path string) store.Store {
	t.Helper()
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { st.Close() }) })
	return closeOnce{Store: st, once: &once}
}

type closeOnce struct {
	store.Store
	once *sync.Once
}

func (c closeOnce) Close() error {
	var err error
	c.once.Do(func() { err = c.Store.Close() })
	return err
}

// testEnv is a server on a fresh bbolt store with a settable clock.
type testEnv struct {
	t      *testing.T
	s      *Server
	clk    *clock
	path   string
	st     store.Store
	mu     sync.Mutex
	events []Event
}

// httpBootURL is the HTTP Boot URL the test servers hand out.
func httpBootURL(mac net.HardwareAddr) string {
	return "http://10.77.0.1:8080/httpboot/" + mac.String() + ".efi"
}

func newEnv(t *testing.T, mutate ...func(*Config)) *testEnv {
	t.Helper()
	e := &testEnv{t: t, clk: &clock{t: testEpoch}, path: filepath.Join(t.TempDir(), "kiln.db")}
	e.st = openStore(t, e.path)
	e.s = e.newServer(mutate...)
	return e
}

func (e *testEnv) newServer(mutate ...func(*Config)) *Server {
	e.t.Helper()
	cfg := testConfig(e.t, e.st, e.clk)
	cfg.Observer = func(ev Event) {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.events = append(e.events, ev)
	}
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
func (e *testEnv) restart() {
	e.t.Helper()
	if err := e.st.Close(); err != nil {
		e.t.Fatal(err)
	}
	e.st = openStore(e.t, e.path)
	e.s = e.newServer()
}

// handle runs req through the server and fails the test on error.
func (e *testEnv) handle(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	e.t.Helper()
	resp, err := e.s.Handle(req)
	if err != nil {
		e.t.Fatalf("Handle(%s) error: %v", req.MessageType(), err)
	}
	return resp
}

// dora completes DISCOVER, OFFER, REQUEST, ACK for mac and returns the ACK.
func (e *testEnv) dora(mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	e.t.Helper()
	offer := e.handle(packet(e.t, dhcpv4.MessageTypeDiscover, mac, mods...))
	if offer == nil {
		e.t.Fatalf("DISCOVER from %s: no offer", mac)
	}
	ack := e.handle(packet(e.t, dhcpv4.MessageTypeRequest, mac, append(mods,
		withRequested(offer.YourIPAddr), withServerID(offer.ServerIdentifier()))...))
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		e.t.Fatalf("REQUEST from %s: got %v, want ACK", mac, ack)
	}
	return ack
}

// packet builds a client message and passes it through its wire form.
func packet(t testing.TB, mt dhcpv4.MessageType, mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	p := rawPacket(t, mt, mac, mods...)
	q, err := dhcpv4.FromBytes(p.ToBytes())
	if err != nil {
		t.Fatalf("FromBytes: %v", err)
	}
	return q
}

func rawPacket(t testing.TB, mt dhcpv4.MessageType, mac string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	base := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(hw),
		dhcpv4.WithMessageType(mt),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{0xc0, 0xff, 0xee, hw[5]}),
	}
	p, err := dhcpv4.New(append(base, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func ip(s string) net.IP { return net.ParseIP(s).To4() }

func withRequested(a net.IP) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(a))
}

func withServerID(a net.IP) dhcpv4.Modifier {
	return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(a))
}

// PXE client flavours, as real firmware sends them.
var (
	pxeBIOS = []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
	}
	pxeUEFI = []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003016")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
	}
	pxeIPXE = []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithUserClass("iPXE", false),
	}
)

// summary is the part of a reply the tests compare.
type summary struct {
	Type       string
	YIAddr     string
	CIAddr     string
	SIAddr     string
	File       string
	ServerID   string
	Mask       string
	Router     string
	DNS        string
	LeaseTime  time.Duration
	TFTPServer string // option 66
	BootFile   string // option 67
	Class      string // option 60
	Etherboot  []byte // option 175
}

func summarize(p *dhcpv4.DHCPv4) *summary {
	if p == nil {
		return nil
	}
	s := &summary{
		Type:       p.MessageType().String(),
		YIAddr:     p.YourIPAddr.String(),
		CIAddr:     p.ClientIPAddr.String(),
		SIAddr:     p.ServerIPAddr.String(),
		File:       p.BootFileName,
		TFTPServer: p.TFTPServerName(),
		BootFile:   p.BootFileNameOption(),
		Class:      p.ClassIdentifier(),
		Etherboot:  p.Options.Get(dhcpv4.OptionEtherboot),
		LeaseTime:  p.IPAddressLeaseTime(0),
	}
	if v := p.ServerIdentifier(); v != nil {
		s.ServerID = v.String()
	}
	if v := p.SubnetMask(); v != nil {
		s.Mask = net.IP(v).String()
	}
	if v := p.Router(); v != nil {
		s.Router = v[0].String()
	}
	if v := p.DNS(); v != nil {
		s.DNS = v[0].String()
	}
	return s
}

// plainOffer is the summary of an offer or ack of addr to a non-PXE client.
func plainReply(mt, addr string) *summary {
	return &summary{
		Type: mt, YIAddr: addr, CIAddr: "0.0.0.0", SIAddr: "0.0.0.0",
		ServerID: "10.77.0.1", Mask: "255.255.255.0", Router: "10.77.0.1", DNS: "10.77.0.53",
		LeaseTime: time.Hour,
	}
}
