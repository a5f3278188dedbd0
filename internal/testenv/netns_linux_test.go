//go:build linux

package testenv

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
)

// TestNetns creates a namespace, checks that Do runs inside it and switches
// back, and that the namespace is gone after the test.
func TestNetns(t *testing.T) {
	NeedRoot(t)
	ipCmd := NeedTool(t, "ip")
	name := fmt.Sprintf("kiln-testenv-%d", os.Getpid())
	t.Run("create", func(t *testing.T) {
		n := NewNetns(t, name)
		n.IP(t, "link", "add", "kte0", "type", "veth", "peer", "name", "kte1")
		self, err := os.Readlink("/proc/thread-self/ns/net")
		if err != nil {
			t.Fatal(err)
		}
		n.Do(t, func() error {
			in, err := os.Readlink("/proc/thread-self/ns/net")
			if err != nil {
				return err
			}
			if in == self {
				t.Errorf("Do ran in the test's own namespace %s", in)
			}
			if _, err := net.InterfaceByName("kte0"); err != nil {
				t.Errorf("kte0 not visible in the namespace: %v", err)
			}
			lo, err := net.InterfaceByName("lo")
			if err != nil || lo.Flags&net.FlagUp == 0 {
				t.Errorf("lo in the namespace: %+v, %v; want up", lo, err)
			}
			return nil
		})
		if _, err := net.InterfaceByName("kte0"); err == nil {
			t.Error("kte0 visible outside the namespace")
		}
		if err := InNetns(name+"-none", func() error { return nil }); err == nil {
			t.Error("InNetns of a missing namespace succeeded")
		}
	})
	if err := exec.Command(ipCmd, "netns", "pids", name).Run(); err == nil {
		t.Errorf("namespace %s still exists after its test", name)
	}
}
