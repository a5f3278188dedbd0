//go:build linux

package dhcp

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/kiln-dev/kiln/internal/testenv"
	"golang.org/x/sys/unix"
)

// The crash loop's processes and wires: namespaces, the server child
// supervisor, and the clients' socket.

// crashSeq numbers the namespaces of one test process.
var crashSeq atomic.Int32

// newCrashNetns creates two namespaces, kiln-crash-<pid>-<n> for the server
// (veth ksrv, 10.79.0.1/24) and kiln-crash-<pid>-<n>-cli for the clients
// (its peer kcli, 10.79.0.2/24), and deletes them when the test ends.
// Clients sit in their own namespace so that their source address is not
// local to the server's stack, which would drop it as martian.
func newCrashNetns(t *testing.T) (srvNS, cliNS string) {
	t.Helper()
	srv := testenv.NewNetns(t, fmt.Sprintf("kiln-crash-%d-%d", os.Getpid(), crashSeq.Add(1)))
	cli := testenv.NewNetns(t, srv.Name+"-cli")
	srv.IP(t, "link", "add", "ksrv", "type", "veth", "peer", "name", "kcli", "netns", cli.Name)
	srv.IP(t, "addr", "add", "10.79.0.1/24", "dev", "ksrv")
	cli.IP(t, "addr", "add", "10.79.0.2/24", "dev", "kcli")
	srv.IP(t, "link", "set", "ksrv", "up")
	cli.IP(t, "link", "set", "kcli", "up")
	return srv.Name, cli.Name
}

// crashSupervisor starts, kills and restarts the server child.
type crashSupervisor struct {
	ipCmd  string
	ns     string
	env    string
	stdin  *os.File // read end, shared by every child; the parent keeps the write end
	stderr io.Writer

	mu     sync.Mutex
	cur    *exec.Cmd     // the running child, or nil
	exited chan struct{} // closed when cur has exited and been reaped
	starts int
	kills  []time.Time
}

// start starts a child and waits until it serves.
func (s *crashSupervisor) start() error {
	var out testenv.SyncBuffer
	cmd := exec.Command(s.ipCmd, "netns", "exec", s.ns, os.Args[0], "-test.run=^TestCrashLoopChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+s.env)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = s.stdin, &out, s.stderr
	// ip netns exec execs the test binary, so the PID is the server's.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting server child: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	s.mu.Lock()
	s.cur, s.exited = cmd, exited
	s.starts++
	s.mu.Unlock()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(out.String(), "ready\n") {
		select {
		case <-exited:
			return fmt.Errorf("server child exited before it was ready: %v\n%s", cmd.ProcessState, out.String())
		case <-deadline:
			return fmt.Errorf("server child not ready after 20s:\n%s", out.String())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// kill SIGKILLs the current child, only it, by PID, and waits for it.
func (s *crashSupervisor) kill() {
	s.mu.Lock()
	cmd, exited := s.cur, s.exited
	s.cur, s.exited = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-exited
	s.mu.Lock()
	s.kills = append(s.kills, time.Now())
	s.mu.Unlock()
}

// killedBetween reports whether a child was killed after a and before b.
func (s *crashSupervisor) killedBetween(a, b time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range s.kills {
		if k.After(a) && k.Before(b) {
			return true
		}
	}
	return false
}

// loop kills the running child 50-400 ms after it became ready, calls
// afterKill while no child runs, and starts another, until done says the
// run has exercised enough. It leaves a child running.
func (s *crashSupervisor) loop(rng *rand.Rand, afterKill func(time.Time) error, done func() bool) error {
	for !done() {
		time.Sleep(time.Duration(50+rng.IntN(351)) * time.Millisecond)
		s.kill()
		s.mu.Lock()
		killed := s.kills[len(s.kills)-1]
		s.mu.Unlock()
		if err := afterKill(killed); err != nil {
			return err
		}
		if err := s.start(); err != nil {
			return err
		}
	}
	return nil
}

// crashClientConn opens the clients' socket in namespace ns: UDP 0.0.0.0:68
// on kcli, allowed to broadcast, with a big receive buffer.
func crashClientConn(t *testing.T, ns string) net.PacketConn {
	t.Helper()
	var conn net.PacketConn
	inNetns(t, ns, func() {
		lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			c.Control(func(fd uintptr) {
				if serr = unix.BindToDevice(int(fd), "kcli"); serr != nil {
					return
				}
				if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
					return
				}
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20)
			})
			return serr
		}}
		var err error
		if conn, err = lc.ListenPacket(context.Background(), "udp4", "0.0.0.0:68"); err != nil {
			t.Fatalf("client socket: %v", err)
		}
	})
	t.Cleanup(func() { conn.Close() })
	return conn
}

// crashNet sends client requests and routes replies to their waiter by xid.
type crashNet struct {
	conn    net.PacketConn
	xid     atomic.Uint32
	waiters sync.Map // dhcpv4.TransactionID -> chan *dhcpv4.DHCPv4
}

func (n *crashNet) read() {
	buf := make([]byte, 1500)
	for {
		k, _, err := n.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcpv4.FromBytes(buf[:k])
		if err != nil || m.OpCode != dhcpv4.OpcodeBootReply {
			continue
		}
		if ch, ok := n.waiters.Load(m.TransactionID); ok {
			select {
			case ch.(chan *dhcpv4.DHCPv4) <- m:
			default:
			}
		}
	}
}

// exchange sends req every crashRetry until a reply of one of the types in
// want arrives or until the deadline. It returns the reply (nil on
// timeout), when req was first sent, and when the reply arrived.
func (n *crashNet) exchange(req *dhcpv4.DHCPv4, dst *net.UDPAddr, deadline time.Time, want ...dhcpv4.MessageType) (*dhcpv4.DHCPv4, time.Time, time.Time) {
	ch := make(chan *dhcpv4.DHCPv4, 4)
	n.waiters.Store(req.TransactionID, ch)
	defer n.waiters.Delete(req.TransactionID)
	first := time.Now()
	pkt := req.ToBytes()
	for time.Now().Before(deadline) {
		n.conn.WriteTo(pkt, dst)
		timer := time.NewTimer(min(crashRetry, time.Until(deadline)))
	wait:
		for {
			select {
			case m := <-ch:
				if slices.Contains(want, m.MessageType()) {
					timer.Stop()
					return m, first, time.Now()
				}
			case <-timer.C:
				break wait
			}
		}
	}
	return nil, first, time.Time{}
}

func (n *crashNet) newMsg(mac net.HardwareAddr, typ dhcpv4.MessageType, opts ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	x := n.xid.Add(1)
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(typ), dhcpv4.WithBroadcast(true),
		dhcpv4.WithTransactionID(dhcpv4.TransactionID{byte(x >> 24), byte(x >> 16), byte(x >> 8), byte(x)}),
	}, opts...)...)
	if err != nil {
		panic(err) // only modifiers that cannot fail
	}
	return m
}

var (
	crashBcast  = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	crashServer = &net.UDPAddr{IP: net.IPv4(10, 79, 0, 1), Port: dhcpv4.ServerPort}
)
