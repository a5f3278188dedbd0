package dhcp

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/kiln-dev/kiln/store"
)

func TestNewRejects(t *testing.T) {
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
		{"no subnet", func(c *Config) { c.Subnet = nil }, "Subnet is required"},
		{"server outside subnet", func(c *Config) { c.ServerIP = ip("10.78.0.1") }, "ServerIP 10.78.0.1 is outside Subnet 10.77.0.0/24"},
		{"start outside subnet", func(c *Config) { c.RangeStart = ip("10.78.0.100") }, "RangeStart 10.78.0.100 is outside Subnet 10.77.0.0/24"},
		{"end is broadcast", func(c *Config) { c.RangeEnd = ip("10.77.0.255") }, "RangeEnd 10.77.0.255 is the network or broadcast address"},
		{"start is network", func(c *Config) { c.RangeStart = ip("10.77.0.0") }, "RangeStart 10.77.0.0 is the network or broadcast address"},
		{"end before start", func(c *Config) { c.RangeEnd = ip("10.77.0.99") }, "RangeEnd 10.77.0.99 is before RangeStart 10.77.0.100"},
		{"server in pool", func(c *Config) { c.ServerIP = ip("10.77.0.105") }, "ServerIP 10.77.0.105 is inside the pool 10.77.0.100-10.77.0.109"},
		{"no range end", func(c *Config) { c.RangeEnd = nil }, "RangeEnd is required"},
		{"zero range start", func(c *Config) { c.RangeStart = net.IPv4zero }, "RangeStart 0.0.0.0 is not an IPv4 address"},
		{"bad router", func(c *Config) { c.Router = net.ParseIP("fd00::1") }, "Router fd00::1 is not an IPv4 address"},
		{"bad dns", func(c *Config) { c.DNS = []net.IP{net.ParseIP("fd00::53")} }, "DNS fd00::53 is not an IPv4 address"},
		{"negative lease", func(c *Config) { c.LeaseTime = -time.Hour }, "LeaseTime -1h0m0s is out of range"},
		{"tiny offer", func(c *Config) { c.OfferTime = time.Millisecond }, "OfferTime 1ms is out of range"},
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
	got := []any{s.cfg.LeaseTime, s.cfg.OfferTime, s.cfg.Boot.BIOSFile, s.cfg.Boot.UEFIFile, s.cfg.Log != nil, s.now != nil}
	want := []any{time.Hour, time.Minute, "undionly.kpxe", "snponly.efi", true, true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
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
	e.s.cfg.Leases = failStore{e.st}
	for _, req := range []*dhcpv4.DHCPv4{
		packet(t, dhcpv4.MessageTypeDiscover, macB),
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
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("log line (-want +got):\n%s", diff)
	}
}
