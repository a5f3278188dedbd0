//go:build linux

package dhcp

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kiln-dev/kiln/internal/testenv"
	"github.com/kiln-dev/kiln/store"
)

// The crash loop: a server child process on a real bbolt file, SIGKILLed at
// random moments and restarted on the same file while 200 clients lease,
// renew and release from a pool of 100 addresses. Every ACK the clients
// receive is recorded. After each kill every ACKed lease still valid must be
// in the file; no client may be refused its valid lease after a restart;
// and at the end no address may have been ACKed to two MACs for overlapping
// lifetimes.

const (
	// crashChildEnv carries the JSON crashChild to the child process; it is
	// unset in the parent.
	crashChildEnv = "KILN_CRASH_CHILD"
	// crashBreakEnv set to "1" breaks durability on purpose: the child
	// acknowledges lease writes before they reach the file (lossyStore),
	// and TestCrashLoopNoDoubleLease should then fail.
	crashBreakEnv = "KILN_CRASH_BREAK_DURABILITY"
	// crashLogEnv names a file that receives the server children's Info
	// logs, for debugging a failure.
	crashLogEnv = "KILN_CRASH_LOG"
)

// Crash loop parameters. The load runs for crashMinLoad and then until the
// run has exercised enough (crashEnough), at most crashMaxLoad or
// crashMaxKills: a busy machine gets more time rather than a vacuous pass.
const (
	crashClients   = 200
	crashMinLoad   = 8 * time.Second
	crashMaxLoad   = 25 * time.Second
	crashMaxKills  = 150
	crashLeaseTime = 3 * time.Second
	crashOfferTime = time.Second
	crashMargin    = 300 * time.Millisecond // a lease counts as valid until its end minus this
	crashRetry     = 250 * time.Millisecond // client retransmission interval
)

// crashChild is what the parent tells the child server.
type crashChild struct {
	DB, Iface, ServerIP, Prefix, Start, End string
	LeaseTime, OfferTime                    time.Duration
	Lossy                                   bool
	LogLevel                                slog.Level
}

// newCrashServer is the only place the crash test builds a Server.
func newCrashServer(c crashChild, st store.Store, log *slog.Logger) (*Server, error) {
	return New(Config{
		Interface: c.Iface,
		ServerIP:  net.ParseIP(c.ServerIP),
		Subnets: []Subnet{{
			Prefix:    netip.MustParsePrefix(c.Prefix),
			Pools:     []Pool{{Start: netip.MustParseAddr(c.Start), End: netip.MustParseAddr(c.End)}},
			LeaseTime: c.LeaseTime,
			OfferTime: c.OfferTime,
		}},
		Boot: Boot{ScriptURL: func(mac net.HardwareAddr) string {
			return "http://" + c.ServerIP + "/boot/" + mac.String() + ".ipxe"
		}},
		Leases: st,
		Log:    log,
	})
}

// TestCrashLoopChild is the server process of TestCrashLoopNoDoubleLease.
// It prints "ready" once it listens and serves until it is killed, its
// stdin closes (the parent is gone) or a backstop timer fires.
func TestCrashLoopChild(t *testing.T) {
	env := os.Getenv(crashChildEnv)
	if env == "" {
		t.Skip("helper process of TestCrashLoopNoDoubleLease")
	}
	var c crashChild
	if err := json.Unmarshal([]byte(env), &c); err != nil {
		t.Fatalf("decoding %s: %v", crashChildEnv, err)
	}
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(3)
	}()
	time.AfterFunc(2*time.Minute, func() { os.Exit(4) })

	b, err := store.OpenBolt(c.DB)
	if err != nil {
		t.Fatal(err)
	}
	var st store.Store = b
	if c.Lossy {
		st = newLossyStore(b, 200*time.Millisecond)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: c.LogLevel}))
	s, err := newCrashServer(c, st, log)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := ListenInterface(c.Iface)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("ready")
	if err := s.Serve(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
}

// lossyStore breaks durability on purpose: Update returns nil at once and
// its write reaches the file in a background transaction up to `every`
// later, as a write-back cache would.
type lossyStore struct {
	store.Store
	mu      sync.Mutex
	pending []func(store.Tx) error
}

func newLossyStore(s store.Store, every time.Duration) *lossyStore {
	l := &lossyStore{Store: s}
	go func() {
		for range time.Tick(every) {
			l.mu.Lock()
			fns := l.pending
			l.pending = nil
			l.mu.Unlock()
			l.Store.Update(func(tx store.Tx) error {
				for _, fn := range fns {
					fn(tx) // a failed write is simply lost
				}
				return nil
			})
		}
	}()
	return l
}

func (l *lossyStore) Update(fn func(store.Tx) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending = append(l.pending, fn)
	return nil
}

