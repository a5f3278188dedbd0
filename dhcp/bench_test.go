package dhcp

import (
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/kiln-dev/kiln/store"
)

// BenchmarkDORA runs DISCOVER then REQUEST for a new MAC per iteration
// through Handle, from many goroutines at once, on a real bbolt file (two
// durable lease writes per DORA), with the group commit New uses and with
// one synchronous transaction per write under the lock, as before. It
// reports DORAs per second.
//
//	go test -run '^$' -bench DORA -benchtime 2000x ./dhcp/
func BenchmarkDORA(b *testing.B) {
	b.Run("group", func(b *testing.B) { benchDORA(b, newCommitter) })
	b.Run("sync", func(b *testing.B) {
		benchDORA(b, func(st store.Store) committer { return syncCommitter{st} })
	})
}

func benchDORA(b *testing.B, commits func(store.Store) committer) {
	st, err := store.OpenBolt(filepath.Join(b.TempDir(), "kiln.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	s, err := New(Config{
		Interface: "bench0",
		ServerIP:  testServerIP,
		Subnets: []Subnet{{
			Prefix: netip.MustParsePrefix("10.128.0.0/10"),
			Pools:  []Pool{{netip.MustParseAddr("10.128.1.0"), netip.MustParseAddr("10.191.255.254")}},
		}, {
			Prefix: testPrefix,
		}},
		Boot:   Boot{ScriptURL: scriptURL},
		Leases: st,
		Log:    slog.New(slog.DiscardHandler),
	})
	if err != nil {
		b.Fatal(err)
	}
	s.commits.close()
	s.commits = commits(st)
	defer s.Close()
	relay := dhcpv4.WithGatewayIP(net.IPv4(10, 128, 0, 1))
	var next atomic.Uint32
	b.SetParallelism(32) // 32 x GOMAXPROCS clients in flight, as in a rack power-on
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1)
			mac := net.HardwareAddr{0x52, 0x54, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
			xid := dhcpv4.WithTransactionID(dhcpv4.TransactionID{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})
			disc, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), xid, relay, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))
			offer, err := s.Handle(disc)
			if err != nil || offer == nil {
				b.Errorf("DISCOVER %s: %v, %v", mac, offer, err)
				return
			}
			req, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), xid, relay, dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
				withRequested(offer.YourIPAddr), withServerID(testServerIP))
			ack, err := s.Handle(req)
			if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
				b.Errorf("REQUEST %s: %v, %v", mac, ack, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "dora/s")
}
