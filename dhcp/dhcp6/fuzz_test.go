package dhcp6

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv6"

	"github.com/kiln-dev/kiln/store"
)

var update = flag.Bool("update", false, "rewrite the FuzzHandle6 seed corpus in testdata/fuzz")

// memStore is an in-memory store.Store for the fuzzer, where a bbolt file
// per input would be too slow.
type memStore struct {
	mu sync.Mutex
	m  map[string]map[string][]byte
}

func newMemStore() *memStore { return &memStore{m: map[string]map[string][]byte{}} }

func (s *memStore) View(fn func(store.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fn(memTx{s: s})
}

func (s *memStore) Update(fn func(store.Tx) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	backup := map[string]map[string][]byte{}
	for b, kv := range s.m {
		backup[b] = map[string][]byte{}
		for k, v := range kv {
			backup[b][k] = v
		}
	}
	if err := fn(memTx{s: s, rw: true}); err != nil {
		s.m = backup
		return err
	}
	return nil
}

func (s *memStore) Close() error { return nil }

type memTx struct {
	s  *memStore
	rw bool
}

func (t memTx) Get(bucket, key string) ([]byte, error) {
	v, ok := t.s.m[bucket][key]
	if !ok {
		return nil, store.ErrNotFound
	}
	return bytes.Clone(v), nil
}

func (t memTx) Put(bucket, key string, value []byte) error {
	if !t.rw {
		return fmt.Errorf("put in a read-only transaction")
	}
	if t.s.m[bucket] == nil {
		t.s.m[bucket] = map[string][]byte{}
	}
	t.s.m[bucket][key] = bytes.Clone(value)
	return nil
}

func (t memTx) Delete(bucket, key string) error {
	if !t.rw {
		return fmt.Errorf("delete in a read-only transaction")
	}
	delete(t.s.m[bucket], key)
	return nil
}

func (t memTx) ForEach(bucket string, fn func(string, []byte) error) error {
	keys := make([]string, 0, len(t.s.m[bucket]))
	for k := range t.s.m[bucket] {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn(k, t.s.m[bucket][k]); err != nil {
			return err
		}
	}
	return nil
}

// fuzzSeeds are client messages as real clients send them.
func fuzzSeeds(t testing.TB) map[string][]byte {
	sol := msg(t, dhcpv6.MessageTypeSolicit, macA, append(httpClient, withIA())...)
	seeds := map[string][]byte{
		"http-boot-solicit": sol.ToBytes(),
		"http-boot-request": msg(t, dhcpv6.MessageTypeRequest, macA, append(httpClient, withIA(addrA), withServer(testDUID))...).ToBytes(),
		"pxe-solicit":       msg(t, dhcpv6.MessageTypeSolicit, macB, append(pxeUEFI, withIA())...).ToBytes(),
		"ipxe-rapid":        msg(t, dhcpv6.MessageTypeSolicit, macB, append(ipxe, withIA(), withRapid)...).ToBytes(),
		"renew":             msg(t, dhcpv6.MessageTypeRenew, macA, withIA(addrA), withServer(testDUID)).ToBytes(),
		"rebind":            msg(t, dhcpv6.MessageTypeRebind, macB, withIA(addrA)).ToBytes(),
		"confirm":           msg(t, dhcpv6.MessageTypeConfirm, macA, withIA("2001:db8::1")).ToBytes(),
		"release":           msg(t, dhcpv6.MessageTypeRelease, macA, withIA(addrA), withServer(testDUID)).ToBytes(),
		"decline":           msg(t, dhcpv6.MessageTypeDecline, macA, withIA(addrA), withServer(testDUID)).ToBytes(),
		"info-request":      msg(t, dhcpv6.MessageTypeInformationRequest, macA, httpClient...).ToBytes(),
	}
	return seeds
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/FuzzHandle6 with -update and
// otherwise checks that the stored seeds still parse.
func TestWriteFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzHandle6")
	seeds := fuzzSeeds(t)
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, b := range seeds {
			body := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n[]byte(%q)\nuint8(%d)\n", b, seeds["http-boot-solicit"], 0)
			if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < len(seeds) {
		t.Errorf("%s has %d seeds, want %d: run go test -run TestWriteFuzzSeeds -update", dir, len(entries), len(seeds))
	}
}

// FuzzHandle6 feeds two messages (and the first again) from two sources to
// one server and checks what any reply must be: it parses back, carries the
// request's transaction ID and client identifier, puts only pool addresses
// in its IAs with nonzero lifetimes, and no address goes to two DUIDs.
func FuzzHandle6(f *testing.F) {
	seeds := fuzzSeeds(f)
	for _, b := range seeds {
		f.Add(b, seeds["http-boot-solicit"], uint8(0))
	}
	captures, _ := filepath.Glob(filepath.Join("..", "..", "testdata", "captures", "dhcp6", "*.bin"))
	for _, p := range captures {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, seeds["http-boot-request"], uint8(1))
		}
	}
	f.Fuzz(func(t *testing.T, a, b []byte, srcSel uint8) {
		s, err := New(Config{Interface: "kiln0", ServerIP: testServer, Prefix: testPrefix,
			Pool: Pool{Start: testPool.Start, End: testPool.Start.Next().Next()}, ServerDUID: testDUID,
			Boot: Boot{ScriptURL: scriptURL, HTTPBootURL: httpBootURL}, Leases: newMemStore()})
		if err != nil {
			t.Fatal(err)
		}
		srcs := []netip.Addr{linkLocal(t, macA), linkLocal(t, macB), netip.MustParseAddr("fe80::1"), {}}
		owner := map[netip.Addr]string{} // address -> DUID it was given to
		for i, pkt := range [][]byte{a, b, a} {
			req, err := dhcpv6.FromBytes(pkt)
			if err != nil {
				continue
			}
			src := srcs[(int(srcSel)+i)%len(srcs)]
			resp, err := s.Handle(req, src)
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if resp == nil {
				continue
			}
			m, ok := req.(*dhcpv6.Message)
			if !ok {
				t.Fatalf("reply %s to a relay message", resp.Summary())
			}
			again, err := dhcpv6.FromBytes(resp.ToBytes())
			if err != nil {
				t.Fatalf("reply does not parse back: %v\n%s", err, resp.Summary())
			}
			got := again.(*dhcpv6.Message)
			if got.TransactionID != m.TransactionID {
				t.Errorf("reply xid %s, request %s", got.TransactionID, m.TransactionID)
			}
			// The client ID is echoed; only an Information-request
			// may lack one (RFC 8415 section 18.2.6).
			var cid, rcid []byte
			if o := m.Options.GetOne(dhcpv6.OptionClientID); o != nil {
				cid = o.ToBytes()
			}
			if o := got.Options.GetOne(dhcpv6.OptionClientID); o != nil {
				rcid = o.ToBytes()
			}
			if !bytes.Equal(cid, rcid) || (cid == nil && m.MessageType != dhcpv6.MessageTypeInformationRequest) {
				t.Errorf("reply client ID % x, request's % x (%s)", rcid, cid, m.MessageType)
			}
			if got.MessageType != dhcpv6.MessageTypeAdvertise && got.MessageType != dhcpv6.MessageTypeReply {
				t.Errorf("reply type %s", got.MessageType)
			}
			duid := string(cid)
			for _, ia := range got.Options.IANA() {
				for _, ad := range ia.Options.Addresses() {
					if ad.ValidLifetime == 0 {
						continue
					}
					addr, _ := netip.AddrFromSlice(ad.IPv6Addr)
					if !inPool(s.cfg.Pool, addr) {
						t.Errorf("reply gives %s, outside the pool %s", addr, s.cfg.Pool)
					}
					if o, ok := owner[addr]; ok && o != duid {
						t.Errorf("%s given to two DUIDs", addr)
					}
					owner[addr] = duid
				}
			}
		}
		seen := map[string]bool{}
		for _, l := range s.Leases() {
			if seen[l.IP] || !strings.HasPrefix(l.IP, "fd77::") {
				t.Errorf("Leases() = %+v: duplicate or foreign address %s", s.Leases(), l.IP)
			}
			seen[l.IP] = true
		}
	})
}
