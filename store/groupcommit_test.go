package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// countingStore counts the Update transactions that reach a real Store and
// can hold them at a gate.
type countingStore struct {
	Store
	updates  atomic.Int64
	gate     chan struct{} // if not nil, every Update waits until it is closed
	gateOnce sync.Once
}

// gated returns a countingStore whose Updates wait until open is called.
// The gate opens at the end of the test in any case, before the deferred
// GroupCommit.Close of a failed test would wait for it forever.
func gated(t *testing.T) *countingStore {
	cs := &countingStore{Store: openTest(t), gate: make(chan struct{})}
	t.Cleanup(cs.open)
	return cs
}

func (c *countingStore) open() { c.gateOnce.Do(func() { close(c.gate) }) }

func (c *countingStore) Update(fn func(Tx) error) error {
	c.updates.Add(1)
	if c.gate != nil {
		<-c.gate
	}
	return c.Store.Update(fn)
}

func put(key, value string) func(Tx) error {
	return func(tx Tx) error { return tx.Put("b", key, []byte(value)) }
}

// dump returns bucket b as a map.
func dump(t *testing.T, s Store) map[string]string {
	t.Helper()
	m := make(map[string]string)
	err := s.View(func(tx Tx) error {
		return tx.ForEach("b", func(k string, v []byte) error { m[k] = string(v); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGroupCommitOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts GroupCommitOptions
	}{
		{"default", GroupCommitOptions{}},
		{"batch 1", GroupCommitOptions{MaxBatch: 1}},
		{"batch 7", GroupCommitOptions{MaxBatch: 7}},
		{"delay 2ms", GroupCommitOptions{MaxDelay: 2 * time.Millisecond}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t)
			g := NewGroupCommit(s, tc.opts)
			defer g.Close()
			// Writes to the same keys, enqueued in order without waiting:
			// the last one of each key must win.
			var waits []func() error
			want := make(map[string]string)
			for i := range 500 {
				k, v := fmt.Sprintf("k%d", i%13), fmt.Sprintf("v%d", i)
				waits = append(waits, g.Enqueue(put(k, v)))
				want[k] = v
				if i%50 == 0 {
					// A delete in the middle is ordered too.
					waits = append(waits, g.Enqueue(func(tx Tx) error { return tx.Delete("b", k) }))
					delete(want, k)
				}
			}
			for i, w := range waits {
				if err := w(); err != nil {
					t.Fatalf("wait %d: %v", i, err)
				}
			}
			if diff := cmp.Diff(want, dump(t, s)); diff != "" {
				t.Errorf("store after ordered writes (-want +got):\n%s", diff)
			}
		})
	}
}

func TestGroupCommitBatchesConcurrentWriters(t *testing.T) {
	const writers, perWriter = 64, 40
	cs := &countingStore{Store: openTest(t)}
	g := NewGroupCommit(cs, GroupCommitOptions{})
	defer g.Close()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				if err := g.Enqueue(put(fmt.Sprintf("w%d-%d", w, i), "x"))(); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	txs, writes := cs.updates.Load(), int64(writers*perWriter)
	t.Logf("%d writes from %d writers in %d transactions (%.1f writes/tx)", writes, writers, txs, float64(writes)/float64(txs))
	if txs*4 > writes {
		t.Errorf("%d writes took %d transactions, want fewer than %d: no batching", writes, txs, writes/4)
	}
	st := g.Stats()
	if want := (GroupCommitStats{Batches: uint64(txs), Writes: uint64(writes)}); st != want {
		t.Errorf("Stats() = %+v, want %+v", st, want)
	}
	if got := len(dump(t, cs)); got != int(writes) {
		t.Errorf("store holds %d keys, want %d", got, writes)
	}
}

func TestGroupCommitFailureFailsItsBatchOnly(t *testing.T) {
	cs := gated(t)
	g := NewGroupCommit(cs, GroupCommitOptions{MaxBatch: 3})
	defer g.Close()
	defer cs.open()
	boom := errors.New("boom")

	first := g.Enqueue(put("first", "1"))
	// Wait until the committer holds the first batch at the gate, so the
	// next writes queue up behind it: a, b, c form one batch, d the next.
	for cs.updates.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	a := g.Enqueue(put("a", "1"))
	b := g.Enqueue(func(tx Tx) error {
		if err := tx.Put("b", "b", []byte("1")); err != nil {
			return err
		}
		return boom
	})
	c := g.Enqueue(put("c", "1"))
	d := g.Enqueue(put("d", "1"))
	cs.open()

	if err := first(); err != nil {
		t.Errorf("first batch: %v", err)
	}
	for name, w := range map[string]func() error{"a": a, "b": b, "c": c} {
		err := w()
		if !errors.Is(err, boom) {
			t.Errorf("wait(%s) = %v, want the batch's error %v", name, err, boom)
		}
		if err != nil && !strings.Contains(err.Error(), "committing batch of 3 store writes: write 2 of 3") {
			t.Errorf("wait(%s) = %q, want context naming the batch and the write", name, err)
		}
	}
	if err := d(); err != nil {
		t.Errorf("batch after the failed one: %v", err)
	}
	if err := g.Enqueue(put("e", "1"))(); err != nil {
		t.Errorf("write after the failed batch: %v", err)
	}
	want := map[string]string{"first": "1", "d": "1", "e": "1"}
	if diff := cmp.Diff(want, dump(t, cs)); diff != "" {
		t.Errorf("store (-want +got):\n%s", diff)
	}
	if st := g.Stats(); st.Failed != 1 || st.Writes != 6 {
		t.Errorf("Stats() = %+v, want 1 failed batch, 6 writes", st)
	}
}

func TestGroupCommitPanicFailsBatch(t *testing.T) {
	s := openTest(t)
	g := NewGroupCommit(s, GroupCommitOptions{})
	defer g.Close()
	err := g.Enqueue(func(Tx) error { panic("oops") })()
	if err == nil || !strings.Contains(err.Error(), "panic: oops") {
		t.Errorf("wait of a panicking write = %v, want an error naming the panic", err)
	}
	if err := g.Enqueue(put("k", "v"))(); err != nil {
		t.Errorf("write after a panic: %v", err)
	}
}

func TestGroupCommitClose(t *testing.T) {
	s := openTest(t)
	g := NewGroupCommit(s, GroupCommitOptions{MaxBatch: 10, MaxDelay: time.Hour})
	var waits []func() error
	for i := range 95 {
		waits = append(waits, g.Enqueue(put(fmt.Sprint(i), "v")))
	}
	// Close commits what is queued at once, MaxDelay notwithstanding.
	start := time.Now()
	if err := g.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Close took %v", d)
	}
	for i, w := range waits {
		if err := w(); err != nil {
			t.Errorf("wait %d after Close: %v", i, err)
		}
	}
	if got := len(dump(t, s)); got != 95 {
		t.Errorf("store holds %d keys after Close, want 95", got)
	}
	if err := g.Enqueue(put("late", "v"))(); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close: wait() = %v, want ErrClosed", err)
	}
	if err := g.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if st := g.Stats(); st.Batches != 10 {
		t.Errorf("Stats().Batches = %d, want 10 (95 writes, MaxBatch 10)", st.Batches)
	}
}