// TestCrashLoopNoDoubleLease kills the server with SIGKILL at random moments
// under load and restarts it on the same bbolt file. After every kill each
// ACKed lease still valid must be in the file; a client asking again for its
// valid lease after a restart must get it; and no address may be ACKed to
// two clients at once. With KILN_CRASH_BREAK_DURABILITY=1 the server
// acknowledges writes before they reach the file, and this test fails.
func TestCrashLoopNoDoubleLease(t *testing.T) {
	testenv.NeedRoot(t)
	ipCmd := testenv.NeedTool(t, "ip")
	srvNS, cliNS := newCrashNetns(t)
	cfg := crashChild{
		DB: filepath.Join(t.TempDir(), "kiln.db"), Iface: "ksrv", ServerIP: "10.79.0.1",
		Prefix: "10.79.0.0/24", Start: "10.79.0.10", End: "10.79.0.109", // 100 addresses, 200 clients
		LeaseTime: crashLeaseTime, OfferTime: crashOfferTime, Lossy: os.Getenv(crashBreakEnv) == "1",
		LogLevel: slog.LevelWarn,
	}
	stderr := &testenv.SyncBuffer{}
	var childLog io.Writer = stderr
	if name := os.Getenv(crashLogEnv); name != "" {
		f, err := os.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		childLog, cfg.LogLevel = f, slog.LevelInfo
	}
	env, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sup := &crashSupervisor{ipCmd: ipCmd, ns: srvNS, env: string(env), stdin: stdinR, stderr: childLog}
	t.Cleanup(func() {
		sup.kill()
		stdinW.Close()
		stdinR.Close()
		if t.Failed() {
			t.Logf("server children's stderr (last 4 KiB):\n%s", tail(stderr.String(), 4096))
		}
	})
	cn := &crashNet{conn: crashClientConn(t, cliNS)}
	go cn.read()
	if err := sup.start(); err != nil {
		t.Fatal(err)
	}

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, lossy store %v", seed, cfg.Lossy)
	start := time.Now()
	load, endLoad := context.WithCancel(t.Context())
	defer endLoad()
	final := make(chan struct{})
	log := &crashLog{owners: make(map[netip.Addr]map[string]bool)}
	var wg sync.WaitGroup
	for i := range crashClients {
		c := &crashClient{
			mac: net.HardwareAddr{0x52, 0x54, 0x00, 0x79, byte(i >> 8), byte(i)},
			net: cn, log: log, sup: sup, rng: rand.New(rand.NewPCG(seed, uint64(i))),
		}
		wg.Go(func() { c.run(load, final) })
	}
	// What the run must have exercised for its checks to mean something.
	type target struct {
		what      string
		got, want int
	}
	targets := func() []target {
		log.mu.Lock()
		defer log.mu.Unlock()
		sup.mu.Lock()
		defer sup.mu.Unlock()
		return []target{
			{"kills", len(sup.kills), 15},
			{"ACKs", len(log.acks), 400},
			{"renewals ACKed across a kill", log.renewedAcrossKill, 50},
			{"addresses ACKed to another MAC later", log.reused, 20},
			{"valid ACKed leases checked in the file after a kill", log.fileChecked, 200},
		}
	}
	done := func() bool {
		elapsed := time.Since(start)
		if elapsed < crashMinLoad {
			return false
		}
		sup.mu.Lock()
		kills := len(sup.kills)
		sup.mu.Unlock()
		if elapsed >= crashMaxLoad || kills >= crashMaxKills {
			return true
		}
		for _, tg := range targets() {
			if tg.got < tg.want {
				return false
			}
		}
		return true
	}
	checkFile := func(killed time.Time) error { return log.checkFile(cfg.DB, killed) }
	loopErr := sup.loop(rand.New(rand.NewPCG(seed, 1<<32)), checkFile, done)
	endLoad()
	close(final) // a child is running and ready: the clients check their leases
	wg.Wait()
	sup.kill()
	if loopErr == nil {
		sup.mu.Lock()
		lastKill := sup.kills[len(sup.kills)-1]
		sup.mu.Unlock()
		loopErr = checkFile(lastKill)
	}
	if loopErr != nil {
		t.Fatal(loopErr)
	}
	elapsed := time.Since(start)

	tgs := targets()
	log.mu.Lock()
	defer log.mu.Unlock()
	overlaps := doubleLeases(log.acks)
	sup.mu.Lock()
	starts := sup.starts
	sup.mu.Unlock()
	t.Logf("%v: %d server starts, %d kills; %d clients, %d ACKs, %d addresses ACKed to several MACs; "+
		"%d renewals ACKed (%d across a kill), %d unanswered; %d NAKs in SELECTING, %d DISCOVERs without offer; "+
		"%d valid ACKed leases found in the file after kills; after the last restart %d leases re-ACKed, %d unanswered",
		elapsed.Round(time.Millisecond), starts, tgs[0].got, crashClients, len(log.acks), log.reused,
		log.renewals, log.renewedAcrossKill, log.unanswered, log.naks, log.noOffer,
		log.fileChecked, log.verified, log.unverified)
	if n := len(overlaps) + len(log.problems); n > 0 {
		t.Errorf("%d double leases; %d times a valid ACKed lease was missing from the file after a kill; %d NAKs for a valid lease; %d other problems",
			len(overlaps), log.fileMissing, log.nakValid, len(log.problems)-log.fileMissing-log.nakValid)
	}
	for i, o := range overlaps {
		if i == 10 {
			t.Errorf("... %d more double leases", len(overlaps)-10)
			break
		}
		t.Errorf("double lease: %s", o)
	}
	if len(overlaps) > 0 {
		var ks []string
		for _, k := range sup.kills {
			ks = append(ks, k.Format("05.000"))
		}
		t.Logf("kills at (s): %s", strings.Join(ks, " "))
	}
	for i, p := range log.problems {
		if i == 10 {
			t.Errorf("... %d more problems", len(log.problems)-10)
			break
		}
		t.Error(p)
	}
	for _, tg := range tgs {
		if tg.got < tg.want {
			t.Errorf("only %d %s in %v, want at least %d: the crash loop did not exercise the server",
				tg.got, tg.what, elapsed.Round(time.Millisecond), tg.want)
		}
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}
