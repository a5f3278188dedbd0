package dhcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/kiln-dev/kiln/store"
)

func TestNewRejects(t *testing.T) {
	a := netip.MustParseAddr
	sub := func(c *Config) *Subnet { return &c.Subnets[0] }
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no interface", func(c *Config) { c.Interface = "" }, "Interface is required"},
		{"no store", func(c *Config) { c.Leases = nil }, "Leases is required"},
		{"no script", func(c *Config) { c.Boot.ScriptURL = nil }, "Boot.ScriptURL is required"},
		{"no server ip", func(c *Config) { c.ServerIP = nil }, "ServerIP is required"},
		{"ipv6 server", func(c *Config) { c.ServerIP = net.ParseIP("fd00::1") }, "ServerIP fd00::1 is not an IPv4 address"},
		{"no subnets", func(c *Config) { c.Subnets = nil }, "Subnets is required"},
		{"ipv6 subnet", func(c *Config) { sub(c).Prefix = netip.MustParsePrefix("fd00::/64") }, "Subnets[0].Prefix fd00::/64: not an IPv4 subnet"},
		{"host bits", func(c *Config) { sub(c).Prefix = netip.MustParsePrefix("10.77.0.1/24") }, "Subnets[0].Prefix 10.77.0.1/24: host bits set"},
		{"overlapping subnets", func(c *Config) {
			c.Subnets = append(c.Subnets, Subnet{Prefix: netip.MustParsePrefix("10.77.0.128/25")})
		}, "Subnets[1].Prefix 10.77.0.128/25: overlaps subnets[0] 10.77.0.0/24"},
		{"pool outside subnet", func(c *Config) { sub(c).Pools[0].Start = a("10.78.0.100") }, "Subnets[0].Pools[0] 10.78.0.100-10.77.0.109: outside subnet"},
		{"pool has broadcast", func(c *Config) { sub(c).Pools[0].End = a("10.77.0.255") }, "contains the network or broadcast address"},
		{"pool has network", func(c *Config) { sub(c).Pools[0].Start = a("10.77.0.0") }, "contains the network or broadcast address"},
		{"end before start", func(c *Config) { sub(c).Pools[0].End = a("10.77.0.99") }, "Subnets[0].Pools[0] 10.77.0.100-10.77.0.99: end is before start"},
		{"overlapping pools", func(c *Config) {
			sub(c).Pools = append(sub(c).Pools, Pool{a("10.77.0.105"), a("10.77.0.120")})
		}, "Subnets[0].Pools[1] 10.77.0.105-10.77.0.120: overlaps pools[0]"},
		{"server in pool", func(c *Config) { c.ServerIP = ip("10.77.0.105") }, "ServerIP 10.77.0.105 is inside Subnets[0].Pools[0] 10.77.0.100-10.77.0.109"},
		{"zero pool start", func(c *Config) { sub(c).Pools[0].Start = netip.Addr{} }, "not an IPv4 range"},
		{"bad router", func(c *Config) { sub(c).Router = a("fd00::1") }, "Subnets[0].Router fd00::1: not an IPv4 address"},
		{"bad dns", func(c *Config) { sub(c).DNS = []netip.Addr{a("fd00::53")} }, "Subnets[0].DNS[0] fd00::53: not an IPv4 address"},
		{"bad domain", func(c *Config) { sub(c).Domain = "a b" }, `Subnets[0].Domain "a b": not a DNS name`},
		{"negative lease", func(c *Config) { sub(c).LeaseTime = -time.Hour }, "Subnets[0].LeaseTime -1h0m0s is out of range"},
		{"tiny offer", func(c *Config) { sub(c).OfferTime = time.Millisecond }, "Subnets[0].OfferTime 1ms is out of range"},
		{"reservation outside subnets", func(c *Config) {
			c.Reservations = []Reservation{{MAC: hw(macA), IP: a("10.78.0.5")}}
		}, "Reservations[0].IP 10.78.0.5: outside all subnets"},
		{"duplicate reservation mac", func(c *Config) {
			c.Reservations = []Reservation{{MAC: hw(macA), IP: a("10.77.0.5")}, {MAC: hw(macA), IP: a("10.77.0.6")}}
		}, "Reservations[1].MAC 52:54:00:00:00:0a: also reserved by reservations[0]"},
		{"duplicate reservation ip", func(c *Config) {
			c.Reservations = []Reservation{{MAC: hw(macA), IP: a("10.77.0.5")}, {MAC: hw(macB), IP: a("10.77.0.5")}}
		}, "Reservations[1].IP 10.77.0.5: also reserved by reservations[0]"},
		{"short reservation mac", func(c *Config) {
			c.Reservations = []Reservation{{MAC: net.HardwareAddr{1, 2}, IP: a("10.77.0.5")}}
		}, "Reservations[0].MAC \"01:02\": not a 6-byte MAC"},
		{"reserved server ip", func(c *Config) {
			c.Reservations = []Reservation{{MAC: hw(macA), IP: a("10.77.0.1")}}
		}, "ServerIP 10.77.0.1 is reserved for 52:54:00:00:00:0a"},
		{"reservation bad hostname", func(c *Config) {
			c.Reservations = []Reservation{{MAC: hw(macA), IP: a("10.77.0.5"), Hostname: "no/slash"}}
		}, `Reservations[0].Hostname "no/slash": not a DNS name`},
	}
	st := openStore(t, filepath.Join(t.TempDir(), "kiln.db"))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, st, &clock{t: testEpoch})
			tt.mutate(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	st := openStore(t, filepath.Join(t.TempDir(), "kiln.db"))
	cfg := testConfig(t, st, &clock{t: testEpoch})
	cfg.Log, cfg.Now = nil, nil
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{s.subnets[0].LeaseTime, s.subnets[0].OfferTime, s.cfg.Boot.BIOSFile, s.cfg.Boot.UEFIFile,
		s.cfg.Boot.ARM64File, s.cfg.Log != nil, s.now != nil, s.local == s.subnets[0]}
	want := []any{time.Hour, time.Minute, "undionly.kpxe", "snponly.efi", "snponly-arm64.efi", true, true, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
}

func TestNewProxyNeedsNoSubnetsOrStore(t *testing.T) {
	cfg := testConfig(t, nil, &clock{t: testEpoch})
	cfg.Proxy, cfg.Subnets, cfg.Leases = true, nil, nil
	if _, err := New(cfg); err != nil {
		t.Fatalf("New(proxy without subnets and store) = %v", err)
	}
}

func TestLoadSkipsBadRecords(t *testing.T) {
	e := newEnv(t)
	good := Lease{MAC: macA, IP: "10.77.0.103", Expires: testEpoch.Add(time.Hour), State: StateBound}
	older := Lease{MAC: macA, IP: "10.77.0.104", Expires: testEpoch, State: StateOffered}
	records := map[string]any{
		"10.77.0.103": good,
		"10.77.0.104": older,
		"10.77.0.105": "not a lease",
		"10.77.0.106": Lease{MAC: macB, IP: "10.77.0.107", State: StateBound},
		"10.77.0.108": Lease{MAC: "nope", IP: "10.77.0.108", State: StateBound},
		"10.77.0.109": Lease{MAC: macB, IP: "10.77.0.109", State: "weird"},
	}
	err := e.st.Update(func(tx store.Tx) error {
		for k, v := range records {
			b, _ := json.Marshal(v)
			if err := tx.Put(leaseBucket, k, b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e.restart()
	if diff := cmp.Diff([]Lease{good}, e.s.Leases()); diff != "" {
		t.Errorf("Leases() (-want +got):\n%s", diff)
	}
}

// failStore fails every Update.
type failStore struct{ store.Store }

var errDiskFull = errors.New("disk full")

func (failStore) Update(func(store.Tx) error) error { return errDiskFull }

func TestStoreFailureSendsNothing(t *testing.T) {
	e := newEnv(t)
	e.dora(macA)
	before := e.s.Leases()
	e.s.commits.close()
	e.s.commits = newCommitter(failStore{e.st})
	for _, req := range []*dhcpv4.DHCPv4{
		packet(t, dhcpv4.MessageTypeRequest, macA, withRequested(ip("10.77.0.100"))),
		packet(t, dhcpv4.MessageTypeRelease, macA, dhcpv4.WithClientIP(ip("10.77.0.100"))),
	} {
		resp, err := e.s.Handle(req)
		if !errors.Is(err, errDiskFull) || resp != nil {
			t.Errorf("Handle(%s) = %v, %v; want no reply and %v", req.MessageType(), summarize(resp), err, errDiskFull)
		}
	}
	if diff := cmp.Diff(before, e.s.Leases()); diff != "" {
		t.Errorf("Leases() changed though the store failed (-before +after):\n%s", diff)
	}
	// Offers are not written (see apply): a DISCOVER is answered even now.
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macB)); got.MessageType() != dhcpv4.MessageTypeOffer {
		t.Errorf("DISCOVER while the store fails: %v, want an OFFER", summarize(got))
	}
	// The disk is back: the reloaded tables serve on.
	e.s.commits.close()
	e.s.commits = newCommitter(e.st)
	if got := e.handle(packet(t, dhcpv4.MessageTypeDiscover, macB)).YourIPAddr.String(); got != "10.77.0.101" {
		t.Errorf("DISCOVER after the store recovered offered %s, want 10.77.0.101", got)
	}
	if ack := e.handle(packet(t, dhcpv4.MessageTypeRequest, macA, dhcpv4.WithClientIP(ip("10.77.0.100")))); ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("A renewing after the store recovered: %v, want ACK", summarize(ack))
	}
}

func TestLogOneLinePerDecision(t *testing.T) {
	var buf bytes.Buffer
	e := newEnv(t, func(c *Config) { c.Log = slog.New(slog.NewJSONHandler(&buf, nil)) })
	buf.Reset()
	e.handle(packet(t, dhcpv4.MessageTypeDiscover, macA, pxeUEFI...))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d log lines, want 1:\n%s", len(lines), buf.String())
	}
	var got map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &got); err != nil {
		t.Fatal(err)
	}
	delete(got, "time")
	want := map[string]any{
		"level": "INFO", "msg": "offered", "iface": "kiln0", "mac": macA, "xid": "0xc0ffee0a",
		"arch": "EFI x86-64", "msgtype": "DISCOVER", "ip": "10.77.0.100", "bootfile": "snponly.efi",
		"subnet": "10.77.0.0/24",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
}

// hw parses a MAC for test tables.
func hw(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// gateStore holds every Update until gate is closed, and says on entered
// when one is waiting.
type gateStore struct {
	store.Store
	entered chan struct{}
	gate    chan struct{}
}

func (g gateStore) Update(fn func(store.Tx) error) error {
	select {
	case g.entered <- struct{}{}:
	default:
	}
	<-g.gate
	return g.Store.Update(fn)
}

// TestCommitOutsideLock: while one request waits for the disk, others are
// decided (the server's lock is free), and no reply leaves before its
// lease is durable.
func TestCommitOutsideLock(t *testing.T) {
	e := newEnv(t)
	gate, entered := make(chan struct{}), make(chan struct{}, 1)
	var open sync.Once
	release := func() { open.Do(func() { close(gate) }) }
	t.Cleanup(release) // a failed test must not leave requests hanging
	e.s.commits.close()
	e.s.commits = newCommitter(gateStore{e.st, entered, gate})
	replies := make(chan *dhcpv4.DHCPv4, 3)
	// Offers are not written (see apply), so each client's REQUEST is the
	// write that waits.
	macs := []string{macA, macB, "52:54:00:00:00:0c"}
	offers := map[string]*dhcpv4.DHCPv4{}
	for _, mac := range macs {
		offers[mac] = e.handle(packet(t, dhcpv4.MessageTypeDiscover, mac))
	}
	select {
	case <-entered:
		t.Fatal("an offer was written to the store")
	default:
	}
	request := func(mac string) {
		o := offers[mac]
		resp, err := e.s.Handle(packet(t, dhcpv4.MessageTypeRequest, mac,
			withRequested(o.YourIPAddr), withServerID(o.ServerIdentifier())))
		if err != nil {
			t.Errorf("REQUEST %s: %v", mac, err)
		}
		replies <- resp
	}
	go request(macs[0])
	<-entered // A's write is in the store, held
	go request(macs[1])
	go request(macs[2])
	decided := make(chan struct{})
	go func() {
		for { // Leases blocks while anyone holds the lock
			bound := 0
			for _, l := range e.s.Leases() {
				if l.State == StateBound {
					bound++
				}
			}
			if bound == 3 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		close(decided)
	}()
	select {
	case <-decided:
	case <-time.After(5 * time.Second):
		t.Fatal("B and C were not decided while A waited for the disk: the lock is held during the write")
	}
	select {
	case r := <-replies:
		t.Fatalf("reply to %s before its lease was durable", r.ClientHWAddr)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	got := map[string]bool{}
	for range 3 {
		r := <-replies
		if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("reply %v, want an ACK", summarize(r))
		}
		got[r.YourIPAddr.String()] = true
	}
	if len(got) != 3 {
		t.Errorf("acks %v, want three different addresses", got)
	}
	before := e.s.Leases()
	e.restart()
	if diff := cmp.Diff(before, e.s.Leases()); diff != "" {
		t.Errorf("Leases() after restart (-before +after):\n%s", diff)
	}
}