func TestGroupCommitMaxDelay(t *testing.T) {
	s := openTest(t)
	const delay = 30 * time.Millisecond
	g := NewGroupCommit(s, GroupCommitOptions{MaxBatch: 8, MaxDelay: delay})
	defer g.Close()

	start := time.Now()
	if err := g.Enqueue(put("lone", "v"))(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < delay {
		t.Errorf("a lone write committed after %v, want at least MaxDelay %v", d, delay)
	}

	// A full batch does not wait: with a huge MaxDelay, 8 writes commit at
	// once, in one transaction.
	g2 := NewGroupCommit(s, GroupCommitOptions{MaxBatch: 8, MaxDelay: time.Hour})
	defer g2.Close()
	var waits []func() error
	for i := range 8 {
		waits = append(waits, g2.Enqueue(put(fmt.Sprint(i), "v")))
	}
	done := make(chan error, 1)
	go func() {
		for _, w := range waits {
			if err := w(); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a full batch waited for MaxDelay")
	}
	if st := g2.Stats(); st.Batches != 1 || st.Writes != 8 {
		t.Errorf("Stats() = %+v, want 1 batch of 8", st)
	}
}

func TestGroupCommitNilIsBarrier(t *testing.T) {
	cs := gated(t)
	g := NewGroupCommit(cs, GroupCommitOptions{})
	defer g.Close()
	defer cs.open()
	w1 := g.Enqueue(put("a", "1"))
	barrier := g.Enqueue(nil)
	returned := make(chan error, 1)
	go func() { returned <- barrier() }()
	select {
	case err := <-returned:
		t.Fatalf("barrier returned %v before the write before it was committed", err)
	case <-time.After(50 * time.Millisecond):
	}
	cs.open()
	if err := <-returned; err != nil {
		t.Fatal(err)
	}
	if err := w1(); err != nil {
		t.Fatal(err)
	}
}

// TestGroupCommitDurableAcrossReopen checks that every write whose wait
// returned nil is in the file after Close and a reopen.
func TestGroupCommitDurableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGroupCommit(s, GroupCommitOptions{})
	var (
		mu    sync.Mutex
		acked = make(map[string]string)
		wg    sync.WaitGroup
	)
	for w := range 16 {
		wg.Go(func() {
			for i := range 30 {
				k, v := fmt.Sprintf("w%d-%d", w, i), strconv.Itoa(i)
				if err := g.Enqueue(put(k, v))(); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked[k] = v
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	g.Close()
	s.Close()
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if diff := cmp.Diff(acked, dump(t, s)); diff != "" {
		t.Errorf("reopened store (-acked +got):\n%s", diff)
	}
}

// killChildEnv names the bbolt file TestGroupCommitKillChild writes to.
const killChildEnv = "KILN_GROUPCOMMIT_CHILD_DB"

// TestGroupCommitKillChild is the child of TestGroupCommitSurvivesKill: it
// writes from 16 goroutines and prints each key whose wait returned nil,
// until it is killed.
func TestGroupCommitKillChild(t *testing.T) {
	path := os.Getenv(killChildEnv)
	if path == "" {
		t.Skip("helper process of TestGroupCommitSurvivesKill")
	}
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	g := NewGroupCommit(s, GroupCommitOptions{})
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	deadline := time.Now().Add(20 * time.Second) // in case nobody kills us
	for w := range 16 {
		wg.Go(func() {
			for i := 0; time.Now().Before(deadline); i++ {
				k := fmt.Sprintf("w%d-%d", w, i)
				if err := g.Enqueue(put(k, "v"))(); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintln(out, k)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
}

// TestGroupCommitSurvivesKill kills a writer process with SIGKILL while it
// writes and checks that every write it reported as committed is in the
// file.
func TestGroupCommitSurvivesKill(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kiln.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestGroupCommitKillChild$")
	cmd.Env = append(os.Environ(), killChildEnv+"="+path)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	kill := time.After(20 * time.Second) // backstop; normally the count triggers the kill
	killed := false
	for line := range lines {
		acked = append(acked, line)
		if !killed && len(acked) == 300 {
			cmd.Process.Kill() // SIGKILL, mid-write: writes keep coming until it lands
			killed = true
		}
		select {
		case <-kill:
			if !killed {
				cmd.Process.Kill()
				killed = true
			}
		default:
		}
	}
	werr := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("child was not killed: %v", werr)
	}
	if len(acked) < 300 {
		t.Fatalf("child reported %d committed writes before the kill, want at least 300", len(acked))
	}
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := dump(t, s)
	var lost []string
	for _, k := range acked {
		if _, ok := got[k]; !ok {
			lost = append(lost, k)
		}
	}
	t.Logf("child reported %d committed writes; the file holds %d keys after SIGKILL", len(acked), len(got))
	if len(lost) > 0 {
		t.Errorf("%d writes reported committed are missing after SIGKILL, e.g. %v", len(lost), lost[:min(5, len(lost))])
	}
}

// BenchmarkGroupCommit compares durable writes through a GroupCommit with
// one Update per write, on a real bbolt file, from 1 and 64 concurrent
// writers. Each write is a 100-byte Put; an op is one durable write.
//
//	go test -bench . -run '^$' ./store/
func BenchmarkGroupCommit(b *testing.B) {
	value := []byte(strings.Repeat("x", 100))
	for _, writers := range []int{1, 64} {
		for _, mode := range []struct {
			name  string
			group bool
			delay time.Duration
		}{
			{"update", false, 0},
			{"group", true, 0},
			{"group-delay1ms", true, time.Millisecond},
		} {
			b.Run(fmt.Sprintf("%s/writers=%d", mode.name, writers), func(b *testing.B) {
				s, err := OpenBolt(filepath.Join(b.TempDir(), "kiln.db"))
				if err != nil {
					b.Fatal(err)
				}
				defer s.Close()
				cs := &countingStore{Store: s}
				var g *GroupCommit
				if mode.group {
					g = NewGroupCommit(cs, GroupCommitOptions{MaxDelay: mode.delay})
					defer g.Close()
				}
				write := func(i int64) error {
					fn := func(tx Tx) error { return tx.Put("b", strconv.FormatInt(i, 10), value) }
					if g != nil {
						return g.Enqueue(fn)()
					}
					return cs.Update(fn)
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range writers {
					wg.Go(func() {
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							if err := write(i); err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
				b.ReportMetric(float64(b.N)/float64(cs.updates.Load()), "writes/tx")
			})
		}
	}
}
