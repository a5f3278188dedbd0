//go:build linux

package dhcp6

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"

	"github.com/kiln-dev/kiln/internal/testenv"
)

var nsSeq atomic.Int32

// netns is a network namespace kiln-dhcp6-<pid>-<n> holding a veth pair:
// srv (fd77::1/64) and cli. It is deleted when the test ends; nothing is
// created outside it.
type netns struct {
	*testenv.Netns
	srv, cli string
}

func newNetns(t *testing.T) *netns {
	t.Helper()
	if _, err := os.Stat("/proc/sys/net/ipv6"); err != nil {
		t.Skip("skipping: the kernel has no IPv6")
	}
	n := &netns{Netns: testenv.NewNetns(t, fmt.Sprintf("kiln-dhcp6-%d-%d", os.Getpid(), nsSeq.Add(1))), srv: "k6-srv", cli: "k6-cli"}
	t.Cleanup(func() {
		// Anything still in the namespace was started by this test. This
		// runs before the namespace is deleted.
		if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
			for _, pid := range strings.Fields(string(out)) {
				exec.Command("kill", pid).Run()
			}
		}
	})
	n.IP(t, "link", "add", n.srv, "type", "veth", "peer", "name", n.cli)
	n.Do(t, func() error {
		// Link-local addresses usable at once: no duplicate address
		// detection in a namespace the test owns.
		for _, dev := range []string{n.srv, n.cli} {
			if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+dev+"/accept_dad", []byte("0"), 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	n.IP(t, "addr", "add", "fd77::1/64", "dev", n.srv, "nodad")
	n.IP(t, "link", "set", n.srv, "up")
	n.IP(t, "link", "set", n.cli, "up")
	return n
}

// serve runs a server on srv until the test ends.
func (n *netns) serve(t *testing.T, e *env) {
	t.Helper()
	var conn net.PacketConn
	n.Do(t, func() error {
		var err error
		if conn, err = Listen(n.srv); err != nil {
			return fmt.Errorf("Listen(%q): %w", n.srv, err)
		}
		if second, err := Listen(n.srv); err == nil {
			second.Close()
			t.Errorf("second Listen(%q) succeeded, want address in use", n.srv)
		}
		if _, err := Listen("kiln-none"); err == nil {
			t.Error("Listen of a missing interface succeeded")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})
}

func (n *netns) iface(t *testing.T, dev string) *net.Interface {
	var ifi *net.Interface
	n.Do(t, func() error {
		var err error
		ifi, err = net.InterfaceByName(dev)
		return err
	})
	return ifi
}

// TestServeNclient6 runs Solicit, Advertise, Request, Reply with
// insomniacslk's nclient6 over a veth pair, as EDK2's HTTP Boot does it: a
// DUID-UUID client identifier, so the server must take the MAC from the
// link-local source address.
func TestServeNclient6(t *testing.T) {
	n := newNetns(t)
	e := newEnv(t)
	// New looks up srv for the default server DUID: in the namespace.
	n.Do(t, func() error {
		e.s = e.newServer(func(c *Config) { c.Interface = n.srv; c.ServerDUID = nil })
		return nil
	})
	n.serve(t, e)
	cli := n.iface(t, n.cli)
	var client *nclient6.Client
	n.Do(t, func() error {
		var err error
		client, err = nclient6.New(n.cli, nclient6.WithTimeout(2*time.Second), nclient6.WithRetry(3))
		return err
	})
	t.Cleanup(func() { client.Close() })

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	uuid := &dhcpv6.DUIDUUID{UUID: [16]byte{1, 2, 3, 4}}
	mods := append([]dhcpv6.Modifier{dhcpv6.WithClientID(uuid)}, httpClient...)
	adv, err := client.Solicit(ctx, mods...)
	if err != nil {
		t.Fatalf("Solicit over %s: %v", n.cli, err)
	}
	rep, err := client.Request(ctx, adv, mods...)
	if err != nil {
		t.Fatalf("Request over %s: %v", n.cli, err)
	}
	wantURL := httpBootURL(cli.HardwareAddr)
	got := summarize(rep)
	a := firstAddr(t, rep)
	want := &summary{Type: "REPLY", ServerID: true, ClientID: true, BootURL: wantURL, VendorClass: "HTTPClient",
		IAs: []iaSummary{{IAID: got.IAs[0].IAID, T1: 15 * time.Minute, T2: 24 * time.Minute, Addrs: []string{a + " " + life}}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Reply over the wire (-want +got):\n%s", diff)
	}
	if !testPool.contains(a) {
		t.Errorf("address %s outside the pool %s", a, testPool)
	}
	// The server identifier defaults to a DUID-LL of srv.
	srv := n.iface(t, n.srv)
	if sid, ok := rep.Options.ServerID().(*dhcpv6.DUIDLL); !ok || sid.LinkLayerAddr.String() != srv.HardwareAddr.String() {
		t.Errorf("server ID %v, want DUID-LL of %s", rep.Options.ServerID(), srv.HardwareAddr)
	}
	leases := e.s.Leases()
	if len(leases) != 1 || leases[0].MAC != cli.HardwareAddr.String() || leases[0].State != StateBound || leases[0].IP != a {
		t.Errorf("Leases() = %+v, want %s bound to %s", leases, a, cli.HardwareAddr)
	}
}

func (p Pool) contains(s string) bool {
	a, err := netipParse(s)
	return err == nil && inPool(p, a)
}

// TestServeDhclient gets an address and option 59 with ISC dhclient -6,
// an independent client implementation.
func TestServeDhclient(t *testing.T) {
	dhclient := testenv.NeedTool(t, "dhclient")
	n := newNetns(t)
	e := newEnv(t, func(c *Config) { c.Interface = n.srv })
	n.serve(t, e)
	cli := n.iface(t, n.cli)
	dir := t.TempDir()
	conf := filepath.Join(dir, "dhclient6.conf")
	if err := os.WriteFile(conf, []byte(`option dhcp6.bootfile-url code 59 = string;
option dhcp6.client-arch code 61 = unsigned integer 16;
send dhcp6.client-arch 7;
request dhcp6.bootfile-url;
`), 0o644); err != nil {
		t.Fatal(err)
	}
	lf := filepath.Join(dir, "leases")
	// -1: try once; -sf /bin/true: configure nothing; it daemonizes once
	// bound, and the namespace cleanup stops it.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", n.Name, dhclient, "-6", "-1", "-v", "-cf", conf,
		"-lf", lf, "-pf", filepath.Join(dir, "pid"), "-sf", "/bin/true", n.cli)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dhclient -6: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if pid, err := os.ReadFile(filepath.Join(dir, "pid")); err == nil {
			exec.Command("kill", strings.TrimSpace(string(pid))).Run()
		}
	})
	lease, err := os.ReadFile(lf)
	if err != nil {
		t.Fatalf("dhclient wrote no lease: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`iaaddr (\S+) \{`).FindSubmatch(lease)
	if m == nil || !testPool.contains(string(m[1])) {
		t.Fatalf("lease has no pool address:\n%s", lease)
	}
	// It says it is UEFI x64 (arch 7), so it gets the TFTP URL.
	if want := `option dhcp6.bootfile-url "tftp://[fd77::1]/snponly.efi";`; !strings.Contains(string(lease), want) {
		t.Errorf("lease lacks %s:\n%s", want, lease)
	}
	leases := e.s.Leases()
	if len(leases) != 1 || leases[0].IP != string(m[1]) || leases[0].MAC != cli.HardwareAddr.String() || leases[0].State != StateBound {
		t.Errorf("Leases() = %+v, want %s bound to %s", leases, m[1], cli.HardwareAddr)
	}
	t.Logf("dhclient lease:\n%s", lease)
}

func netipParse(s string) (netip.Addr, error) { return netip.ParseAddr(s) }
