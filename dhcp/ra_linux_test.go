//go:build linux

package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/kiln-dev/kiln/internal/testenv"
)

func TestParseIfInet6(t *testing.T) {
	const table = `00000000000000000000000000000001 01 80 10 80       lo
fe80000000000000a8c1abfffe000001 02 40 20 40   ra-srv
fe80000000000000a8c1abfffe000002 03 40 20 80   ra-cli
fd000000000000000000000000000003 04 40 00 80    ra-x
fe80000000000000a8c1abfffe000004 04 40 20 c8    ra-x
fe80000000000000a8c1abfffe000005 04 40 20 80    ra-x
fe80000000000000a8c1abfffe000006 1f4 40 20 80  ra-big
garbage
`
	ip6ll := net.ParseIP("fe80::a8c1:abff:fe00:2")
	for _, tc := range []struct {
		ifindex int
		want    net.IP
	}{
		{1, nil},   // loopback: not link-local
		{2, nil},   // tentative
		{3, ip6ll}, // permanent
		{4, net.ParseIP("fe80::a8c1:abff:fe00:5")}, // after a global and a failed one
		{500, net.ParseIP("fe80::a8c1:abff:fe00:6")},
		{9, nil},
	} {
		if got := parseIfInet6([]byte(table), tc.ifindex); !got.Equal(tc.want) {
			t.Errorf("parseIfInet6(table, %d) = %v, want %v", tc.ifindex, got, tc.want)
		}
	}
}

// raNS is a network namespace named kiln-ra-<pid> made for one test and
// deleted at its end. Nothing is created outside it.
type raNS struct{ *testenv.Netns }

func newRANS(t *testing.T) *raNS {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("skipping: the kernel has no IPv6")
	}
	return &raNS{testenv.NewNetns(t, fmt.Sprintf("kiln-ra-%d", os.Getpid()))}
}

// veth adds a veth pair a-b and brings it up if asked. Duplicate address
// detection is off, so that link-local addresses are usable as soon as the
// link is up, and so are the kernel's own router solicitations, so that
// every solicitation comes from the test.
func (n *raNS) veth(t *testing.T, a, b string, up bool) {
	t.Helper()
	n.IP(t, "link", "add", a, "type", "veth", "peer", "name", b)
	n.Do(t, func() error {
		for _, dev := range []string{a, b} {
			for _, set := range [][2]string{{"accept_dad", "0"}, {"router_solicitations", "0"}} {
				path := "/proc/sys/net/ipv6/conf/" + dev + "/" + set[0]
				if err := os.WriteFile(path, []byte(set[1]), 0o644); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if up {
		n.up(t, a, b)
	}
}

func (n *raNS) up(t *testing.T, devs ...string) {
	t.Helper()
	for _, dev := range devs {
		n.IP(t, "link", "set", dev, "up")
	}
}

// iface returns the interface dev and its usable link-local address,
// waiting up to 10 s for the address.
func (n *raNS) iface(t *testing.T, dev string) (*net.Interface, net.IP) {
	t.Helper()
	var (
		ifi *net.Interface
		ll  net.IP
	)
	for deadline := time.Now().Add(10 * time.Second); ll == nil; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s has no usable link-local address after 10s", dev)
		}
		n.Do(t, func() error {
			var err error
			if ifi, err = net.InterfaceByName(dev); err != nil {
				return err
			}
			ll = procLinkLocal(ifi)
			return nil
		})
	}
	return ifi, ll
}

// raRun is one ServeRA running in the namespace.
type raRun struct {
	done chan struct{} // closed when ServeRA has returned
	err  error         // its result, once done is closed
	logs testenv.SyncBuffer
}

// serve runs ServeRA on a goroutine locked into the namespace, logging to
// a buffer that the test prints when it ends. ServeRA is stopped and
// awaited when the test ends.
func (n *raNS) serve(t *testing.T, cfg RAConfig) *raRun {
	t.Helper()
	r := &raRun{done: make(chan struct{})}
	cfg.Log = slog.New(slog.NewTextHandler(&r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	target, err := os.Open("/run/netns/" + n.Name)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		defer target.Close()
		// Never unlocked: the runtime retires the thread when this
		// goroutine ends, so nothing else ever runs in the namespace.
		runtime.LockOSThread()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			r.err = fmt.Errorf("setns %s: %w", n.Name, err)
			return
		}
		r.err = ServeRA(ctx, cfg)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(5 * time.Second):
			t.Errorf("ServeRA did not return within 5s of its context ending")
		}
		t.Logf("ServeRA log:\n%s", r.logs.String())
	})
	return r
}

// running fails the test if ServeRA has returned.
func (r *raRun) running(t *testing.T) {
	t.Helper()
	select {
	case <-r.done:
		t.Fatalf("ServeRA returned early: %v", r.err)
	default:
	}
}

// result waits up to timeout for ServeRA to return and returns its error.
func (r *raRun) result(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(timeout):
		t.Fatalf("ServeRA still running after %v", timeout)
		return nil
	}
}

