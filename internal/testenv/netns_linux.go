//go:build linux

package testenv

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Netns is a network namespace that a test created and that is deleted
// when the test ends. Tests create everything they need inside it, and
// nothing outside.
type Netns struct {
	// Name is the namespace's name in /run/netns.
	Name string
	ip   string // path of iproute2's ip
}

// NewNetns creates the network namespace name, brings its loopback up and
// deletes the namespace when the test ends. Name it kiln-<what>-<pid>...
// (os.Getpid) so that concurrent test binaries never share one. It needs
// root and iproute2's ip.
func NewNetns(t testing.TB, name string) *Netns {
	t.Helper()
	NeedRoot(t)
	n := &Netns{Name: name, ip: NeedTool(t, "ip")}
	if err := n.run("netns", "add", name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.run("netns", "del", name); err != nil {
			t.Error(err)
		}
	})
	n.IP(t, "link", "set", "lo", "up")
	return n
}

func (n *Netns) run(args ...string) error {
	out, err := exec.Command(n.ip, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// IP runs `ip -n Name args...` and fails the test on error.
func (n *Netns) IP(t testing.TB, args ...string) {
	t.Helper()
	if err := n.run(append([]string{"-n", n.Name}, args...)...); err != nil {
		t.Fatal(err)
	}
}

// Do runs fn in the namespace (see InNetns) and fails the test on error.
func (n *Netns) Do(t testing.TB, fn func() error) {
	t.Helper()
	if err := InNetns(n.Name, fn); err != nil {
		t.Fatal(err)
	}
}

// InNetns runs fn on a thread switched into the network namespace name,
// then switches the thread back. Sockets fn opens stay in the namespace.
// fn may end its goroutine (t.Fatal): the thread still switches back.
func InNetns(name string, fn func() error) (err error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	target, err := os.Open("/run/netns/" + name)
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("setns %s: %w", name, err)
	}
	defer func() {
		// A thread that cannot switch back stays locked, and the runtime
		// ends it with this goroutine.
		if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
			err = errors.Join(err, fmt.Errorf("setns back from %s: %w", name, serr))
			return
		}
		runtime.UnlockOSThread()
	}()
	return fn()
}
