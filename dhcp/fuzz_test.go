package dhcp

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/kiln-dev/kiln/store"
)

var update = flag.Bool("update", false, "rewrite the fuzz seed corpus in testdata")

// FuzzHandle feeds arbitrary packets to long-lived servers whose clock
// moves on, so leases are made, expire and are reused: one with a local and
// a relayed subnet and reservations, and one in proxyDHCP mode (on port 67
// and as the boot server). Every reply must satisfy checkReply, and the
// lease table must never bind one address to two MACs.
func FuzzHandle(f *testing.F) {
	captures, _ := filepath.Glob(filepath.Join("..", "testdata", "captures", "dhcp4", "*.bin"))
	for _, path := range captures {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	clk := &clock{t: testEpoch}
	cfg := testConfig(f, newMemStore(), clk)
	reservations(&cfg)
	cfg.Log = slog.New(slog.DiscardHandler)
	s, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	pcfg := testConfig(f, nil, clk)
	pcfg.Proxy, pcfg.Subnets, pcfg.Leases = true, nil, nil
	pcfg.Log = slog.New(slog.DiscardHandler)
	proxy, err := New(pcfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		clk.Advance(2 * time.Second) // offers live 15-30 requests: pools run out
		resp, d, err := s.handle(req, false)
		if err != nil {
			t.Fatalf("Handle: %v", err)
		}
		if d.Reason == "pool exhausted" {
			checkExhausted(t, s, req)
		}
		if resp != nil {
			checkReply(t, s, req, resp)
		}
		checkLeases(t, s)
		for _, bootPort := range []bool{false, true} {
			resp, _, err := proxy.handle(req, bootPort)
			if err != nil {
				t.Fatalf("proxy handle: %v", err)
			}
			if resp != nil {
				checkReply(t, proxy, req, resp)
			}
		}
		if n := len(proxy.Leases()); n != 0 {
			t.Fatalf("proxy server has %d leases, want none", n)
		}
	})
}

// checkReply asserts the invariants of any reply of s to req: it survives
// the wire, echoes xid and chaddr, offers only an address of a pool of the
// selected subnet or the client's reservation (and none as a proxy), and
// carries giaddr and option 82 exactly when the request was relayed with
// them.
func checkReply(t *testing.T, s *Server, req, resp *dhcpv4.DHCPv4) {
	t.Helper()
	if resp.OpCode != dhcpv4.OpcodeBootReply {
		t.Errorf("reply op %s, want BootReply", resp.OpCode)
	}
	if resp.TransactionID != req.TransactionID {
		t.Errorf("reply xid %s, want %s", resp.TransactionID, req.TransactionID)
	}
	if !bytes.Equal(resp.ClientHWAddr, req.ClientHWAddr) {
		t.Errorf("reply chaddr %s, want %s", resp.ClientHWAddr, req.ClientHWAddr)
	}
	mt := resp.MessageType()
	y, hasY := addr4(resp.YourIPAddr)
	switch {
	case s.cfg.Proxy && hasY:
		t.Errorf("proxy %s sets yiaddr %s", mt, y)
	case hasY && mt != dhcpv4.MessageTypeOffer && mt != dhcpv4.MessageTypeAck:
		t.Errorf("%s sets yiaddr %s", mt, y)
	case hasY:
		sn, _ := s.selectSubnet(req)
		res, reserved := s.resByMAC[req.ClientHWAddr.String()]
		if sn == nil || !(sn.inPools(y) || reserved && res.IP == y && sn.Prefix.Contains(y)) {
			t.Errorf("%s yiaddr %s is in no pool of the selected subnet and not the client's reservation", mt, y)
		}
		if r, ok := s.resByIP[y]; ok && r.MAC.String() != req.ClientHWAddr.String() {
			t.Errorf("%s yiaddr %s is reserved for %s", mt, y, r.MAC)
		}
	}
	gi, relayed := addr4(req.GatewayIPAddr)
	rai := req.Options.Get(dhcpv4.OptionRelayAgentInformation)
	got := resp.Options.Get(dhcpv4.OptionRelayAgentInformation)
	if relayed && rai != nil {
		if !bytes.Equal(got, rai) {
			t.Errorf("option 82 = %x, want the request's %x", got, rai)
		}
	} else if got != nil {
		t.Errorf("option 82 %x in a reply to a request not relayed with it", got)
	}
	if relayed && !resp.GatewayIPAddr.Equal(ipOf(gi)) {
		t.Errorf("reply giaddr %s, want %s", resp.GatewayIPAddr, gi)
	}
	if s.cfg.Proxy && resp.Options.Has(dhcpv4.OptionEtherboot) {
		t.Error("proxy reply carries option 175")
	}
	// The reply survives the wire.
	again, err := dhcpv4.FromBytes(resp.ToBytes())
	if err != nil {
		t.Fatalf("reply does not parse: %v", err)
	}
	if again.MessageType() != mt || !again.YourIPAddr.Equal(resp.YourIPAddr) || again.TransactionID != resp.TransactionID ||
		!bytes.Equal(again.ClientHWAddr, resp.ClientHWAddr) || !bytes.Equal(again.Options.Get(dhcpv4.OptionRelayAgentInformation), got) {
		t.Errorf("reply round trip: got %s, want %s", again, resp)
	}
}