// raClient is a host on the other end of a veth pair.
type raClient struct {
	t   *testing.T
	c   *ipv6.PacketConn
	ifi *net.Interface
}

// listen opens a raw ICMPv6 socket on dev in the namespace that hears
// Router Advertisements only.
func (n *raNS) listen(t *testing.T, dev string) *raClient {
	t.Helper()
	cl := &raClient{t: t}
	n.Do(t, func() error {
		var err error
		if cl.ifi, err = net.InterfaceByName(dev); err != nil {
			return err
		}
		cl.c, err = listenRAClient(dev)
		return err
	})
	t.Cleanup(func() { cl.c.Close() })
	return cl
}

func listenRAClient(dev string) (*ipv6.PacketConn, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	if err != nil {
		return nil, err
	}
	if err := unix.BindToDevice(fd, dev); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "icmpv6-"+dev)
	defer f.Close()
	pc, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	p := ipv6.NewPacketConn(pc)
	var filter ipv6.ICMPFilter
	filter.SetAll(true)
	filter.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := errors.Join(p.SetICMPFilter(&filter),
		p.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst|ipv6.FlagInterface, true)); err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// received is one Router Advertisement as a host sees it.
type received struct {
	ra       routerAdvert
	hopLimit int
	src, dst net.IP
	at       time.Time
}

// next returns the next Router Advertisement within timeout, or nil.
func (cl *raClient) next(timeout time.Duration) *received {
	cl.t.Helper()
	buf := make([]byte, 1500)
	if err := cl.c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		cl.t.Fatal(err)
	}
	n, cm, peer, err := cl.c.ReadFrom(buf)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return nil
	}
	if err != nil {
		cl.t.Fatalf("reading on %s: %v", cl.ifi.Name, err)
	}
	ra, err := parseRA(buf[:n])
	if err != nil {
		cl.t.Fatalf("parseRA(% x): %v", buf[:n], err)
	}
	r := &received{ra: ra, at: time.Now(), src: peer.(*net.IPAddr).IP}
	if cm != nil {
		r.hopLimit, r.dst = cm.HopLimit, cm.Dst
	}
	return r
}

// solicit sends a Router Solicitation from src with the given hop limit.
func (cl *raClient) solicit(src net.IP, hopLimit int) {
	cl.t.Helper()
	cm := &ipv6.ControlMessage{HopLimit: hopLimit, Src: src, IfIndex: cl.ifi.Index}
	if _, err := cl.c.WriteTo(rsBytes(cl.ifi.HardwareAddr), cm, &net.IPAddr{IP: allRouters}); err != nil {
		cl.t.Fatalf("sending router solicitation on %s: %v", cl.ifi.Name, err)
	}
}

// checkRA checks what RFC 4861 and iPXE need of an advertisement from srv.
func checkRA(t *testing.T, r *received, srv *net.Interface, srvLL net.IP) {
	t.Helper()
	want := routerAdvert{SourceLLA: srv.HardwareAddr} // lifetime 0, M and O clear
	if diff := cmp.Diff(want, r.ra); diff != "" {
		t.Errorf("router advertisement (-want +got):\n%s", diff)
	}
	if r.hopLimit != ndHopLimit {
		t.Errorf("hop limit %d, want 255", r.hopLimit)
	}
	if !r.src.IsLinkLocalUnicast() || !r.src.Equal(srvLL) {
		t.Errorf("source %v, want %s's link-local %v", r.src, srv.Name, srvLL)
	}
	if !r.dst.Equal(allNodes) {
		t.Errorf("destination %v, want ff02::1", r.dst)
	}
}

