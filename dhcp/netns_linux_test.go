//go:build linux

package dhcp

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// newNetns creates a network namespace named kiln-dhcp-<pid> holding a veth
// pair, srv (10.77.0.1/24) and cli, and deletes it when the test ends.
// Nothing is created outside the namespace.
func newNetns(t *testing.T) (ns, srv, cli string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("skipping: creating a network namespace needs root")
	}
	ipCmd, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("skipping: needs iproute2's ip command")
	}
	ns, srv, cli = fmt.Sprintf("kiln-dhcp-%d", os.Getpid()), "kiln-srv", "kiln-cli"
	ip := func(args ...string) error {
		out, err := exec.Command(ipCmd, args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := ip("netns", "add", ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ip("netns", "del", ns); err != nil {
			t.Error(err)
		}
	})
	for _, args := range [][]string{
		{"link", "add", srv, "type", "veth", "peer", "name", cli},
		{"addr", "add", "10.77.0.1/24", "dev", srv},
		{"link", "set", "lo", "up"},
		{"link", "set", srv, "up"},
		{"link", "set", cli, "up"},
	} {
		if err := ip(append([]string{"-n", ns}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	return ns, srv, cli
}

// inNetns runs fn on a thread switched into namespace ns. Sockets fn opens
// stay in ns after the thread switches back.
func inNetns(t *testing.T, ns string, fn func()) {
	t.Helper()
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("setns %s: %v", ns, err)
	}
	defer func() {
		// If the thread cannot switch back it stays locked, and the
		// runtime ends it with this goroutine.
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("setns back: %v", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	fn()
}

func TestServeInNetns(t *testing.T) {
	ns, srv, cli := newNetns(t)
	e := newEnv(t, func(c *Config) { c.Interface = srv })
	var (
		conn   net.PacketConn
		client *nclient4.Client
	)
	inNetns(t, ns, func() {
		var err error
		if conn, err = ListenInterface(srv); err != nil {
			t.Fatalf("ListenInterface(%q): %v", srv, err)
		}
		if second, err := ListenInterface(srv); err == nil {
			second.Close()
			t.Errorf("second ListenInterface(%q) succeeded, want address in use", srv)
		}
		if _, err := ListenInterface("kiln-none"); err == nil {
			t.Error("ListenInterface of a missing interface succeeded")
		}
		client, err = nclient4.New(cli, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		if err != nil {
			conn.Close()
			t.Fatalf("nclient4.New(%q): %v", cli, err)
		}
	})
	t.Cleanup(func() { client.Close() })

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v", err)
		}
	})

	reqCtx, reqCancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer reqCancel()
	lease, err := client.Request(reqCtx, pxeBIOS...)
	if err != nil {
		t.Fatalf("DORA over %s: %v", cli, err)
	}
	got := summarize(lease.ACK)
	want := plainReply("ACK", "10.77.0.100")
	want.SIAddr, want.File, want.TFTPServer, want.BootFile = "10.77.0.1", "undionly.kpxe", "10.77.0.1", "undionly.kpxe"
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ACK over the wire (-want +got):\n%s", diff)
	}
	wantLeases := []Lease{{MAC: client.InterfaceAddr().String(), IP: "10.77.0.100",
		Expires: testEpoch.Add(DefaultLeaseTime), State: StateBound}}
	if diff := cmp.Diff(wantLeases, e.s.Leases()); diff != "" {
		t.Errorf("Leases() (-want +got):\n%s", diff)
	}
	if lease.Offer.MessageType() != dhcpv4.MessageTypeOffer {
		t.Errorf("offer type %s", lease.Offer.MessageType())
	}
}