// checkExhausted asserts, by a full scan without the pool hints, that no
// address of the request's subnet is free for its client.
func checkExhausted(t *testing.T, s *Server, req *dhcpv4.DHCPv4) {
	t.Helper()
	sn, _ := s.selectSubnet(req)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range sn.Pools {
		for a := p.Start; p.Contains(a); a = a.Next() {
			if s.free(a, req.ClientHWAddr.String(), s.now()) {
				t.Fatalf("pool exhausted, but %s is free", a)
			}
		}
	}
}

// checkLeases asserts that no address has two records and no MAC holds two
// unexpired offered or bound addresses.
func checkLeases(t *testing.T, s *Server) {
	t.Helper()
	now := s.now()
	ips := map[string]string{}
	macs := map[string]string{}
	for _, l := range s.Leases() {
		if other, dup := ips[l.IP]; dup {
			t.Fatalf("address %s held by %s and %s", l.IP, other, l.MAC)
		}
		ips[l.IP] = l.MAC
		if l.State == StateDeclined || !now.Before(l.Expires) {
			continue
		}
		if other, dup := macs[l.MAC]; dup {
			t.Fatalf("MAC %s holds %s and %s", l.MAC, other, l.IP)
		}
		macs[l.MAC] = l.IP
	}
}

// seeds are realistic requests, as PXE ROMs and iPXE send them.
func seeds(t testing.TB) map[string]*dhcpv4.DHCPv4 {
	uuid := dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier,
		append([]byte{0}, bytes.Repeat([]byte{0x5e}, 16)...))
	pxe := func(arch iana.Arch, class string, ndi []byte) []dhcpv4.Modifier {
		return []dhcpv4.Modifier{
			dhcpv4.WithBroadcast(true),
			dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1464)),
			dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionTimeOffset, dhcpv4.OptionRouter,
				dhcpv4.OptionNameServer, dhcpv4.OptionDomainNameServer, dhcpv4.OptionHostName,
				dhcpv4.OptionBootFileSize, dhcpv4.OptionDomainName, dhcpv4.OptionRootPath,
				dhcpv4.OptionVendorSpecificInformation, dhcpv4.OptionRequestedIPAddress,
				dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionServerIdentifier, dhcpv4.OptionClassIdentifier,
				dhcpv4.OptionTFTPServerName, dhcpv4.OptionBootfileName),
			uuid,
			dhcpv4.WithGeneric(dhcpv4.OptionClientNetworkInterfaceIdentifier, ndi),
			dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier(class)),
		}
	}
	bios := pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", []byte{1, 2, 1})
	uefi := pxe(iana.EFI_X86_64, "PXEClient:Arch:00007:UNDI:003016", []byte{1, 3, 16})
	arm64 := pxe(iana.EFI_ARM64, "PXEClient:Arch:00011:UNDI:003016", []byte{1, 3, 16})
	httpBoot := pxe(iana.EFI_X86_64_HTTP, "HTTPClient:Arch:00016:UNDI:003001", []byte{1, 3, 1})
	ipxe := append(pxe(iana.INTEL_X86PC, "PXEClient:Arch:00000:UNDI:002001", []byte{1, 2, 1}),
		dhcpv4.WithUserClass("iPXE", false),
		dhcpv4.WithGeneric(dhcpv4.OptionClientIdentifier, []byte{1, 0x52, 0x54, 0, 0, 0, 0x0a}),
		// iPXE's feature list: PXE extensions, HTTP, DNS, bzImage, …
		dhcpv4.WithGeneric(dhcpv4.OptionEtherboot, []byte{0xb1, 5, 1, 0x80, 0x86, 0x10, 0x0e,
			0x10, 1, 2, 0x13, 1, 1, 0x11, 1, 1, 0x27, 1, 1, 0x15, 1, 1, 0x18, 1, 1, 0x12, 1, 1}))
	selecting := []dhcpv4.Modifier{withRequested(ip("10.77.0.100")), withServerID(testServerIP)}
	return map[string]*dhcpv4.DHCPv4{
		"bios-pxe-discover":    rawPacket(t, dhcpv4.MessageTypeDiscover, macA, bios...),
		"bios-pxe-request":     rawPacket(t, dhcpv4.MessageTypeRequest, macA, append(bios, selecting...)...),
		"uefi-pxe-discover":    rawPacket(t, dhcpv4.MessageTypeDiscover, macB, uefi...),
		"ipxe-discover":        rawPacket(t, dhcpv4.MessageTypeDiscover, macA, ipxe...),
		"ipxe-request":         rawPacket(t, dhcpv4.MessageTypeRequest, macA, append(ipxe, selecting...)...),
		"init-reboot":          rawPacket(t, dhcpv4.MessageTypeRequest, macA, withRequested(ip("10.77.0.100"))),
		"renew":                rawPacket(t, dhcpv4.MessageTypeRequest, macA, dhcpv4.WithClientIP(ip("10.77.0.100"))),
		"release":              rawPacket(t, dhcpv4.MessageTypeRelease, macA, dhcpv4.WithClientIP(ip("10.77.0.100"))),
		"decline":              rawPacket(t, dhcpv4.MessageTypeDecline, macA, withRequested(ip("10.77.0.100"))),
		"inform":               rawPacket(t, dhcpv4.MessageTypeInform, macA, dhcpv4.WithClientIP(ip("10.77.0.20"))),
		"relayed-discover":     rawPacket(t, dhcpv4.MessageTypeDiscover, macA, dhcpv4.WithGatewayIP(ip("10.9.0.1"))),
		"request-other-server": rawPacket(t, dhcpv4.MessageTypeRequest, macA, withServerID(ip("10.77.0.2"))),
		"relayed-opt82-discover": rawPacket(t, dhcpv4.MessageTypeDiscover, macA, append(bios,
			dhcpv4.WithGatewayIP(ip("10.78.0.1")), opt82(ip("10.78.0.0")))...),
		"relayed-opt82-request": rawPacket(t, dhcpv4.MessageTypeRequest, macA, append(bios,
			dhcpv4.WithGatewayIP(ip("10.78.0.1")), opt82(nil), withRequested(ip("10.78.0.100")), withServerID(testServerIP))...),
		"reserved-discover": rawPacket(t, dhcpv4.MessageTypeDiscover, macB, uefi...),
		"arm64-discover":    rawPacket(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0c", arm64...),
		"http-discover":     rawPacket(t, dhcpv4.MessageTypeDiscover, "52:54:00:00:00:0d", httpBoot...),
		"proxy-boot-request": rawPacket(t, dhcpv4.MessageTypeRequest, macB, append(uefi,
			dhcpv4.WithClientIP(ip("10.77.0.60")), withServerID(testServerIP))...),
	}
}