func TestServeRAInNetns(t *testing.T) {
	n := newRANS(t)

	t.Run("periodic", func(t *testing.T) {
		n.veth(t, "ra-srv", "ra-cli", true)
		n.veth(t, "ra-oth0", "ra-oth1", true)
		srv, srvLL := n.iface(t, "ra-srv")
		n.iface(t, "ra-cli")
		n.iface(t, "ra-oth1")
		cl, other := n.listen(t, "ra-cli"), n.listen(t, "ra-oth1")
		const interval = 500 * time.Millisecond
		run := n.serve(t, RAConfig{Interface: "ra-srv", Interval: interval})
		var last time.Time
		for i := range 4 {
			r := cl.next(2 * interval)
			if r == nil {
				t.Fatalf("advertisement %d did not arrive within 2×%v", i, interval)
			}
			checkRA(t, r, srv, srvLL)
			if i > 0 {
				t.Logf("advertisement %d %v after the previous one", i, r.at.Sub(last).Round(time.Millisecond))
			}
			last = r.at
		}
		if r := other.next(100 * time.Millisecond); r != nil {
			t.Errorf("advertisement from %v reached ra-oth1, another interface", r.src)
		}
		run.running(t)
	})

	t.Run("solicited", func(t *testing.T) {
		n.veth(t, "ra-srv2", "ra-cli2", true)
		srv, srvLL := n.iface(t, "ra-srv2")
		_, cliLL := n.iface(t, "ra-cli2")
		cl := n.listen(t, "ra-cli2")
		n.serve(t, RAConfig{Interface: srv.Name, Interval: 30 * time.Second})
		if r := cl.next(2 * time.Second); r == nil {
			t.Fatal("no advertisement at start")
		}
		if r := cl.next(time.Second); r != nil {
			t.Fatal("unsolicited advertisement soon after start with a 30s interval")
		}
		cl.solicit(cliLL, 64) // RFC 4861 section 6.1.1: not from a neighbour
		if r := cl.next(time.Second); r != nil {
			t.Fatal("advertisement in reply to a solicitation with hop limit 64")
		}
		sent := time.Now()
		cl.solicit(cliLL, ndHopLimit)
		r := cl.next(time.Second)
		if r == nil {
			t.Fatal("no advertisement within 1s of a router solicitation (interval 30s)")
		}
		t.Logf("reply %v after the solicitation", r.at.Sub(sent).Round(time.Microsecond))
		checkRA(t, r, srv, srvLL)
	})

	t.Run("link comes up later", func(t *testing.T) {
		n.veth(t, "ra-late0", "ra-late1", false)
		cl := n.listen(t, "ra-late1")
		run := n.serve(t, RAConfig{Interface: "ra-late0", Interval: 200 * time.Millisecond})
		if r := cl.next(time.Second); r != nil {
			t.Fatalf("advertisement from %v while the link is down", r.src)
		}
		n.up(t, "ra-late0", "ra-late1")
		srv, srvLL := n.iface(t, "ra-late0")
		r := cl.next(3 * time.Second)
		if r == nil {
			t.Fatal("no advertisement within 3s of the link coming up")
		}
		checkRA(t, r, srv, srvLL)
		run.running(t)
	})

	t.Run("IPv6 disabled", func(t *testing.T) {
		n.veth(t, "ra-off0", "ra-off1", false)
		n.Do(t, func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/ra-off0/disable_ipv6", []byte("1"), 0o644)
		})
		n.up(t, "ra-off0", "ra-off1")
		run := n.serve(t, RAConfig{Interface: "ra-off0"})
		if err := run.result(t, 2*time.Second); err != nil {
			t.Fatalf("ServeRA with IPv6 disabled = %v, want nil", err)
		}
		var warns []string
		for _, line := range strings.Split(run.logs.String(), "\n") {
			if strings.Contains(line, "level=WARN") {
				warns = append(warns, line)
			}
		}
		if len(warns) != 1 || !strings.Contains(warns[0], "iPXE may wait ~14 s") {
			t.Errorf("warnings %q, want one saying iPXE may wait ~14 s", warns)
		}
	})

	t.Run("interface gone", func(t *testing.T) {
		n.veth(t, "ra-gone0", "ra-gone1", true)
		n.iface(t, "ra-gone0")
		cl := n.listen(t, "ra-gone1")
		run := n.serve(t, RAConfig{Interface: "ra-gone0", Interval: 200 * time.Millisecond})
		if r := cl.next(2 * time.Second); r == nil {
			t.Fatal("no advertisement at start")
		}
		n.IP(t, "link", "del", "ra-gone0")
		if err := run.result(t, 2*time.Second); err == nil || !strings.Contains(err.Error(), "ra-gone0") {
			t.Errorf("ServeRA after its interface was deleted = %v, want an error naming it", err)
		}
	})
}

// TestServeRAManagedPrefixInNetns checks the advertisement kiln sends for
// DHCPv6 clients: M flag and an on-link prefix, as a host receives it.
func TestServeRAManagedPrefixInNetns(t *testing.T) {
	n := newRANS(t)
	n.veth(t, "ra-m0", "ra-m1", true)
	srv, srvLL := n.iface(t, "ra-m0")
	n.iface(t, "ra-m1")
	cl := n.listen(t, "ra-m1")
	prefix := netip.MustParsePrefix("fd77::/64")
	run := n.serve(t, RAConfig{Interface: srv.Name, Interval: 500 * time.Millisecond, Managed: true,
		Prefixes: []RAPrefix{{Prefix: prefix, OnLink: true, ValidLifetime: time.Hour}}})
	r := cl.next(2 * time.Second)
	if r == nil {
		t.Fatal("no advertisement within 2s")
	}
	want := routerAdvert{Managed: true, SourceLLA: srv.HardwareAddr, Prefixes: []prefixInfo{{
		Prefix: prefix, OnLink: true, ValidLifetime: 3600, PreferredLifetime: 3600}}}
	if diff := cmp.Diff(want, r.ra); diff != "" {
		t.Errorf("router advertisement (-want +got):\n%s", diff)
	}
	if !r.src.Equal(srvLL) || r.hopLimit != ndHopLimit {
		t.Errorf("source %v hop limit %d, want %v and 255", r.src, r.hopLimit, srvLL)
	}
	run.running(t)
	if err := ServeRA(context.Background(), RAConfig{Interface: srv.Name,
		Prefixes: []RAPrefix{{Prefix: netip.MustParsePrefix("10.0.0.0/8")}}}); err == nil {
		t.Error("ServeRA with an IPv4 prefix succeeded, want error")
	}
}