// TestFuzzSeeds checks that the seed corpus in testdata matches seeds();
// go test -run TestFuzzSeeds -update rewrites it.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle")
	all := seeds(t)
	names := make([]string, 0, len(all))
	for name := range all {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", all[name].ToBytes())
		path := filepath.Join(dir, name)
		if *update {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("seed %s is stale or missing (%v); run go test -run TestFuzzSeeds -update", path, err)
		}
	}
}

// TestSeedsReplies runs the seeds in order through one server: each must be
// answered or ignored as a real client would expect.
func TestSeedsReplies(t *testing.T) {
	e := newEnv(t, remoteSubnet)
	all := seeds(t)
	for _, tt := range []struct{ seed, want string }{
		{"bios-pxe-discover", "OFFER"}, {"bios-pxe-request", "ACK"}, {"ipxe-discover", "OFFER"},
		{"ipxe-request", "ACK"}, {"uefi-pxe-discover", "OFFER"}, {"renew", "ACK"}, {"init-reboot", "ACK"},
		{"inform", "ACK"}, {"relayed-discover", ""}, {"request-other-server", ""}, {"decline", ""},
		{"release", ""}, {"relayed-opt82-discover", "OFFER"}, {"relayed-opt82-request", "ACK"},
		{"reserved-discover", "OFFER"}, {"arm64-discover", "OFFER"}, {"http-discover", "OFFER"},
		{"proxy-boot-request", "NAK"},
	} {
		req, err := dhcpv4.FromBytes(all[tt.seed].ToBytes())
		if err != nil {
			t.Fatal(err)
		}
		resp := e.handle(req)
		got := ""
		if resp != nil {
			got = resp.MessageType().String()
			checkReply(t, e.s, req, resp)
		}
		if got != tt.want {
			t.Errorf("seed %s: reply %q, want %q", tt.seed, got, tt.want)
		}
	}
}

// memStore is a store.Store in memory, for fuzzing at speed.
type memStore struct {
	mu sync.Mutex
	m  map[string]map[string][]byte
}

func newMemStore() *memStore { return &memStore{m: map[string]map[string][]byte{}} }

func (s *memStore) View(fn func(store.Tx) error) error { return s.Update(fn) }
func (s *memStore) Close() error                       { return nil }
func (s *memStore) Update(fn func(store.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(memTx{s})
}

type memTx struct{ s *memStore }

func (tx memTx) Get(bucket, key string) ([]byte, error) {
	v, ok := tx.s.m[bucket][key]
	if !ok {
		return nil, fmt.Errorf("%s/%s: %w", bucket, key, store.ErrNotFound)
	}
	return bytes.Clone(v), nil
}

func (tx memTx) Put(bucket, key string, value []byte) error {
	if tx.s.m[bucket] == nil {
		tx.s.m[bucket] = map[string][]byte{}
	}
	tx.s.m[bucket][key] = bytes.Clone(value)
	return nil
}

func (tx memTx) Delete(bucket, key string) error { delete(tx.s.m[bucket], key); return nil }

func (tx memTx) ForEach(bucket string, fn func(string, []byte) error) error {
	keys := make([]string, 0, len(tx.s.m[bucket]))
	for k := range tx.s.m[bucket] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, tx.s.m[bucket][k]); err != nil {
			return err
		}
	}
	return nil
}
